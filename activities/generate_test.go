package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/run"
)

// fakeEngine answers every request in order, except that a request whose
// custom_id is poison crashes it: the two requests before the poison one and
// everything after it are left in flight, as in a batching engine.
type fakeEngine struct {
	poison string
	// dieOnce makes the next Generate call die at once, as when another chunk's
	// request crashed the engine.
	dieOnce bool
	// block, when set, stops answering after that many outcomes until ctx ends.
	block int

	mu    sync.Mutex
	calls [][]string
	fed   int
}

func (e *fakeEngine) Generate(ctx context.Context, reqs []batchfile.Request, on func(engine.Outcome)) error {
	ids := make([]string, len(reqs))
	for i, r := range reqs {
		ids[i] = r.CustomID
	}
	e.mu.Lock()
	e.calls = append(e.calls, ids)
	die := e.dieOnce
	e.dieOnce = false
	e.mu.Unlock()
	if die {
		return fmt.Errorf("%w: killed", engine.ErrEngineDied)
	}
	stop := len(reqs)
	if p := slices.Index(ids, e.poison); p >= 0 {
		stop = max(p-2, 0)
	}
	for _, r := range reqs[:stop] {
		e.mu.Lock()
		e.fed++
		blocked := e.block > 0 && e.fed > e.block
		e.mu.Unlock()
		if blocked {
			<-ctx.Done()
			return ctx.Err()
		}
		on(engine.Outcome{Request: r, Result: &engine.Result{Text: "answer to " + r.CustomID, FinishReason: "stop", PromptTokens: 10, CompletionTokens: 5}})
	}
	if stop < len(reqs) {
		return fmt.Errorf("3 of %d requests unfinished: %w: crash_on matched", len(reqs), engine.ErrEngineDied)
	}
	return nil
}

func (e *fakeEngine) Ready() engine.Ready { return engine.Ready{Backend: "sim", Simulated: true} }
func (e *fakeEngine) Stats() engine.Stats { return engine.Stats{} }
func (e *fakeEngine) Close() error        { return nil }
func (e *fakeEngine) Calls() [][]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}
func (e *fakeEngine) Acquire(context.Context) (Lease, error) {
	return Lease{Engine: e, Release: func() {}, Exclusive: func(context.Context) (engine.Engine, func(), error) {
		e.mu.Lock()
		e.calls = append(e.calls, []string{"<exclusive>"})
		e.mu.Unlock()
		return e, func() {}, nil
	}}, nil
}

// chunkFixture is one planned chunk of n requests r01…rNN in a file:// run folder.
type chunkFixture struct {
	store  blob.Store
	layout run.Layout
	chunk  run.ChunkPlan
	reqs   []batchfile.Request
}

func newChunk(t *testing.T, n int) chunkFixture {
	t.Helper()
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	f := chunkFixture{store: store, layout: run.NewLayout("file://"+filepath.ToSlash(t.TempDir()), "run1"),
		chunk: run.ChunkPlan{Index: 3, Requests: n, FirstLine: 1, LastLine: n}}
	var lines []string
	for i := 1; i <= n; i++ {
		r := batchfile.Request{CustomID: fmt.Sprintf("r%02d", i), Line: i, Kind: batchfile.KindChat,
			Messages: json.RawMessage(`[{"role":"user","content":"hi"}]`)}
		f.reqs = append(f.reqs, r)
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	f.put(t, f.layout.Chunk(f.chunk.Index), strings.Join(lines, "\n")+"\n")
	return f
}

func (f chunkFixture) put(t *testing.T, uri, data string) {
	t.Helper()
	require.NoError(t, f.store.Put(context.Background(), uri, []byte(data)))
}

func (f chunkFixture) input(every int) GenerateInput {
	return GenerateInput{Run: f.layout, Chunk: f.chunk, Model: "m", CheckpointEvery: every, CheckpointSeconds: 1}
}

func (f chunkFixture) state(t *testing.T) run.ChunkState {
	t.Helper()
	st, err := run.LoadChunk(context.Background(), f.store, f.layout, f.chunk.Index)
	require.NoError(t, err)
	return st
}

// generateWithRetries runs GenerateChunk under a retry policy, as the workflow
// does, so that each attempt gets its own attempt number.
func generateWithRetries(ctx workflow.Context, in GenerateInput, attempts int, heartbeat time.Duration) (GenerateResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    heartbeat,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: int32(attempts)},
	})
	var g *GPU
	var res GenerateResult
	err := workflow.ExecuteActivity(ctx, g.GenerateChunk, in).Get(ctx, &res)
	return res, err
}

func runWithRetries(t *testing.T, g *GPU, in GenerateInput, attempts int) (GenerateResult, error) {
	t.Helper()
	return runWithHeartbeat(t, g, in, attempts, time.Minute)
}

func runWithHeartbeat(t *testing.T, g *GPU, in GenerateInput, attempts int, heartbeat time.Duration) (GenerateResult, error) {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.SetTestTimeout(time.Minute)
	env.RegisterWorkflow(generateWithRetries)
	env.RegisterActivity(g)
	env.ExecuteWorkflow(generateWithRetries, in, attempts, heartbeat)
	require.True(t, env.IsWorkflowCompleted())
	var res GenerateResult
	if err := env.GetWorkflowError(); err != nil {
		return res, err
	}
	require.NoError(t, env.GetWorkflowResult(&res))
	return res, nil
}

func TestResumeSkipsCheckpointedRequestsAndWritesPartsEveryN(t *testing.T) {
	f := newChunk(t, 10)
	// An earlier attempt checkpointed r01–r03, and a zombie wrote r03 again later.
	f.put(t, f.layout.Part(3, 1, 1), `{"custom_id":"r01","line":1,"text":"a"}`+"\n"+`{"custom_id":"r02","line":2,"text":"b"}`+"\n"+
		`{"custom_id":"r03","line":3,"text":"c"}`+"\n")
	f.put(t, f.layout.Part(3, 1, 2), `{"custom_id":"r03","line":3,"text":"zombie"}`+"\n")
	e := &fakeEngine{}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w1"}
	in := f.input(3)
	in.AttemptBase = 1 // this is the chunk's second attempt

	res, err := runWithRetries(t, g, in, 1)
	require.NoError(t, err)
	assert.Equal(t, 3, res.Resumed)
	assert.Equal(t, 10, res.Answered)
	assert.Equal(t, [][]string{{"r04", "r05", "r06", "r07", "r08", "r09", "r10"}}, e.Calls(), "only the unanswered requests are fed")
	st := f.state(t)
	assert.Len(t, st.Answers, 10)
	assert.Equal(t, "c", st.Answers["r03"].Text, "the first answer per custom_id wins")
	assert.Equal(t, 2+3, st.Parts, "7 answers at 3 a part make 3 parts")
	var result run.AttemptResult
	require.NoError(t, blob.ReadJSON(context.Background(), f.store, f.layout.AttemptResult(3, 2), &result))
	assert.Equal(t, "completed", result.Outcome)
	assert.Equal(t, 3, result.Parts)
}

// A request that crashes the engine is found without blaming the requests in
// flight with it: it is recorded as engine_error, the rest of its chunk answered.
func TestPoisonRequestIsBlamedAloneAndTheRestOfTheChunkAnswered(t *testing.T) {
	f := newChunk(t, 12)
	e := &fakeEngine{poison: "r05"}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w1"}

	res, err := runWithRetries(t, g, f.input(4), 5)
	require.NoError(t, err)
	assert.Equal(t, 4, res.Attempt, "deaths: shared, group, alone; the fourth attempt finishes")
	assert.Equal(t, 11, res.Answered)
	assert.Equal(t, 1, res.Failed)
	assert.Equal(t, 1, res.Blamed)

	st := f.state(t)
	require.Len(t, st.Answers, 12)
	for id, a := range st.Answers {
		if id == "r05" {
			require.NotNil(t, a.Error)
			assert.Equal(t, batchfile.CodeEngineError, a.Error.Code)
			assert.Contains(t, a.Error.Message, "engine died 3 times")
		} else {
			assert.Nil(t, a.Error, "%s is innocent", id)
		}
	}
	require.Len(t, st.Deaths, 3)
	assert.False(t, st.Deaths[0].Alone)
	assert.Equal(t, []string{"r03", "r04", "r05", "r06", "r07", "r08", "r09", "r10", "r11", "r12"}, st.Deaths[0].InFlight)
	assert.True(t, st.Deaths[1].Alone, "the suspects ran with the engine to themselves")
	assert.Equal(t, []string{"r05"}, st.Deaths[2].InFlight)
	assert.True(t, st.Deaths[2].Alone)

	calls := e.Calls()
	assert.Equal(t, []string{"<exclusive>"}, calls[1], "attempt 2 has the engine to itself")
	assert.Len(t, calls[2], 10, "and feeds the suspects as one group")
	assert.Equal(t, [][]string{{"<exclusive>"}, {"r03"}, {"r04"}, {"r05"}}, calls[3:7], "attempt 3 feeds them one at a time")
	assert.Equal(t, []string{"r06", "r07", "r08", "r09", "r10", "r11", "r12"}, calls[7], "attempt 4 feeds the rest as usual, never r05")
}

// A chunk whose engine was crashed by another chunk's request clears its suspects
// in one exclusive pass, and nobody is blamed.
func TestInnocentChunkOfASharedDeathClearsItsSuspectsInOnePass(t *testing.T) {
	f := newChunk(t, 6)
	e := &fakeEngine{dieOnce: true}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w1"}
	res, err := runWithRetries(t, g, f.input(4), 5)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempt)
	assert.Equal(t, 6, res.Answered)
	assert.Zero(t, res.Blamed)
	assert.Equal(t, [][]string{{"r01", "r02", "r03", "r04", "r05", "r06"}, {"<exclusive>"}, {"r01", "r02", "r03", "r04", "r05", "r06"}}, e.Calls())
}

// A retry redoes the engine errors of the earlier run, numbers its attempts after
// the earlier ones, and holds none of the earlier deaths against anyone.
func TestRetryRedoesEarlierEngineErrorsAfterTheEarlierAttempts(t *testing.T) {
	f := newChunk(t, 4)
	f.put(t, f.layout.Part(3, 2, 1), `{"custom_id":"r01","line":1,"text":"a","attempt":2}`+"\n"+
		`{"custom_id":"r02","line":2,"error":{"code":"engine_error","message":"crashed the engine"},"attempt":2}`+"\n"+
		`{"custom_id":"r03","line":3,"error":{"code":"prompt_too_long","message":"too long"},"attempt":2}`+"\n")
	for a := 1; a <= 2; a++ {
		require.NoError(t, blob.WriteJSON(context.Background(), f.store, f.layout.Death(3, a),
			run.EngineDeath{Chunk: 3, Attempt: a, InFlight: []string{"r02", "r04"}, Alone: a == 2}))
	}
	e := &fakeEngine{}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w1"}
	in := f.input(10)
	in.AttemptBase, in.RetryEngineErrors = 2, true

	res, err := runWithRetries(t, g, in, 1)
	require.NoError(t, err)
	assert.Equal(t, 3, res.Attempt)
	assert.Equal(t, [][]string{{"r02", "r04"}}, e.Calls(), "engine errors and missing answers are redone, other errors kept; no probing")
	st := f.state(t)
	assert.Nil(t, st.Answers["r02"].Error, "the retry's answer replaces the engine error")
	assert.Equal(t, 3, st.Answers["r02"].Attempt)
	assert.NotNil(t, st.Answers["r03"].Error)
	assert.Equal(t, 3, st.LastAttempt)
}

// On the worker's graceful stop a chunk aborts what is in flight, checkpoints what
// finished and fails retryably, without blaming the engine.
func TestWorkerStopCheckpointsAndFailsRetryably(t *testing.T) {
	f := newChunk(t, 8)
	e := &fakeEngine{block: 5}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w1"}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(g)
	stop := make(chan struct{})
	env.SetWorkerStopChannel(stop)
	go func() {
		for f.stateAnswered(e) < 5 {
			time.Sleep(5 * time.Millisecond)
		}
		close(stop)
	}()
	_, err := env.ExecuteActivity(g.GenerateChunk, f.input(100))
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, ErrTypeWorkerStopping, appErr.Type())
	assert.False(t, appErr.NonRetryable())
	st := f.state(t)
	assert.Len(t, st.Answers, 5, "the finished answers are checkpointed")
	assert.Empty(t, st.Deaths, "a stopping worker is no engine death")
}

func (f chunkFixture) stateAnswered(e *fakeEngine) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return min(e.fed, e.block)
}

func TestWrongModelIsAConfigError(t *testing.T) {
	f := newChunk(t, 2)
	g := &GPU{Store: f.store, Engines: &fakeEngine{}, Model: "other", Worker: "w1"}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(g)
	_, err := env.ExecuteActivity(g.GenerateChunk, f.input(10))
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, ErrTypeConfig, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, err.Error(), `serves model "other", not "m"`)
}

func TestInjectedFaultFailsTheChunkEveryAttempt(t *testing.T) {
	f := newChunk(t, 2)
	g := &GPU{Store: f.store, Engines: &fakeEngine{}, Model: "m", Worker: "w1", FaultFailChunks: []int{3}}
	_, err := runWithRetries(t, g, f.input(10), 3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "injected fault")
	assert.Empty(t, f.state(t).Answers)
}

// flakyStore refuses every write while down is set, as a stopped S3 server does,
// and can be slow to open objects, as an S3 client retrying a refused connection is.
type flakyStore struct {
	blob.Store
	mu       sync.Mutex
	down     bool
	slowOpen time.Duration
	// refused counts the writes refused.
	refused int
}

func (s *flakyStore) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	s.mu.Lock()
	wait := s.slowOpen
	s.slowOpen = 0
	s.mu.Unlock()
	time.Sleep(wait)
	return s.Store.Open(ctx, uri)
}

func (s *flakyStore) setDown(v bool) { s.mu.Lock(); s.down = v; s.mu.Unlock() }

// refuse says whether the store is down, counting the write it refuses.
func (s *flakyStore) refuse() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		s.refused++
	}
	return s.down
}

func (s *flakyStore) Create(ctx context.Context, uri string) (blob.Writer, error) {
	if s.refuse() {
		return nil, errors.New("connection refused")
	}
	return s.Store.Create(ctx, uri)
}

func (s *flakyStore) Put(ctx context.Context, uri string, body []byte) error {
	if s.refuse() {
		return errors.New("connection refused")
	}
	return s.Store.Put(ctx, uri, body)
}

// A storage outage shorter than the limit costs the attempt nothing: answers wait
// in memory and are written once storage is back.
func TestCheckpointsRideOutAStorageOutage(t *testing.T) {
	f := newChunk(t, 6)
	flaky := &flakyStore{Store: f.store}
	flaky.setDown(true)
	time.AfterFunc(1500*time.Millisecond, func() { flaky.setDown(false) })
	g := &GPU{Store: flaky, Engines: &fakeEngine{}, Model: "m", Worker: "w1"}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(g)
	val, err := env.ExecuteActivity(g.GenerateChunk, f.input(2))
	require.NoError(t, err)
	var res GenerateResult
	require.NoError(t, val.Get(&res))
	assert.Equal(t, 6, res.Answered)
	assert.Positive(t, flaky.refused, "writes were refused meanwhile")
	assert.Len(t, f.state(t).Answers, 6)
}

// An attempt keeps heartbeating while storage holds it up, at its start and in its
// final checkpoint: Temporal must not take it for dead and start a second attempt
// that would generate the same answers again.
func TestSlowStorageDoesNotLookLikeADeadAttempt(t *testing.T) {
	f := newChunk(t, 6)
	flaky := &flakyStore{Store: f.store, slowOpen: 2 * time.Second}
	e := &fakeEngine{}
	// The engine's last answer takes storage down for longer than the heartbeat
	// timeout; it comes back while the final checkpoint retries.
	g := &GPU{Store: flaky, Engines: &outageAtEnd{fakeEngine: e, store: flaky, outage: 2500 * time.Millisecond}, Model: "m", Worker: "w1"}
	res, err := runWithHeartbeat(t, g, f.input(100), 3, 1500*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Attempt, "no heartbeat timeout, no second attempt")
	assert.Equal(t, 6, res.Answered)
	assert.Positive(t, flaky.refused)
	st := f.state(t)
	assert.Len(t, st.Answers, 6)
	assert.Equal(t, 1, st.Parts)
}

// outageAtEnd takes its store down as its engine finishes, and up again later.
type outageAtEnd struct {
	*fakeEngine
	store  *flakyStore
	outage time.Duration
}

func (o *outageAtEnd) Acquire(ctx context.Context) (Lease, error) {
	l, err := o.fakeEngine.Acquire(ctx)
	l.Engine = o
	return l, err
}

func (o *outageAtEnd) Generate(ctx context.Context, reqs []batchfile.Request, on func(engine.Outcome)) error {
	err := o.fakeEngine.Generate(ctx, reqs, on)
	o.store.setDown(true)
	time.AfterFunc(o.outage, func() { o.store.setDown(false) })
	return err
}
