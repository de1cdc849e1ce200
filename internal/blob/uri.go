package blob

import (
	"fmt"
	"strings"
)

// URI schemes a Store understands.
const (
	SchemeS3   = "s3"
	SchemeFile = "file"
)

// ParseURI splits an object URI. For s3://bucket/key it returns ("s3", bucket,
// key); key may be empty (the whole bucket, as a List prefix). For file:///path
// it returns ("file", "", "/path"); a path without the leading slash
// (file://out/x) is relative to the working directory. Keys are taken as
// written, without percent-decoding, as the AWS CLI does.
func ParseURI(uri string) (scheme, bucket, key string, err error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return "", "", "", fmt.Errorf("parse URI %q: no scheme, want s3://bucket/key or file:///path", uri)
	}
	switch scheme {
	case SchemeS3:
		bucket, key, _ = strings.Cut(rest, "/")
		if bucket == "" {
			return "", "", "", fmt.Errorf("parse URI %q: no bucket", uri)
		}
		return scheme, bucket, key, nil
	case SchemeFile:
		if rest == "" {
			return "", "", "", fmt.Errorf("parse URI %q: no path", uri)
		}
		return scheme, "", rest, nil
	default:
		return "", "", "", fmt.Errorf("parse URI %q: unknown scheme %q, want s3:// or file://", uri, scheme)
	}
}

// Join appends path elements to a URI prefix with exactly one slash between
// them, so Join("s3://b/", "runs", "x.json") is "s3://b/runs/x.json" and
// Join("file:///", "tmp") is "file:///tmp". Unlike path.Join it does not
// clean "." or "..", which are legal characters in S3 keys. A trailing slash on
// the last element is kept, so Join(run, "chunks/") is a List prefix for a
// folder. With no elements the prefix is returned unchanged.
func Join(prefix string, elem ...string) string {
	if len(elem) == 0 {
		return prefix
	}
	head := prefix
	rest := prefix
	if scheme, after, ok := strings.Cut(prefix, "://"); ok {
		head, rest = scheme+"://", after
	} else {
		head = ""
	}
	var b strings.Builder
	b.WriteString(head)
	b.WriteString(strings.TrimRight(rest, "/"))
	trailing := false
	for _, e := range elem {
		t := strings.Trim(e, "/")
		if t == "" {
			continue
		}
		b.WriteByte('/')
		b.WriteString(t)
		trailing = strings.HasSuffix(e, "/")
	}
	if trailing {
		b.WriteByte('/')
	}
	return b.String()
}
