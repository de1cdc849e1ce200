package blob_test

import (
	"strings"
	"testing"

	"github.com/vbatch/vbatch/internal/blob"
)

func TestParseURI(t *testing.T) {
	cases := []struct {
		uri                 string
		scheme, bucket, key string
		errHas              string
	}{
		{uri: "s3://b/runs/x.json", scheme: "s3", bucket: "b", key: "runs/x.json"},
		{uri: "s3://b", scheme: "s3", bucket: "b", key: ""},
		{uri: "s3://b/", scheme: "s3", bucket: "b", key: ""},
		{uri: "s3://b/a//b", scheme: "s3", bucket: "b", key: "a//b"},
		{uri: "file:///tmp/x.jsonl", scheme: "file", key: "/tmp/x.jsonl"},
		{uri: "file://out/x.jsonl", scheme: "file", key: "out/x.jsonl"},
		{uri: "s3:///key", errHas: "no bucket"},
		{uri: "file://", errHas: "no path"},
		{uri: "gs://b/k", errHas: `unknown scheme "gs"`},
		{uri: "/tmp/x.jsonl", errHas: "no scheme"},
	}
	for _, c := range cases {
		scheme, bucket, key, err := blob.ParseURI(c.uri)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), c.uri) {
				t.Errorf("ParseURI(%q) err = %v, want one containing %q and the URI", c.uri, err, c.errHas)
			}
			continue
		}
		if err != nil || scheme != c.scheme || bucket != c.bucket || key != c.key {
			t.Errorf("ParseURI(%q) = %q, %q, %q, %v; want %q, %q, %q", c.uri, scheme, bucket, key, err, c.scheme, c.bucket, c.key)
		}
	}
}

func TestJoin(t *testing.T) {
	cases := []struct {
		prefix string
		elem   []string
		want   string
	}{
		{"s3://b/", []string{"runs", "x.json"}, "s3://b/runs/x.json"},
		{"s3://b", []string{"runs/", "/x.json"}, "s3://b/runs/x.json"},
		{"s3://b/out/", []string{"r1", "chunks/"}, "s3://b/out/r1/chunks/"},
		{"s3://b/out", []string{"", "a..b"}, "s3://b/out/a..b"},
		{"file:///", []string{"tmp", "x"}, "file:///tmp/x"},
		{"file:///tmp/out/", []string{"manifest.json"}, "file:///tmp/out/manifest.json"},
		{"file://rel", []string{"x"}, "file://rel/x"},
		{"s3://b/keep/", nil, "s3://b/keep/"},
	}
	for _, c := range cases {
		if got := blob.Join(c.prefix, c.elem...); got != c.want {
			t.Errorf("Join(%q, %q) = %q, want %q", c.prefix, c.elem, got, c.want)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want blob.Config
	}{
		{"aws defaults", map[string]string{}, blob.Config{}},
		{"region fallback", map[string]string{"AWS_DEFAULT_REGION": "eu-west-1"}, blob.Config{Region: "eu-west-1"}},
		{"region wins", map[string]string{"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}, blob.Config{Region: "us-west-2"}},
		{"local endpoint means path style", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:7070"},
			blob.Config{EndpointURL: "http://127.0.0.1:7070", PathStyle: true}},
		{"S3 endpoint wins", map[string]string{"AWS_ENDPOINT_URL_S3": "http://s3.local", "AWS_ENDPOINT_URL": "http://other"},
			blob.Config{EndpointURL: "http://s3.local", PathStyle: true}},
		{"path style off", map[string]string{"AWS_ENDPOINT_URL_S3": "http://minio:9000", "VBATCH_S3_PATH_STYLE": "false"},
			blob.Config{EndpointURL: "http://minio:9000"}},
		{"path style on without endpoint", map[string]string{"VBATCH_S3_PATH_STYLE": "true"}, blob.Config{PathStyle: true}},
		{"a part uploading in the background", map[string]string{"VBATCH_S3_BACKGROUND_PARTS": "1"}, blob.Config{BackgroundParts: 1}},
	}
	for _, c := range cases {
		got, err := blob.ConfigFromEnv(func(k string) string { return c.env[k] })
		if err != nil || got != c.want {
			t.Errorf("%s: ConfigFromEnv = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{"-1", "two"} {
		_, err := blob.ConfigFromEnv(func(k string) string {
			return map[string]string{"VBATCH_S3_BACKGROUND_PARTS": bad}[k]
		})
		if err == nil || !strings.Contains(err.Error(), "VBATCH_S3_BACKGROUND_PARTS") {
			t.Errorf("VBATCH_S3_BACKGROUND_PARTS=%s: err = %v, want one naming the variable", bad, err)
		}
	}
}
