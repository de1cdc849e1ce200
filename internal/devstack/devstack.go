// Package devstack starts the local servers vbatch runs against on one
// machine: the Temporal dev server (SQLite) and versitygw (a real S3 server on
// a local folder). `vbatch dev`, the demo and the integration tests use it, so
// all three meet the same servers, started the same way, with state under one
// folder (temporal.db, s3/, logs/).
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
)

// Fixed values of the local stack. The keys guard nothing but a loopback
// server; they are fixed so that an env file written by one `vbatch dev` run
// still works after a restart.
const (
	DefaultBucket = "vbatch"
	Namespace     = "default"
	AccessKey     = "vbatch"
	SecretKey     = "vbatchsecret"
	Region        = "us-east-1"

	temporalBin  = "temporal"
	versitygwBin = "versitygw"
)

// Options says where the stack keeps its state and what it starts.
type Options struct {
	// Dir holds the stack's state: temporal.db, s3/ (the buckets) and logs/.
	// Reusing a Dir brings back earlier workflows and objects.
	Dir string
	// BinDir holds the temporal and versitygw binaries; "" means FindBinDir.
	BinDir string
	// Bucket is created at start if missing; "" means DefaultBucket.
	Bucket string
	// Headless starts Temporal without its Web UI (tests).
	Headless bool
	// NoTemporal starts only the S3 server, for tests that need no Temporal
	// and should not pay its start-up time.
	NoTemporal bool
	// Logger receives start and stop messages; nil discards them.
	Logger *zap.Logger
}

// Stack is a running local stack. Temporal is nil when Options.NoTemporal.
type Stack struct {
	TemporalAddress string // 127.0.0.1:P
	UIAddress       string // http://127.0.0.1:U, "" when headless
	Namespace       string
	S3Endpoint      string // http://127.0.0.1:P
	AccessKey       string
	SecretKey       string
	Region          string
	Bucket          string
	Dir             string // absolute

	Temporal *Server
	S3       *Server
}

// FindBinDir returns the folder holding the pinned temporal and versitygw
// binaries: $VBATCH_BIN_DIR if set, else bin/ at the module root, found by
// walking up from the working directory to go.mod.
func FindBinDir() (string, error) {
	dir := os.Getenv("VBATCH_BIN_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("find temporal and versitygw: %w; set VBATCH_BIN_DIR or run `go tool task tools` in the repository", err)
		}
		dir = filepath.Join(root, "bin")
	}
	for _, name := range []string{temporalBin, versitygwBin} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s not found in %s: run `go tool task tools`", name, dir)
		}
	}
	return dir, nil
}

func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod in %s or above", wd)
		}
	}
}

// FreePort asks the kernel for a free loopback TCP port. Another process may
// take it before we bind it, but on a developer machine that is rare, and the
// start error says which port failed.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts versitygw, creates the bucket, then starts the Temporal dev
// server and waits until its namespace answers. On error, whatever was
// started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Dir == "" {
		return nil, errors.New("devstack: Options.Dir is required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = FindBinDir(); err != nil {
			return nil, fmt.Errorf("devstack: %w", err)
		}
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	for _, d := range []string{filepath.Join(dir, "logs"), filepath.Join(dir, "s3")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("devstack: %w", err)
		}
	}

	st := &Stack{
		Namespace: Namespace,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
		Region:    Region,
		Bucket:    opts.Bucket,
		Dir:       dir,
	}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()

	var s3Client *s3.Client
	st.S3, err = startOnFreshPorts(ctx, opts.Logger, func() (*Server, error) {
		s3Port, err := FreePort()
		if err != nil {
			return nil, err
		}
		st.S3Endpoint = "http://127.0.0.1:" + strconv.Itoa(s3Port)
		if s3Client, err = blob.NewS3Client(ctx, st.BlobConfig()); err != nil {
			return nil, err
		}
		return s3Server(opts, dir, s3Port, s3Client)
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	if err := ensureBucket(ctx, s3Client, st.Bucket); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}

	if opts.NoTemporal {
		return st, nil
	}
	st.Temporal, err = startOnFreshPorts(ctx, opts.Logger, func() (*Server, error) {
		return temporalServer(opts, dir, st)
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	return st, nil
}

// startTries is how many times a server that dies before it answers is
// started, on fresh ports each time. Between FreePort and the server's bind
// another process can take the port, and the Temporal dev server picks more
// ports of its own the same way: it died once in some forty bench starts on a
// 16-core host, panicking while it set its services up, which is where it
// binds them.
const startTries = 3

// startOnFreshPorts builds a server (choosing its ports) and starts it, again
// with new ports when it exits before it answers.
func startOnFreshPorts(ctx context.Context, log *zap.Logger, build func() (*Server, error)) (*Server, error) {
	for try := 1; ; try++ {
		srv, err := build()
		if err != nil {
			return nil, err
		}
		err = srv.Start(ctx)
		if err == nil {
			return srv, nil
		}
		if !errors.Is(err, errExitedEarly) || try == startTries {
			return nil, err
		}
		log.Warn("server exited before answering; starting it again on fresh ports",
			zap.String("server", srv.name), zap.Int("try", try), zap.Error(err))
	}
}

// s3Server is versitygw serving dir/s3 on port.
func s3Server(opts Options, dir string, port int, client *s3.Client) (*Server, error) {
	args := []string{
		"--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", "127.0.0.1:" + strconv.Itoa(port),
		"--quiet", // no line per request: a run makes thousands
		// versitygw closes each connection after one request unless told
		// otherwise; S3 keeps them open, and a run's thousands of small
		// requests would each pay a new connection here but not there.
		"--keep-alive",
		"posix",
	}
	if !hasXattrs(filepath.Join(dir, "s3")) {
		// The posix backend keeps metadata (ETags, checksums) in xattrs by
		// default; where the file system has none, a sidecar folder does it.
		meta := filepath.Join(dir, "s3meta")
		if err := os.MkdirAll(meta, 0o755); err != nil {
			return nil, err
		}
		args = append(args, "--sidecar", meta)
	}
	args = append(args, filepath.Join(dir, "s3"))
	return &Server{
		name:    "versitygw",
		bin:     filepath.Join(opts.BinDir, versitygwBin),
		args:    args,
		addr:    "http://127.0.0.1:" + strconv.Itoa(port),
		logPath: filepath.Join(dir, "logs", "s3.log"),
		logger:  opts.Logger,
		ready: func(ctx context.Context) error {
			// One attempt per poll: the client's retries would only slow
			// the polling loop down.
			_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{}, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
			return err
		},
	}, nil
}

// temporalServer is the Temporal dev server on fresh ports, its state in
// dir/temporal.db; it sets st's Temporal and UI addresses.
func temporalServer(opts Options, dir string, st *Stack) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	st.TemporalAddress = "127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--db-filename", filepath.Join(dir, "temporal.db"),
		"--log-level", "warn",
		// One partition per task queue. With the default four, a chunk's task
		// that found no poller waiting sat in another partition's backlog
		// while the GPU worker's polls waited on the others: on a 16-core host
		// the last chunks of most short runs started 2 s late, engines idle.
		// One node with a worker or two per queue gains nothing from more.
		"--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
		"--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
	}
	if opts.Headless {
		args = append(args, "--headless")
	} else {
		uiPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		args = append(args, "--ui-port", strconv.Itoa(uiPort))
		st.UIAddress = "http://127.0.0.1:" + strconv.Itoa(uiPort)
	}
	address := st.TemporalAddress
	return &Server{
		name:    "temporal",
		bin:     filepath.Join(opts.BinDir, temporalBin),
		args:    args,
		addr:    address,
		logPath: filepath.Join(dir, "logs", "temporal.log"),
		logger:  opts.Logger,
		ready: func(ctx context.Context) error {
			return temporalReady(ctx, address, st.Namespace)
		},
	}, nil
}

// temporalReady succeeds once the frontend answers a health check and the
// namespace exists: the dev server answers health checks a moment before it
// has created "default", and a worker started in that moment would fail.
func temporalReady(ctx context.Context, hostPort, namespace string) error {
	opts := client.Options{
		HostPort:  hostPort,
		Namespace: namespace,
		// The SDK logs every failed dial; during polling those are expected.
		Logger: log.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return err
	}
	nc, err := client.NewNamespaceClient(opts)
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = nc.Describe(ctx, namespace)
	return err
}

func ensureBucket(ctx context.Context, c *s3.Client, bucket string) error {
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
			// A reused Dir already has it; only our keys exist on this server,
			// so an existing bucket is ours either way.
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}

// Stop stops Temporal, then S3, and reports both failures if there are two.
func (s *Stack) Stop() error {
	var errs []error
	if s.Temporal != nil {
		errs = append(errs, s.Temporal.Stop())
	}
	if s.S3 != nil {
		errs = append(errs, s.S3.Stop())
	}
	return errors.Join(errs...)
}

// Env returns the stack's settings as KEY=VALUE pairs in the variables
// cmd/ reads (the standard AWS and Temporal ones, plus vbatch's), ready for
// exec.Cmd.Env.
func (s *Stack) Env() []string {
	pairs := [][2]string{
		{"TEMPORAL_ADDRESS", s.TemporalAddress},
		{"TEMPORAL_NAMESPACE", s.Namespace},
		{"AWS_ENDPOINT_URL_S3", s.S3Endpoint},
		{"AWS_ACCESS_KEY_ID", s.AccessKey},
		{"AWS_SECRET_ACCESS_KEY", s.SecretKey},
		{"AWS_REGION", s.Region},
		{"VBATCH_S3_PATH_STYLE", "true"},
		{"VBATCH_BUCKET", s.Bucket},
	}
	env := make([]string, 0, len(pairs))
	for _, p := range pairs {
		if p[1] == "" {
			continue // no Temporal with NoTemporal
		}
		env = append(env, p[0]+"="+p[1])
	}
	return env
}

// WriteEnvFile writes Env as shell `export K='V'` lines, so that
// `source .vbatch/env` points a shell's vbatch, temporal and aws commands at
// the stack.
func (s *Stack) WriteEnvFile(path string) error {
	var b strings.Builder
	b.WriteString("# vbatch local stack; source this file. Written by devstack; overwritten on each start.\n")
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write env file: %w", err)
	}
	return nil
}

// shellQuote single-quotes v for POSIX shells.
func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// BlobConfig is the blob.Config that reaches the stack's S3 server.
func (s *Stack) BlobConfig() blob.Config {
	return blob.Config{
		Region:      s.Region,
		EndpointURL: s.S3Endpoint,
		AccessKey:   s.AccessKey,
		SecretKey:   s.SecretKey,
		PathStyle:   true,
	}
}
