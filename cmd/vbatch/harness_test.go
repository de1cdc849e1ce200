//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/run"
)

// The integration suite runs real processes: the pinned Temporal dev server and
// versitygw from ./bin (installed by `go tool task tools`), and vbatch workers built
// from this folder, each with real python3 engine processes.

var (
	vbatchBin string
	stack     *devstack.Stack
	store     blob.Store
	temporal  client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "vbatch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if _, err := devstack.FindBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "integration tests need the pinned tools:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping integration tests:", err)
		return 0
	}
	vbatchBin = filepath.Join(tmp, "vbatch")
	build := exec.Command("go", "build", "-o", vbatchBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build vbatch:", err)
		return 1
	}
	ctx := context.Background()
	// The Temporal UI only where a test drives it (task e2e:ui): it costs start-up time.
	headless := os.Getenv("VBATCH_E2E_UI") == ""
	stack, err = devstack.Start(ctx, devstack.Options{Dir: filepath.Join(tmp, "stack"), Headless: headless})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start stack:", err)
		return 1
	}
	defer stack.Stop()
	if store, err = blob.New(ctx, stack.BlobConfig()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if temporal, err = client.Dial(client.Options{HostPort: stack.TemporalAddress, Namespace: stack.Namespace}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer temporal.Close()
	return m.Run()
}

// proc is a vbatch process started by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startVbatch starts `vbatch args…` against the stack; the test stops it at cleanup
// and prints its output when the test failed.
func startVbatch(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(vbatchBin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), stack.Env()...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("vbatch %s:\n%s", strings.Join(args, " "), tail(p.out.String(), 60))
		}
	})
	return p
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor waits until the process prints substr.
func (p *proc) waitFor(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), substr) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("vbatch exited before printing %q:\n%s", substr, tail(p.out.String(), 40))
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("vbatch did not print %q in %s:\n%s", substr, timeout, tail(p.out.String(), 40))
}

// runVbatch runs `vbatch args…` to completion and returns its output and exit code.
func runVbatch(t *testing.T, timeout time.Duration, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vbatchBin, args...)
	cmd.Env = append(append(os.Environ(), stack.Env()...), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("vbatch %s did not finish in %s:\n%s", strings.Join(args, " "), timeout, out)
	}
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// startWorkers starts a control worker and a sim GPU worker with the given slots
// and waits until both poll.
func startWorkers(t *testing.T, model string, slots int, extra ...string) (control, gpu *proc) {
	t.Helper()
	control = startVbatch(t, "worker", "--role", "control")
	args := append([]string{"worker", "--role", "gpu", "--engine", "sim", "--model", model,
		"--gpus", fmt.Sprint(slots), "--sim-tokens-per-second", "100000", "--sim-batch-size", "64"}, extra...)
	gpu = startVbatch(t, args...)
	control.waitFor(t, "control worker polling", time.Minute)
	gpu.waitFor(t, "GPU worker ready", time.Minute)
	return control, gpu
}

func putObject(t *testing.T, uri string, data []byte) {
	t.Helper()
	if err := store.Put(context.Background(), uri, data); err != nil {
		t.Fatal(err)
	}
}

// readJSONL reads an object of JSON lines.
func readJSONL(t *testing.T, uri string) []map[string]any {
	t.Helper()
	r, err := store.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []map[string]any
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %d is not JSON: %v", uri, len(out)+1, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// plannedChunks reads a run's manifest and checks that its chunks hold the valid
// requests once each, in input order, at most maxLines (the chunk size) each.
func plannedChunks(t *testing.T, layout run.Layout, valid, maxLines int) []run.ChunkPlan {
	t.Helper()
	var m run.Manifest
	if err := blob.ReadJSON(context.Background(), store, layout.Manifest(), &m); err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, c := range m.Chunks {
		if c.Index != i || c.Requests < 1 || c.Requests > maxLines || (i > 0 && c.FirstLine <= m.Chunks[i-1].LastLine) {
			t.Fatalf("chunk %+v of the plan: want chunk %d of 1 to %d requests after the one before", c, i, maxLines)
		}
		total += c.Requests
	}
	if total != valid {
		t.Fatalf("the plan's chunks hold %d requests, want %d", total, valid)
	}
	return m.Chunks
}

// chunkOf is the index of the chunk that holds input line, -1 if none does.
func chunkOf(chunks []run.ChunkPlan, line int) int {
	for _, c := range chunks {
		if c.FirstLine <= line && line <= c.LastLine {
			return c.Index
		}
	}
	return -1
}
