package devstack_test

import (
	"bufio"
	"context"
	"io"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/devstack/devstacktest"
)

func TestFreePortIsBindable(t *testing.T) {
	p, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
}

func TestFindBinDirHonoursEnvAndNamesTheFix(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("VBATCH_BIN_DIR", dir)
	_, err := devstack.FindBinDir()
	if err == nil || !strings.Contains(err.Error(), "go tool task tools") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("FindBinDir on an empty dir: err = %v, want one naming %s and `go tool task tools`", err, dir)
	}
	for _, name := range []string{"temporal", "versitygw"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := devstack.FindBinDir()
	if err != nil || got != dir {
		t.Fatalf("FindBinDir = %q, %v; want %q", got, err, dir)
	}
}

func TestStartFailureQuotesTheServerLog(t *testing.T) {
	// A "server" that panics and exits stands in for a broken binary: the
	// error must carry the panic's words, though its stack trace is longer
	// than the tail quoted, and say it was started startTries times.
	bin := t.TempDir()
	script := "#!/bin/sh\necho \"panic: cannot open state folder\" >&2\n" +
		"i=0; while [ $i -lt 100 ]; do echo \"\tgithub.com/some/server.frame$i(0xc000123456)\" >&2; i=$((i+1)); done\nexit 3\n"
	for _, name := range []string{"temporal", "versitygw"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	start := time.Now()
	_, err := devstack.Start(context.Background(), devstack.Options{Dir: dir, BinDir: bin, Headless: true})
	if err == nil {
		t.Fatal("Start with a server that exits: no error")
	}
	for _, want := range []string{"versitygw", "exited before answering", "panic: cannot open state folder", "frame99", "s3.log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("start error: %v", err)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %s to notice the exits", d)
	}
	if starts := countStarts(t, filepath.Join(dir, "logs", "s3.log")); starts != 3 {
		t.Errorf("versitygw was started %d times, want 3", starts)
	}
}

// A server that dies before it answers, as the Temporal dev server does when
// another process took one of its ports first, is started again on fresh
// ports, and the stack works.
func TestStartTriesAgainWhenAServerDiesAtStart(t *testing.T) {
	real := devstacktest.BinDir(t)
	bin := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "versitygw"), filepath.Join(bin, "versitygw")); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ ! -e \"$0.died\" ]; then touch \"$0.died\"\n" +
		"echo \"panic: listen tcp 127.0.0.1:7235: bind: address already in use\" >&2; exit 2; fi\n" +
		"exec " + filepath.Join(real, "temporal") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "temporal"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{Dir: dir, BinDir: bin, Headless: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { st.Stop() })
	if starts := countStarts(t, filepath.Join(dir, "logs", "temporal.log")); starts != 2 {
		t.Errorf("temporal was started %d times, want 2", starts)
	}
	c, err := client.Dial(client.Options{HostPort: st.TemporalAddress, Namespace: st.Namespace})
	if err != nil {
		t.Fatalf("dial the restarted Temporal: %v", err)
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		t.Errorf("the restarted Temporal at %s: %v", st.TemporalAddress, err)
	}
}

// countStarts counts the starts noted in a server's log.
func countStarts(t *testing.T, log string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "=== ") {
			n++
		}
	}
	return n
}

func parseEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kv, ok := strings.CutPrefix(line, "export ")
		k, v, ok2 := strings.Cut(kv, "=")
		if !ok || !ok2 || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			t.Fatalf("env file line %q is not export K='V'", line)
		}
		env[k] = v[1 : len(v)-1]
	}
	return env
}

func TestStackServesS3AndTemporal(t *testing.T) {
	st := devstacktest.Start(t, devstack.Options{})
	ctx := context.Background()

	// The env file carries everything a shell (and cmd/) needs.
	envPath := filepath.Join(st.Dir, "env")
	if err := st.WriteEnvFile(envPath); err != nil {
		t.Fatal(err)
	}
	env := parseEnvFile(t, envPath)
	want := map[string]string{
		"TEMPORAL_ADDRESS":      st.TemporalAddress,
		"TEMPORAL_NAMESPACE":    "default",
		"AWS_ENDPOINT_URL_S3":   st.S3Endpoint,
		"AWS_ACCESS_KEY_ID":     st.AccessKey,
		"AWS_SECRET_ACCESS_KEY": st.SecretKey,
		"AWS_REGION":            "us-east-1",
		"VBATCH_S3_PATH_STYLE":  "true",
		"VBATCH_BUCKET":         "vbatch",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env file %s = %q, want %q", k, env[k], v)
		}
	}
	if len(env) != len(want) {
		t.Errorf("env file has %d variables, want %d: %v", len(env), len(want), env)
	}
	if !strings.HasPrefix(st.TemporalAddress, "127.0.0.1:") || !strings.HasPrefix(st.S3Endpoint, "http://127.0.0.1:") {
		t.Errorf("servers not on loopback: %s, %s", st.TemporalAddress, st.S3Endpoint)
	}

	// The config read back from that environment reaches the bucket.
	cfg, err := blob.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccessKey, cfg.SecretKey = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
	store, err := blob.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	uri := "s3://" + env["VBATCH_BUCKET"] + "/hello.txt"
	writeObject(t, store, uri, "hello")
	if got := readObject(t, store, uri); got != "hello" {
		t.Fatalf("read back %q", got)
	}

	c, err := client.Dial(client.Options{HostPort: env["TEMPORAL_ADDRESS"], Namespace: env["TEMPORAL_NAMESPACE"]})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		t.Fatalf("temporal health: %v", err)
	}
}

// The local S3 keeps a connection open across requests, as S3 does: a run's
// thousands of small requests must not each dial a new one here.
func TestS3KeepsConnectionsOpen(t *testing.T) {
	st := devstacktest.Start(t, devstack.Options{NoTemporal: true, Bucket: "conns"})
	store, err := blob.New(context.Background(), st.BlobConfig())
	if err != nil {
		t.Fatal(err)
	}
	var dialed, reused atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(c httptrace.GotConnInfo) {
			if c.Reused {
				reused.Add(1)
			} else {
				dialed.Add(1)
			}
		},
	})
	uri := "s3://conns/runs/r1/chunks/00000/a01-p0001.jsonl"
	for range 10 { // one request at a time: one connection serves them all
		if err := store.Put(ctx, uri, []byte(`{"custom_id":"a"}`)); err != nil {
			t.Fatal(err)
		}
		r, err := store.Open(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, r)
		_ = r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.List(ctx, "s3://conns/runs/r1/chunks/00000/"); err != nil {
			t.Fatal(err)
		}
	}
	if dialed.Load() != 1 || reused.Load() != 29 {
		t.Errorf("30 requests one at a time: %d connections dialed, %d reused; want 1 and 29", dialed.Load(), reused.Load())
	}
}

func TestS3RestartKeepsObjects(t *testing.T) {
	st := devstacktest.Start(t, devstack.Options{NoTemporal: true, Bucket: "keep"})
	ctx := context.Background()
	store, err := blob.New(ctx, st.BlobConfig())
	if err != nil {
		t.Fatal(err)
	}
	uri := "s3://keep/runs/r1/manifest.json"
	writeObject(t, store, uri, `{"chunks":3}`)

	if err := st.S3.Stop(); err != nil {
		t.Fatal(err)
	}
	// While S3 is down, errors say so in one line a person can act on.
	_, err = store.Open(ctx, uri)
	wantMsg := "s3: cannot reach " + st.S3Endpoint + ": connection refused"
	if err == nil || !strings.Contains(err.Error(), wantMsg) || !strings.Contains(err.Error(), uri) {
		t.Fatalf("Open while S3 is down: %v; want it to contain %q and the URI", err, wantMsg)
	}
	t.Logf("while S3 is down: %v", err)

	if err := st.S3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st.S3.Addr() != st.S3Endpoint {
		t.Errorf("restarted at %s, want %s", st.S3.Addr(), st.S3Endpoint)
	}
	if got := readObject(t, store, uri); got != `{"chunks":3}` {
		t.Fatalf("after restart read %q", got)
	}
}

func TestTemporalRestartKeepsState(t *testing.T) {
	st := devstacktest.Start(t, devstack.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	nc, err := client.NewNamespaceClient(client.Options{HostPort: st.TemporalAddress})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	retention := 24 * time.Hour
	if err := nc.Register(ctx, registerRequest("vbatch-restart-test", retention)); err != nil {
		t.Fatalf("register namespace: %v", err)
	}

	c, err := client.Dial(client.Options{HostPort: st.TemporalAddress, Namespace: st.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No worker serves this type: the execution just waits, which is all a
	// history needs to survive a restart.
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "restart-test", TaskQueue: "nobody-polls"}, "NoSuchWorkflow", "arg")
	if err != nil {
		t.Fatal(err)
	}

	if err := st.Temporal.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := st.Temporal.Start(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := nc.Describe(ctx, "vbatch-restart-test"); err != nil {
		t.Errorf("namespace lost in restart: %v", err)
	}
	desc, err := c.DescribeWorkflow(ctx, "restart-test", run.GetRunID())
	if err != nil {
		t.Fatalf("workflow lost in restart: %v", err)
	}
	if s := desc.Status.String(); s != "Running" {
		t.Errorf("workflow status after restart = %s, want Running", s)
	}
	iter := c.GetWorkflowHistory(ctx, "restart-test", run.GetRunID(), false, 0)
	if !iter.HasNext() {
		t.Fatal("empty history after restart")
	}
	ev, err := iter.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.GetEventType().String(); got != "WorkflowExecutionStarted" {
		t.Errorf("first event after restart = %s", got)
	}
}

func writeObject(t *testing.T, s blob.Store, uri, body string) {
	t.Helper()
	if err := s.Put(context.Background(), uri, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

func readObject(t *testing.T, s blob.Store, uri string) string {
	t.Helper()
	r, err := s.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func registerRequest(name string, retention time.Duration) *workflowservice.RegisterNamespaceRequest {
	return &workflowservice.RegisterNamespaceRequest{
		Namespace:                        name,
		WorkflowExecutionRetentionPeriod: durationpb.New(retention),
	}
}
