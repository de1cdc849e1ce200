package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
)

func TestTemporalConfigComesFromTheCLIProfileAndEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "temporal.toml")
	err := os.WriteFile(file, []byte(`
[profile.default]
address = "temporal.internal:7233"
namespace = "scoring"

[profile.cloud]
address = "scoring.a1b2c.tmprl.cloud:7233"
namespace = "scoring.a1b2c"
api_key = "secret-key"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", file)

	c, err := configFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "temporal.internal:7233" || c.Temporal.Namespace != "scoring" {
		t.Errorf("default profile: %s/%s", c.Temporal.HostPort, c.Temporal.Namespace)
	}

	t.Setenv("TEMPORAL_PROFILE", "cloud")
	if c, err = configFromEnv(os.Getenv); err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "scoring.a1b2c.tmprl.cloud:7233" || c.Temporal.Credentials == nil || c.Temporal.ConnectionOptions.TLS == nil {
		t.Errorf("cloud profile: %s, credentials %v, TLS %v: an API key brings credentials and TLS",
			c.Temporal.HostPort, c.Temporal.Credentials, c.Temporal.ConnectionOptions.TLS)
	}

	t.Setenv("TEMPORAL_ADDRESS", "127.0.0.1:7999")
	if c, err = configFromEnv(os.Getenv); err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "127.0.0.1:7999" {
		t.Errorf("TEMPORAL_ADDRESS does not override the profile: %s", c.Temporal.HostPort)
	}
}

func TestTemporalConfigDefaultsToTheLocalServer(t *testing.T) {
	for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "none.toml"))
	c, err := configFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "localhost:7233" || c.Temporal.Namespace != "default" || c.Bucket != "vbatch" {
		t.Errorf("defaults: %s/%s bucket %s", c.Temporal.HostPort, c.Temporal.Namespace, c.Bucket)
	}
}

// The local stack replaces the environment's S3 endpoint and keys, but not how
// writers upload: the bench's plain copy must write as the workers started
// beside it, which read VBATCH_S3_BACKGROUND_PARTS themselves.
func TestLocalStackKeepsTheEnvironmentsWriterTuning(t *testing.T) {
	vars := map[string]string{"VBATCH_S3_BACKGROUND_PARTS": "1", "AWS_ENDPOINT_URL_S3": "https://s3.example"}
	env, err := blob.ConfigFromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	stack := &devstack.Stack{S3Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", AccessKey: "key", SecretKey: "secret"}
	got := localBlob(stack, env)
	if got.BackgroundParts != 1 {
		t.Errorf("background parts %d, want the environment's 1", got.BackgroundParts)
	}
	if got.EndpointURL != stack.S3Endpoint || got.AccessKey != "key" || !got.PathStyle {
		t.Errorf("S3 settings %+v, want the local stack's", got)
	}
}
