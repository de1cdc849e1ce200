//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdktemporal "go.temporal.io/sdk/temporal"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// The fault suite: each case runs 2,000 synthetic requests through real worker and
// engine processes, breaks something mid-run, and checks that afterwards every
// custom_id is in exactly one of output.jsonl and errors.jsonl, and how many
// requests were generated more than once. Each case logs a RELIABILITY line, the
// figures of docs/benchmarks.md.

const (
	faultRequests   = 2000
	faultChunkSize  = 100
	checkpointEvery = 32
	// The sim engines run 2,000 requests (≈2.2M tokens) in about 25 s on two
	// simulated GPUs: long enough to break things mid-run, short enough for CI.
	faultTokensPerSecond = "40000"
)

// faultRun is one case's run: its input and what the test needs to check it.
type faultRun struct {
	t      *testing.T
	model  string
	id     string
	input  string
	ids    []string
	gpus   []*proc // every GPU worker the case started, killed ones included
	start  time.Time
	layout run.Layout
}

// newFaultRun writes the case's input: faultRequests synthetic candidates, with
// the prompt of line poisonLine (if > 0) made to crash a worker started with
// --sim-crash-on POISON-PILL.
func newFaultRun(t *testing.T, name string, poisonLine int) *faultRun {
	t.Helper()
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: faultRequests, Seed: 42}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(in.String(), "\n"), "\n")
	if poisonLine > 0 {
		l := lines[poisonLine-1]
		i := strings.Index(l, `{"role":"user","content":"`)
		if i < 0 {
			t.Fatal("synthetic line without a user message")
		}
		i += len(`{"role":"user","content":"`)
		lines[poisonLine-1] = l[:i] + "POISON-PILL " + l[i:]
	}
	// A run id of its own each time, so that -count=N does not resume an earlier run.
	id := fmt.Sprintf("fault-%s-%d", name, time.Now().UnixMilli()%1_000_000)
	f := &faultRun{t: t, model: "fault/" + name, id: id,
		input: fmt.Sprintf("s3://%s/fault/%s/requests.jsonl", stack.Bucket, id)}
	for i := range lines {
		f.ids = append(f.ids, fmt.Sprintf("cand-%05d", i+1))
	}
	putObject(t, f.input, []byte(strings.Join(lines, "\n")+"\n"))
	f.layout = run.NewLayout(run.DefaultOutput(f.input), run.ID(f.id))
	return f
}

// startGPU starts a sim GPU worker for the case's model, at debug level so that the
// test can count every answer its engines generated.
func (f *faultRun) startGPU(extra ...string) *proc {
	f.t.Helper()
	args := append([]string{"worker", "--role", "gpu", "--engine", "sim", "--model", f.model, "--gpus", "2",
		"--sim-tokens-per-second", faultTokensPerSecond, "--sim-batch-size", "64", "--log-level", "debug"}, extra...)
	p := startVbatch(f.t, args...)
	p.waitFor(f.t, "GPU worker ready", time.Minute)
	f.gpus = append(f.gpus, p)
	return p
}

// submit starts the run with small checkpoints and a short heartbeat timeout, so
// that a lost chunk is retried within seconds.
func (f *faultRun) submit(heartbeatSeconds, maxAttempts int) {
	f.t.Helper()
	_, err := temporal.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: f.id, TaskQueue: workflows.ControlTaskQueue,
	}, workflows.WorkflowType, workflows.BatchInput{
		Input: f.input, Model: f.model, ChunkSize: faultChunkSize, Engines: 2, CheckpointEvery: checkpointEvery,
		CheckpointSeconds: 2, HeartbeatTimeoutSeconds: heartbeatSeconds, MaxAttempts: maxAttempts,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.start = time.Now()
}

// waitAnswered waits until at least n answers are checkpointed: the run is
// under way, with some of it left.
func (f *faultRun) waitAnswered(n int) {
	f.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if f.checkpointed() >= n {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.t.Fatalf("fewer than %d answers checkpointed in 2 minutes", n)
}

// checkpointed counts the answers in the run's parts (duplicates included).
func (f *faultRun) checkpointed() int {
	n := 0
	for _, counts := range f.partCounts() {
		n += counts.answers
	}
	return n
}

// result waits for the run to end.
func (f *faultRun) result(id string, timeout time.Duration) (workflows.BatchResult, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var res workflows.BatchResult
	err := temporal.GetWorkflow(ctx, id, "").Get(ctx, &res)
	var canceled *sdktemporal.CanceledError
	if errors.As(err, &canceled) && canceled.HasDetails() {
		if derr := canceled.Details(&res); derr == nil {
			return res, err
		}
	}
	if ctx.Err() != nil {
		f.t.Fatalf("run %s did not end in %s", id, timeout)
	}
	return res, err
}

// exactlyOnce checks that every custom_id of the input is in exactly one of
// output.jsonl and errors.jsonl, and returns the error code of each that is in
// errors.jsonl.
func (f *faultRun) exactlyOnce(res workflows.BatchResult) map[string]string {
	f.t.Helper()
	seen := map[string]string{}
	for _, l := range readJSONL(f.t, res.Output) {
		id := l["custom_id"].(string)
		if where, dup := seen[id]; dup {
			f.t.Errorf("%s is in output.jsonl twice (or in %s too)", id, where)
		}
		seen[id] = "output"
	}
	codes := map[string]string{}
	for _, l := range readJSONL(f.t, res.ErrorsURI) {
		id, _ := l["custom_id"].(string)
		if where, dup := seen[id]; dup {
			f.t.Errorf("%s is in errors.jsonl and in %s", id, where)
		}
		seen[id] = "errors"
		codes[id] = l["error"].(map[string]any)["code"].(string)
	}
	for _, id := range f.ids {
		if _, ok := seen[id]; !ok {
			f.t.Errorf("%s is in neither output.jsonl nor errors.jsonl", id)
		}
	}
	if len(seen) != len(f.ids) {
		f.t.Errorf("%d custom_ids in output+errors, want %d", len(seen), len(f.ids))
	}
	if res.Answered+res.Errors != len(f.ids) {
		f.t.Errorf("result counts %d answered + %d errors, want %d", res.Answered, res.Errors, len(f.ids))
	}
	return codes
}

type attemptKey struct{ chunk, attempt int }

type partCount struct {
	answers int
	ids     map[string]int
}

// partCounts reads every checkpoint part of the run: per chunk attempt, the
// answers it wrote.
func (f *faultRun) partCounts() map[attemptKey]*partCount {
	ctx := context.Background()
	objects, err := store.List(ctx, blob.Join(f.layout.Prefix, "chunks")+"/")
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[attemptKey]*partCount{}
	for _, o := range objects {
		attempt, _, ok := run.PartNumber(o.URI)
		if !ok {
			continue
		}
		chunk, _ := strconv.Atoi(filepath.Base(filepath.Dir(o.URI)))
		k := attemptKey{chunk, attempt}
		if out[k] == nil {
			out[k] = &partCount{ids: map[string]int{}}
		}
		r, err := store.Open(ctx, o.URI)
		if err != nil {
			continue // a test reading while a worker writes
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() {
			var a struct {
				CustomID string `json:"custom_id"`
			}
			if json.Unmarshal(sc.Bytes(), &a) == nil {
				out[k].answers++
				out[k].ids[a.CustomID]++
			}
		}
		r.Close()
	}
	return out
}

var answerLine = regexp.MustCompile(`\tanswer\t\{"chunk": (\d+), "attempt": (\d+), "custom_id": "([^"]+)"\}`)

// redoFigures measures what the faults cost in work done twice.
type redoFigures struct {
	generated     int // answers the engines produced, every attempt (from the workers' debug logs)
	unique        int // custom_ids answered at least once
	redone        int // generated - unique: requests generated more than once
	written       int // answers in the parts, every attempt
	durableDups   int // written - unique written: answers checkpointed twice (zombie attempts)
	lostAttempts  int // attempts that generated answers they never checkpointed
	maxLost       int // the most answers one attempt lost
	attemptsTotal int
}

func (f *faultRun) redo() redoFigures {
	f.t.Helper()
	var r redoFigures
	gen := map[attemptKey]map[string]bool{}
	genIDs := map[string]int{}
	for _, p := range f.gpus {
		for _, m := range answerLine.FindAllStringSubmatch(p.out.String(), -1) {
			chunk, _ := strconv.Atoi(m[1])
			attempt, _ := strconv.Atoi(m[2])
			k := attemptKey{chunk, attempt}
			if gen[k] == nil {
				gen[k] = map[string]bool{}
			}
			gen[k][m[3]] = true
			genIDs[m[3]]++
			r.generated++
		}
	}
	r.unique = len(genIDs)
	r.redone = r.generated - r.unique
	parts := f.partCounts()
	writtenIDs := map[string]bool{}
	for _, pc := range parts {
		r.written += pc.answers
		for id := range pc.ids {
			writtenIDs[id] = true
		}
	}
	r.durableDups = r.written - len(writtenIDs)
	r.attemptsTotal = len(gen)
	for k, ids := range gen {
		written := 0
		if pc := parts[k]; pc != nil {
			written = len(pc.ids)
		}
		if lost := len(ids) - written; lost > 0 {
			r.lostAttempts++
			r.maxLost = max(r.maxLost, lost)
		}
	}
	return r
}

// report logs the case's figures and checks the bound: no chunk attempt loses more
// than one checkpoint interval, and what was generated twice is what interrupted
// attempts lost plus what zombie attempts wrote twice.
func (f *faultRun) report(name string, interruptions int, res workflows.BatchResult) redoFigures {
	f.t.Helper()
	r := f.redo()
	f.t.Logf("RELIABILITY | %s | %d requests | %d answered, %d errors | %.1f s | %d interruptions | %d generated more than once | %d checkpointed twice | %d chunk attempts lost answers, at most %d each",
		name, len(f.ids), res.Answered, res.Errors, time.Since(f.start).Seconds(), interruptions, r.redone, r.durableDups, r.lostAttempts, r.maxLost)
	if r.maxLost > checkpointEvery {
		f.t.Errorf("a chunk attempt lost %d answers, more than one checkpoint interval (%d)", r.maxLost, checkpointEvery)
	}
	if r.redone > r.lostAttempts*checkpointEvery+r.durableDups {
		f.t.Errorf("%d requests generated more than once; %d interrupted attempts × %d + %d checkpointed twice allow %d",
			r.redone, r.lostAttempts, checkpointEvery, r.durableDups, r.lostAttempts*checkpointEvery+r.durableDups)
	}
	return r
}

// allAnswered checks a case that must end with every request answered.
func (f *faultRun) allAnswered(res workflows.BatchResult, err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("run %s: %v", f.id, err)
	}
	codes := f.exactlyOnce(res)
	if res.Status != workflows.StatusCompleted || res.Answered != len(f.ids) || len(codes) != 0 {
		f.t.Fatalf("result %s, %d answered, errors %v: want every request answered", res.Status, res.Answered, codes)
	}
}

func sleepRandom(lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(rand.Int64N(int64(hi-lo))))
}

// 0. No fault: the reference for the cases below, and a check of the measure: an
// undisturbed run generates nothing twice.
func TestFaultNone(t *testing.T) {
	f := newFaultRun(t, "none", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	f.startGPU()
	f.submit(10, 5)
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	if r := f.report("no fault", 0, res); r.generated != len(f.ids) || r.redone != 0 || r.lostAttempts != 0 {
		t.Errorf("an undisturbed run generated %d answers for %d requests", r.generated, len(f.ids))
	}
}

// 1. A GPU worker killed with SIGKILL three times at random moments, a fresh one
// started each time: the killed chunks are retried after their heartbeat timeout
// and resume from their checkpoints.
func TestFaultGPUWorkerKilledThreeTimes(t *testing.T) {
	f := newFaultRun(t, "kill-worker", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	gpu := f.startGPU()
	f.submit(10, 5)
	for i := range 3 {
		f.waitAnswered((i + 1) * 300)
		sleepRandom(0, 2*time.Second)
		if err := gpu.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-gpu.done
		gpu = f.startGPU()
	}
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	r := f.report("GPU worker kill -9 ×3", 3, res)
	if r.lostAttempts == 0 && r.redone == 0 {
		t.Log("no kill caught an attempt with unwritten answers")
	}
}

// 2. The engine process (the worker's python runner) killed: the worker restarts
// it, the chunks on it record the death and finish on the restarted engine, and
// no request is blamed for a death it did not cause.
func TestFaultEngineProcessKilled(t *testing.T) {
	f := newFaultRun(t, "kill-engine", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	gpu := f.startGPU()
	f.submit(10, 5)
	f.waitAnswered(400)
	runners := childPIDs(t, gpu.cmd.Process.Pid)
	if len(runners) != 2 {
		t.Fatalf("GPU worker has %d child processes, want its 2 engine runners", len(runners))
	}
	if err := syscall.Kill(runners[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gpu.waitFor(t, "engine restarted", time.Minute)
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	deaths, attempts := f.chunkRecords()
	if len(deaths) == 0 {
		t.Error("no chunk recorded the engine's death")
	}
	cleared := 0
	for _, a := range attempts {
		if a.Blamed > 0 {
			t.Errorf("chunk %d attempt %d blamed %d requests for a death they did not cause", a.Chunk, a.Attempt, a.Blamed)
		}
		if a.Suspects > 0 && a.Outcome == "completed" {
			cleared++
		}
	}
	if cleared == 0 {
		t.Error("no chunk cleared the requests in flight at the death")
	}
	f.report("engine process kill -9", 1, res)
}

// chunkRecords reads the run's engine death records and attempt results.
func (f *faultRun) chunkRecords() ([]run.EngineDeath, []run.AttemptResult) {
	f.t.Helper()
	ctx := context.Background()
	objects, err := store.List(ctx, blob.Join(f.layout.Prefix, "chunks")+"/")
	if err != nil {
		f.t.Fatal(err)
	}
	var deaths []run.EngineDeath
	var attempts []run.AttemptResult
	for _, o := range objects {
		switch {
		case run.IsDeath(o.URI):
			var d run.EngineDeath
			if err := blob.ReadJSON(ctx, store, o.URI, &d); err != nil {
				f.t.Fatal(err)
			}
			deaths = append(deaths, d)
		case run.IsAttemptResult(o.URI):
			var a run.AttemptResult
			if err := blob.ReadJSON(ctx, store, o.URI, &a); err != nil {
				f.t.Fatal(err)
			}
			attempts = append(attempts, a)
		}
	}
	return deaths, attempts
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	sort.Ints(out)
	return out
}

// 3. The S3 server stopped for 20 s and started again: chunks keep their answers
// in memory and write them once it is back; chunks that start meanwhile retry.
func TestFaultS3StoppedFor20Seconds(t *testing.T) {
	f := newFaultRun(t, "s3-outage", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	gpu := f.startGPU()
	f.submit(10, 5)
	f.waitAnswered(400)
	if err := stack.S3.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Second)
	if err := stack.S3.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	if !strings.Contains(gpu.out.String(), "checkpoint write failed") || !strings.Contains(gpu.out.String(), "checkpoint writes work again") {
		t.Error("no chunk rode out the outage: the GPU worker logged no failed and recovered checkpoint write")
	}
	f.report("S3 server stopped 20 s", 1, res)
}

// 4. The Temporal dev server stopped and started again on the same database:
// workers reconnect, the run goes on where it was.
func TestFaultTemporalRestarted(t *testing.T) {
	f := newFaultRun(t, "temporal-restart", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	f.startGPU()
	f.submit(20, 5)
	f.waitAnswered(400)
	if err := stack.Temporal.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := stack.Temporal.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	f.report("Temporal server restarted", 1, res)
}

// 5. A chunk that fails every attempt is recorded as a failed shard and the others
// finish; `vbatch retry` then redoes that chunk alone and the run's output is
// complete.
func TestFaultFailedShardThenRetry(t *testing.T) {
	f := newFaultRun(t, "failed-shard", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	faulty := f.startGPU("--fault-fail-chunk", "7")
	f.submit(10, 3)
	res, err := f.result(f.id, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	codes := f.exactlyOnce(res)
	if res.Status != workflows.StatusCompletedWithFailures || len(res.FailedChunks) != 1 || res.FailedChunks[0].Index != 7 {
		t.Fatalf("result %s, failed chunks %+v: want chunk 7 failed", res.Status, res.FailedChunks)
	}
	if !strings.Contains(res.FailedChunks[0].Reason, "injected fault") {
		t.Errorf("failed chunk reason %q does not say why", res.FailedChunks[0].Reason)
	}
	chunks := plannedChunks(t, f.layout, faultRequests, faultChunkSize)
	for i, id := range f.ids {
		inChunk7 := chunkOf(chunks, i+1) == 7
		if inChunk7 && codes[id] != "shard_failed" {
			t.Fatalf("%s of chunk 7: code %q, want shard_failed", id, codes[id])
		}
		if !inChunk7 && codes[id] != "" {
			t.Fatalf("%s: code %q, want answered", id, codes[id])
		}
	}
	f.report("chunk failing every attempt", 0, res)

	// The fault is mended (a worker without it), and the run retried.
	faulty.stop()
	f.startGPU()
	retryStart := time.Now()
	out, code := runVbatch(t, 3*time.Minute, nil, "retry", f.id, "--wait", "--json")
	if code != 0 {
		t.Fatalf("vbatch retry exited %d:\n%s", code, out)
	}
	var retried workflows.BatchResult
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &retried); err != nil {
		t.Fatalf("retry --json: %v\n%s", err, out)
	}
	if retried.RetryOf != f.id || retried.RetriedChunks != 1 || retried.Status != workflows.StatusCompleted {
		t.Fatalf("retry result %+v: want 1 chunk of %s retried, completed", retried, f.id)
	}
	if retried.Output != res.Output {
		t.Errorf("retry wrote %s, want the run's own %s", retried.Output, res.Output)
	}
	f.allAnswered(retried, nil)
	parts := f.partCounts()
	for k := range parts {
		if k.chunk != 7 && k.attempt > 1 {
			t.Errorf("chunk %d attempt %d: the retry redid a chunk that had finished", k.chunk, k.attempt)
		}
		if k.chunk == 7 && k.attempt != 4 {
			t.Errorf("chunk 7 wrote attempt %d, want 4: the retry's attempts follow the run's 3", k.attempt)
		}
	}
	t.Logf("RELIABILITY | vbatch retry of the failed shard | %d requests | %d answered | %.1f s", len(f.ids), retried.Answered, time.Since(retryStart).Seconds())
}

// 5b. A request that crashes the engine on every attempt (a poison request) is
// recorded as engine_error for itself and the rest of its chunk is answered;
// `vbatch retry --engine-errors` on a mended engine answers it too.
func TestFaultPoisonRequestThenRetryEngineErrors(t *testing.T) {
	const poisonLine = 503 // in chunk 5 or so; the plan says which
	f := newFaultRun(t, "poison", poisonLine)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	crashing := f.startGPU("--sim-crash-on", "POISON-PILL")
	f.submit(10, 5)
	res, err := f.result(f.id, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	codes := f.exactlyOnce(res)
	poison := f.ids[poisonLine-1]
	if res.Status != workflows.StatusCompleted || len(codes) != 1 || codes[poison] != "engine_error" {
		t.Fatalf("result %s, errors %v: want only %s, as engine_error", res.Status, codes, poison)
	}
	deaths, attempts := f.chunkRecords()
	poisonChunk := chunkOf(plannedChunks(t, f.layout, faultRequests, faultChunkSize), poisonLine)
	var poisonDeaths []run.EngineDeath
	for _, d := range deaths {
		if d.Chunk == poisonChunk {
			poisonDeaths = append(poisonDeaths, d)
		}
	}
	if n := len(poisonDeaths); n != 3 || !poisonDeaths[n-1].Alone || len(poisonDeaths[n-1].InFlight) != 1 || poisonDeaths[n-1].InFlight[0] != poison {
		t.Errorf("the poison's chunk recorded deaths %+v: want three, the last with the poison alone", poisonDeaths)
	}
	blamed := 0
	for _, a := range attempts {
		blamed += a.Blamed
	}
	if blamed != 1 {
		t.Errorf("%d requests blamed, want the poison alone", blamed)
	}
	f.report("poison request", 0, res)

	crashing.stop()
	f.startGPU()
	out, code := runVbatch(t, 3*time.Minute, nil, "retry", f.id, "--engine-errors", "--wait", "--json")
	if code != 0 {
		t.Fatalf("vbatch retry --engine-errors exited %d:\n%s", code, out)
	}
	var retried workflows.BatchResult
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &retried); err != nil {
		t.Fatalf("retry --json: %v\n%s", err, out)
	}
	if retried.RetriedChunks != 1 {
		t.Errorf("retry redid %d chunks, want the poison's one", retried.RetriedChunks)
	}
	f.allAnswered(retried, nil)
}

// 6. A run cancelled mid-run: chunks stop within a heartbeat, what finished is in
// output.jsonl, the rest is cancelled in errors.jsonl, and the run, its result and
// its report say cancelled.
func TestFaultCancelMidRun(t *testing.T) {
	f := newFaultRun(t, "cancel", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	f.startGPU()
	f.submit(10, 5)
	f.waitAnswered(500)
	cancelAt := time.Now()
	out, code := runVbatch(t, 2*time.Minute, nil, "cancel", f.id, "--wait", "--json")
	if code != 0 {
		t.Fatalf("vbatch cancel exited %d:\n%s", code, out)
	}
	took := time.Since(cancelAt)
	var res workflows.BatchResult
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("cancel --json: %v\n%s", err, out)
	}
	codes := f.exactlyOnce(res)
	if res.Status != workflows.StatusCancelled || res.Answered == 0 || len(codes) == 0 {
		t.Fatalf("result %s, %d answered, %d errors: want cancelled with some of each", res.Status, res.Answered, len(codes))
	}
	for id, c := range codes {
		if c != "cancelled" {
			t.Fatalf("%s: code %s, want cancelled", id, c)
		}
	}
	if took > 30*time.Second {
		t.Errorf("the run took %s to end after the cancel", took)
	}
	desc, err := temporal.DescribeWorkflow(context.Background(), f.id, "")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Status != enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED {
		t.Errorf("Temporal says the run is %s, want Canceled", desc.Status)
	}
	var rep report.Report
	if err := blob.ReadJSON(context.Background(), store, res.Report, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != workflows.StatusCancelled {
		t.Errorf("report status %q, want cancelled", rep.Status)
	}
	out, code = runVbatch(t, time.Minute, nil, "status", f.id, "--json")
	if code != 0 || !strings.Contains(out, `"status": "cancelled"`) {
		t.Errorf("vbatch status of the cancelled run: exit %d\n%s", code, out)
	}
	t.Logf("RELIABILITY | cancel mid-run | %d requests | %d answered, %d cancelled | ended %.1f s after the cancel", len(f.ids), res.Answered, len(codes), took.Seconds())
	f.report("cancel mid-run", 1, res)
}

// A GPU worker stopped with SIGTERM stops polling, checkpoints its chunks and exits
// within its stop timeout; another worker resumes them and nothing is generated
// twice.
func TestFaultGPUWorkerGracefulStop(t *testing.T) {
	f := newFaultRun(t, "sigterm", 0)
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	stopping := f.startGPU("--stop-timeout", "10s")
	f.startGPU()
	f.submit(10, 5)
	f.waitAnswered(400)
	stopAt := time.Now()
	if err := stopping.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopping.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not exit within 30 s of SIGTERM")
	}
	took := time.Since(stopAt)
	if took > 12*time.Second {
		t.Errorf("the worker took %s to exit, more than its 10 s stop timeout", took)
	}
	res, err := f.result(f.id, 5*time.Minute)
	f.allAnswered(res, err)
	r := f.report("GPU worker SIGTERM", 1, res)
	if r.redone != 0 {
		t.Errorf("%d requests generated twice after a graceful stop, want 0", r.redone)
	}
	stopped := 0
	objects, _ := store.List(context.Background(), blob.Join(f.layout.Prefix, "chunks")+"/")
	for _, o := range objects {
		if run.IsAttemptResult(o.URI) {
			var a run.AttemptResult
			if blob.ReadJSON(context.Background(), store, o.URI, &a) == nil && a.Outcome == "stopped" {
				stopped++
			}
		}
	}
	if stopped == 0 {
		t.Error("no chunk attempt says its worker stopped")
	}
	t.Logf("RELIABILITY | GPU worker SIGTERM | exited %.1f s after the signal | %d chunk attempts handed back", took.Seconds(), stopped)
}

// retry and cancel say plainly when there is nothing to act on.
func TestRetryAndCancelSayWhatIsWrong(t *testing.T) {
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	putObject(t, "s3://"+stack.Bucket+"/ended/requests.jsonl", []byte(`{"custom_id":"a","prompt":"x"}`+"\n"))
	p := startVbatch(t, "worker", "--role", "gpu", "--engine", "sim", "--model", "fault/ended", "--gpus", "1")
	p.waitFor(t, "GPU worker ready", time.Minute)
	out, code := runVbatch(t, time.Minute, nil, "submit", "--input", "s3://"+stack.Bucket+"/ended/requests.jsonl",
		"--model", "fault/ended", "--id", "fault-ended", "--wait")
	if code != 0 {
		t.Fatalf("submit exited %d:\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"retry", "no-such-run"}, `no run "no-such-run"`},
		{[]string{"cancel", "no-such-run"}, `no run "no-such-run"`},
		{[]string{"cancel", "fault-ended"}, "run fault-ended has already ended"},
	} {
		out, code := runVbatch(t, time.Minute, nil, c.args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("vbatch %s: exit %d, want an error saying %q:\n%s", strings.Join(c.args, " "), code, c.want, out)
		}
	}
	// A run with nothing left to do is merged again and says so.
	out, code = runVbatch(t, time.Minute, nil, "retry", "fault-ended", "--wait", "--json")
	if code != 0 || !strings.Contains(out, `"retry_of": "fault-ended"`) || strings.Contains(out, `"retried_chunks"`) {
		t.Errorf("retry of a complete run: exit %d, want a result with no chunk retried:\n%s", code, out)
	}
}
