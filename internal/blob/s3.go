package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Network limits. Each S3 call is retried by the SDK's standard retryer; these
// keep a dead or silent server from holding a caller for long, while a slow
// but progressing transfer is never cut off.
const (
	maxAttempts = 5
	maxBackoff  = 5 * time.Second
	dialTimeout = 10 * time.Second
	readTimeout = 2 * time.Minute
	// abortTimeout bounds the AbortMultipartUpload sent after a failed or
	// aborted write; it runs on a fresh context so a cancelled caller still
	// leaves no half-finished upload behind.
	abortTimeout = 30 * time.Second
	// idleConnsPerHost is how many connections to the S3 endpoint stay open
	// between requests. It should cover the most requests a process sends at
	// once (Merge: up to 16 chunks read at once, each fetching up to 4 parts),
	// or each burst closes the connections above it and dials new ones:
	// against S3 a TLS handshake each, and here a pair of goroutines each. The
	// SDK's default is 10.
	idleConnsPerHost = 64
)

// NewS3Client builds the S3 client that a Store from New uses, for callers
// that need the S3 API itself (creating buckets, copying for benchmarks).
func NewS3Client(ctx context.Context, cfg Config) (*s3.Client, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.MaxBackoff = maxBackoff
				// The client-side retry quota would turn a 20-second S3 outage
				// into minutes of "retry quota exceeded" errors after the
				// server is back; Temporal's retries already pace us.
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithHTTPClient(awshttp.NewBuildableClient().
			WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
			WithTransportOptions(func(t *http.Transport) { t.MaxIdleConnsPerHost = idleConnsPerHost }).
			WithReadTimeout(readTimeout)),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
		}
		o.UsePathStyle = cfg.PathStyle
		// Multipart objects carry a checksum of part checksums that the SDK
		// cannot check on a plain GET; it would warn on stderr at every read
		// of every large object. Single-part objects are still verified.
		o.DisableLogOutputChecksumValidationSkipped = true
	}), nil
}

// s3Store serves s3:// URIs.
type s3Store struct {
	client *s3.Client
	cfg    Config
}

func newS3Store(ctx context.Context, cfg Config) (*s3Store, error) {
	cfg = cfg.withDefaults()
	client, err := NewS3Client(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &s3Store{client: client, cfg: cfg}, nil
}

func s3Location(uri string) (bucket, key string, err error) {
	scheme, bucket, key, err := ParseURI(uri)
	if err != nil {
		return "", "", err
	}
	if scheme != SchemeS3 {
		return "", "", fmt.Errorf("s3 store: %s is not an s3:// URI", uri)
	}
	return bucket, key, nil
}

func objectKey(uri string) (bucket, key string, err error) {
	bucket, key, err = s3Location(uri)
	if err == nil && (key == "" || strings.HasSuffix(key, "/")) {
		err = fmt.Errorf("%s names a bucket or folder, not an object", uri)
	}
	return bucket, key, err
}

// s3Error puts the operation and URI in front of an SDK error and turns the
// two errors a user most often meets into one readable line: a missing
// object or bucket (wrapping ErrNotFound) and an unreachable server.
func s3Error(op, uri string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%s %s: %w", op, uri, ErrNotFound)
		case "NoSuchBucket":
			_, bucket, _, _ := ParseURI(uri)
			return fmt.Errorf("%s %s: bucket %q does not exist: %w", op, uri, bucket, ErrNotFound)
		}
	}
	if re := reachErrorOf(err); re != nil {
		return fmt.Errorf("%s %s: %w", op, uri, re)
	}
	return fmt.Errorf("%s %s: %w", op, uri, err)
}

// reachError reports a server that could not be connected to. Its message is
// short (the SDK's says the same in three times the words); Unwrap keeps the
// full error for errors.Is.
type reachError struct {
	endpoint string
	reason   string
	err      error
}

func (e *reachError) Error() string {
	return fmt.Sprintf("s3: cannot reach %s: %s", e.endpoint, e.reason)
}

func (e *reachError) Unwrap() error { return e.err }

func reachErrorOf(err error) *reachError {
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		return nil
	}
	endpoint := "the S3 endpoint"
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		if u, perr := url.Parse(urlErr.URL); perr == nil {
			endpoint = u.Scheme + "://" + u.Host
		}
	}
	reason := opErr.Err.Error()
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection refused"
	case errors.As(err, &dnsErr):
		reason = dnsErr.Error()
	case opErr.Timeout():
		reason = "connection timed out"
	}
	return &reachError{endpoint: endpoint, reason: reason, err: err}
}

func (s *s3Store) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	bucket, key, err := objectKey(uri)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, s3Error("open", uri, err)
	}
	return &s3Reader{uri: uri, body: out.Body}, nil
}

// s3Reader names the object in read errors, which otherwise surface as a
// bare "unexpected EOF" or "connection reset" far from the Open call.
type s3Reader struct {
	uri  string
	body io.ReadCloser
}

func (r *s3Reader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if err != nil && err != io.EOF {
		err = s3Error("read", r.uri, err)
	}
	return n, err
}

func (r *s3Reader) Close() error { return r.body.Close() }

func (s *s3Store) Stat(ctx context.Context, uri string) (Info, error) {
	bucket, key, err := objectKey(uri)
	if err != nil {
		return Info{}, fmt.Errorf("stat: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return Info{}, s3Error("stat", uri, err)
	}
	return Info{
		URI:      uri,
		Size:     aws.ToInt64(out.ContentLength),
		ETag:     strings.Trim(aws.ToString(out.ETag), `"`),
		Modified: aws.ToTime(out.LastModified),
	}, nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]Info, error) {
	bucket, keyPrefix, err := s3Location(prefix)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	in := &s3.ListObjectsV2Input{Bucket: &bucket}
	if keyPrefix != "" {
		in.Prefix = &keyPrefix
	}
	var out []Info
	// S3 returns keys in UTF-8 byte order, which is the order List promises.
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s3Error("list", prefix, err)
		}
		for _, o := range page.Contents {
			out = append(out, Info{
				URI:      "s3://" + bucket + "/" + aws.ToString(o.Key),
				Size:     aws.ToInt64(o.Size),
				ETag:     strings.Trim(aws.ToString(o.ETag), `"`),
				Modified: aws.ToTime(o.LastModified),
			})
		}
	}
	return out, nil
}

func (s *s3Store) Delete(ctx context.Context, uri string) error {
	bucket, key, err := objectKey(uri)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NoSuchKey" || apiErr.ErrorCode() == "NotFound") {
			return nil // S3 itself answers 204 here; some servers say 404
		}
		return s3Error("delete", uri, err)
	}
	return nil
}

// maxPutBytes is S3's limit on one PutObject.
const maxPutBytes = 5 << 30

// Put sends body in one PutObject, read in place: the SDK seeks back over a
// bytes.Reader to checksum and sign it rather than copying it.
func (s *s3Store) Put(ctx context.Context, uri string, body []byte) error {
	bucket, key, err := objectKey(uri)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if int64(len(body)) > maxPutBytes {
		return fmt.Errorf("put %s: %d bytes is over S3's %d for one request; write it with Create", uri, len(body), maxPutBytes)
	}
	if err := putObject(ctx, s.client, bucket, key, body); err != nil {
		return s3Error("put", uri, err)
	}
	return nil
}

// putObject is one PutObject of body, read in place.
func putObject(ctx context.Context, client *s3.Client, bucket, key string, body []byte) error {
	_, err := client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &bucket,
		Key:           &key,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
	})
	return err
}

// Create returns a writer that streams the object in parts (s3Writer): memory
// stays at most PartSize*(BackgroundParts+1) whatever the object's size.
func (s *s3Store) Create(ctx context.Context, uri string) (Writer, error) {
	bucket, key, err := objectKey(uri)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	return s.newWriter(ctx, uri, bucket, key), nil
}

// Compile-time checks that the stores satisfy the interface.
var (
	_ Store = (*s3Store)(nil)
	_ Store = fileStore{}
)
