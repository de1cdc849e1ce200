package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vbatch/vbatch/internal/batchfile"
)

func requirePython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not on PATH; the runner tests start real runner processes")
	}
}

func startSim(t *testing.T, sim SimConfig, settings Settings, logger *zap.Logger) *Process {
	t.Helper()
	requirePython(t)
	p, err := StartProcess(context.Background(), ProcessConfig{
		Backend: BackendSim, Model: "sim-model", Settings: settings, Sim: sim, Logger: logger,
		ReadyTimeout: time.Minute,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

var jsonSchemaFormat = json.RawMessage(`{"type":"json_schema","json_schema":{"name":"evaluation","schema":{"type":"object"}}}`)

func chat(customID, content string, edit func(*batchfile.Sampling)) batchfile.Request {
	msgs, _ := json.Marshal([]map[string]string{
		{"role": "system", "content": "You evaluate job candidates."},
		{"role": "user", "content": content},
	})
	r := batchfile.Request{CustomID: customID, Kind: batchfile.KindChat, Messages: msgs}
	if edit != nil {
		edit(&r.Sampling)
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// generate runs one Generate call and returns its outcomes by custom_id, failing
// the test on a second outcome for the same request.
func generate(t *testing.T, ctx context.Context, p *Process, reqs []batchfile.Request) (map[string]Outcome, error) {
	t.Helper()
	got := make(map[string]Outcome)
	var dup []string
	err := p.Generate(ctx, reqs, func(o Outcome) {
		if _, seen := got[o.Request.CustomID]; seen {
			dup = append(dup, o.Request.CustomID)
		}
		got[o.Request.CustomID] = o
	})
	assert.Empty(t, dup, "requests with more than one outcome")
	return got, err
}

// evaluation is the seed report's candidate-evaluation answer, every field required.
type evaluation struct {
	Recommendation string `json:"recommendation"`
	Reasoning      string `json:"reasoning"`
	Analysis       struct {
		EducationalPedigree ratedReason `json:"educational_pedigree"`
		CompanyPedigree     ratedReason `json:"company_pedigree"`
		Trajectory          ratedReason `json:"trajectory"`
		IsSoftwareEngineer  struct {
			Value     *bool  `json:"value"`
			Reasoning string `json:"reasoning"`
		} `json:"is_software_engineer"`
	} `json:"analysis"`
}

type ratedReason struct {
	Rating    string `json:"rating"`
	Reasoning string `json:"reasoning"`
}

func checkEvaluation(t *testing.T, customID, text string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	var ev evaluation
	require.NoError(t, dec.Decode(&ev), "%s: answer is not the evaluation JSON: %s", customID, text)
	assert.Contains(t, []string{"Strong Yes", "Yes", "Maybe", "No", "Strong No"}, ev.Recommendation, customID)
	assert.NotEmpty(t, ev.Reasoning, customID)
	for name, r := range map[string]ratedReason{
		"educational_pedigree": ev.Analysis.EducationalPedigree,
		"company_pedigree":     ev.Analysis.CompanyPedigree,
		"trajectory":           ev.Analysis.Trajectory,
	} {
		assert.Contains(t, []string{"Great", "Good", "Okay", "Poor"}, r.Rating, "%s %s", customID, name)
		assert.NotEmpty(t, r.Reasoning, "%s %s", customID, name)
	}
	assert.NotNil(t, ev.Analysis.IsSoftwareEngineer.Value, "%s is_software_engineer.value", customID)
	assert.NotEmpty(t, ev.Analysis.IsSoftwareEngineer.Reasoning, customID)
}

func TestProcessAnswersEveryRequestOnce(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p := startSim(t, SimConfig{TokensPerSecond: 1e6, BatchSize: 64}, Settings{}, zap.New(core))

	ready := p.Ready()
	assert.Equal(t, BackendSim, ready.Backend)
	assert.True(t, ready.Simulated)
	assert.Equal(t, "sim-model", ready.Model)
	assert.Equal(t, 4096, ready.MaxModelLen)
	assert.Equal(t, 64*4096, ready.KVCacheTokens)
	assert.Greater(t, ready.LoadSeconds, 0.1, "the sim's load sleeps 0.2 s")
	assert.NotEmpty(t, ready.Versions["python"])

	var reqs []batchfile.Request
	for i := range 200 {
		resume := fmt.Sprintf("Candidate %d. %s", i, strings.Repeat("Worked on distributed systems. ", i%40))
		req := chat(fmt.Sprintf("cand-%03d", i), resume, nil)
		if i%2 == 0 {
			req.Sampling.ResponseFormat = jsonSchemaFormat
		}
		reqs = append(reqs, req)
	}
	got, err := generate(t, context.Background(), p, reqs)
	require.NoError(t, err)
	require.Len(t, got, 200)

	var prompt, completion int64
	var engineSeconds float64
	for i, req := range reqs {
		o := got[req.CustomID]
		require.Nil(t, o.Err, req.CustomID)
		require.NotNil(t, o.Result, req.CustomID)
		r := o.Result
		assert.Greater(t, r.EngineSeconds, 0.0, req.CustomID)
		engineSeconds += r.EngineSeconds
		assert.Equal(t, "stop", r.FinishReason, req.CustomID)
		// The simulated tokenizer: 4 bytes a token, over every message's content.
		wantPrompt := (len("You evaluate job candidates.") + len(messageContent(t, req)) + 3) / 4
		assert.Equal(t, wantPrompt, r.PromptTokens, req.CustomID)
		assert.Equal(t, (len(r.Text)+3)/4, r.CompletionTokens, req.CustomID)
		assert.GreaterOrEqual(t, r.CompletionTokens, 240, req.CustomID)
		assert.LessOrEqual(t, r.CompletionTokens, 372, req.CustomID)
		if i%2 == 0 {
			checkEvaluation(t, req.CustomID, r.Text)
		} else {
			assert.False(t, json.Valid([]byte(r.Text)), "%s asked for no JSON but got JSON", req.CustomID)
		}
		prompt += int64(r.PromptTokens)
		completion += int64(r.CompletionTokens)
	}
	mean := float64(completion) / 200
	assert.InDelta(t, 310, mean, 20, "mean completion tokens, as the seed's 308")

	st := p.Stats()
	assert.Equal(t, int64(200), st.Submitted)
	assert.Equal(t, int64(200), st.Finished)
	assert.Equal(t, int64(0), st.InFlight)
	assert.Equal(t, prompt, st.PromptTokens)
	assert.Equal(t, completion, st.CompletionTokens)
	assert.Greater(t, st.BusySeconds, 0.0)
	// The requests' shares of the busy time add up to it: nothing is counted twice.
	assert.InDelta(t, st.BusySeconds, engineSeconds, 0.01*st.BusySeconds)
	// Empty now, it says for how long: when it last worked.
	time.Sleep(20 * time.Millisecond)
	assert.GreaterOrEqual(t, p.Stats().IdleSeconds, 0.02)

	// Every log line of a simulated engine says so.
	require.NotZero(t, logs.Len())
	for _, e := range logs.All() {
		if !strings.HasPrefix(e.Message, "vbatch-runner") {
			continue // the worker's own entries (engine ready), tagged by field
		}
		assert.Contains(t, e.Message, "SIMULATED", "log line of the sim runner")
		assert.Equal(t, true, e.ContextMap()["simulated"], e.Message)
		assert.EqualValues(t, p.PID(), e.ContextMap()["pid"])
	}

	// Another process answers the same requests with the same text.
	q := startSim(t, SimConfig{TokensPerSecond: 1e6, BatchSize: 7}, Settings{}, nil)
	again, err := generate(t, context.Background(), q, reqs)
	require.NoError(t, err)
	for _, req := range reqs {
		require.NotNil(t, again[req.CustomID].Result, req.CustomID)
		assert.Equal(t, got[req.CustomID].Result.Text, again[req.CustomID].Result.Text, req.CustomID)
	}
}

func messageContent(t *testing.T, req batchfile.Request) string {
	t.Helper()
	var msgs []map[string]string
	require.NoError(t, json.Unmarshal(req.Messages, &msgs))
	return msgs[len(msgs)-1]["content"]
}

func TestProcessConcurrentCallsAndAbort(t *testing.T) {
	// 200 work tokens/s per running request, two at a time: a full answer (~310
	// tokens) takes about 1.5 s, a 20-token one 0.1 s.
	p := startSim(t, SimConfig{TokensPerSecond: 400, BatchSize: 2}, Settings{}, nil)
	short := func(id string) batchfile.Request {
		return chat(id, "short "+id, func(s *batchfile.Sampling) { s.MaxTokens = ptr(20) })
	}

	t.Run("two calls share the engine and get only their own outcomes", func(t *testing.T) {
		var wg sync.WaitGroup
		results := make([]map[string]Outcome, 2)
		errs := make([]error, 2)
		for c := range 2 {
			wg.Go(func() {
				var reqs []batchfile.Request
				for i := range 3 {
					reqs = append(reqs, short(fmt.Sprintf("call%d-%d", c, i)))
				}
				results[c], errs[c] = generate(t, context.Background(), p, reqs)
			})
		}
		wg.Wait()
		for c := range 2 {
			require.NoError(t, errs[c])
			require.Len(t, results[c], 3)
			for id, o := range results[c] {
				assert.True(t, strings.HasPrefix(id, fmt.Sprintf("call%d-", c)), "call %d got %s", c, id)
				require.NotNil(t, o.Result, id)
				assert.Equal(t, 20, o.Result.CompletionTokens, id)
				assert.Equal(t, "length", o.Result.FinishReason, id)
			}
		}
	})

	t.Run("cancel aborts promptly and frees the batch", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		long := []batchfile.Request{chat("long-0", "long one", nil), chat("long-1", "long two", nil)}
		errc := make(chan error, 1)
		var outcomes int
		go func() {
			errc <- p.Generate(ctx, long, func(Outcome) { outcomes++ })
		}()
		time.Sleep(150 * time.Millisecond)
		cancelled := time.Now()
		cancel()
		select {
		case err := <-errc:
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(cancelled), 200*time.Millisecond)
		case <-time.After(time.Second):
			t.Fatal("Generate did not return within 1 s of its context's cancel")
		}
		assert.Zero(t, outcomes)
		assert.Equal(t, int64(0), p.Stats().InFlight)

		// Had the aborted answers kept their batch slots, these would wait ~1.4 s.
		start := time.Now()
		got, err := generate(t, context.Background(), p, []batchfile.Request{short("after-0"), short("after-1")})
		require.NoError(t, err)
		assert.Len(t, got, 2)
		assert.Less(t, time.Since(start), 800*time.Millisecond, "aborted requests still occupy the engine")
		select {
		case <-p.Done():
			t.Fatal("the engine exited")
		default:
		}
	})
}

func TestProcessPerRequestErrors(t *testing.T) {
	p := startSim(t, SimConfig{TokensPerSecond: 1e6}, Settings{MaxModelLen: 512}, nil)
	reqs := []batchfile.Request{
		chat("ok", "fine", nil),
		chat("too-long", strings.Repeat("x", 4000), nil), // 1000+ tokens > 512
		chat("n2", "fine", func(s *batchfile.Sampling) { s.N = ptr(2) }),
		chat("logprobs", "fine", func(s *batchfile.Sampling) { s.Logprobs = true }),
		chat("capped", "fine", func(s *batchfile.Sampling) { s.MaxTokens = ptr(5) }),
		// 400 prompt tokens leave 112 of the 512-token context for the answer.
		chat("context-full", strings.Repeat("y", 1600-len("You evaluate job candidates.")), nil),
	}
	got, err := generate(t, context.Background(), p, reqs)
	require.NoError(t, err, "per-request failures are outcomes, not a failed call")
	require.Len(t, got, len(reqs))

	wantErr := map[string]string{
		"too-long": batchfile.CodePromptTooLong,
		"n2":       batchfile.CodeInvalidRequest,
		"logprobs": batchfile.CodeInvalidRequest,
	}
	for id, code := range wantErr {
		o := got[id]
		require.NotNil(t, o.Err, id)
		assert.Nil(t, o.Result, id)
		assert.Equal(t, code, o.Err.Code, id)
	}
	assert.Contains(t, got["too-long"].Err.Message, "max_model_len is 512")
	assert.Contains(t, got["n2"].Err.Message, "n>1")
	assert.Contains(t, got["logprobs"].Err.Message, "logprobs")

	require.NotNil(t, got["ok"].Result)
	assert.Equal(t, "stop", got["ok"].Result.FinishReason)
	require.NotNil(t, got["capped"].Result)
	assert.Equal(t, "length", got["capped"].Result.FinishReason)
	assert.Equal(t, 5, got["capped"].Result.CompletionTokens)
	assert.Len(t, got["capped"].Result.Text, 20)
	require.NotNil(t, got["context-full"].Result)
	assert.Equal(t, 400, got["context-full"].Result.PromptTokens)
	assert.Equal(t, 112, got["context-full"].Result.CompletionTokens)
	assert.Equal(t, "length", got["context-full"].Result.FinishReason)

	st := p.Stats()
	assert.Equal(t, int64(6), st.Finished, "errors are finished requests too")
	assert.Equal(t, int64(0), st.InFlight)
}

// Requests are encoded only as they are written to the runner; one that cannot be
// encoded is that request's error, not the call's.
func TestProcessRefusesARequestItCannotEncode(t *testing.T) {
	p := startSim(t, SimConfig{TokensPerSecond: 1e6}, Settings{}, nil)
	broken := chat("broken", "fine", nil)
	broken.Messages = json.RawMessage(`[{"role":`)
	reqs := []batchfile.Request{chat("before", "fine", nil), broken, chat("after", "fine", nil)}
	got, err := generate(t, context.Background(), p, reqs)
	require.NoError(t, err)
	require.Len(t, got, len(reqs))
	require.NotNil(t, got["broken"].Err)
	assert.Equal(t, batchfile.CodeInvalidRequest, got["broken"].Err.Code)
	assert.Contains(t, got["broken"].Err.Message, "cannot encode the request for the engine")
	for _, id := range []string{"before", "after"} {
		require.NotNil(t, got[id].Result, id)
		assert.Equal(t, "stop", got[id].Result.FinishReason, id)
	}
	st := p.Stats()
	assert.Equal(t, int64(3), st.Finished)
	assert.Equal(t, int64(0), st.InFlight)
}

func TestProcessKilledMidGenerate(t *testing.T) {
	p := startSim(t, SimConfig{TokensPerSecond: 200, BatchSize: 4}, Settings{}, nil)
	var reqs []batchfile.Request
	for i := range 8 {
		reqs = append(reqs, chat(fmt.Sprintf("r%d", i), "resume", nil))
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Generate(context.Background(), reqs, func(Outcome) {}) }()
	require.Eventually(t, func() bool { return p.Stats().InFlight == 8 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond)

	killed := time.Now()
	require.NoError(t, syscall.Kill(p.PID(), syscall.SIGKILL))
	select {
	case err := <-errc:
		assert.Less(t, time.Since(killed), time.Second)
		require.ErrorIs(t, err, ErrEngineDied)
		assert.Contains(t, err.Error(), "8 of 8 requests unfinished")
		assert.Contains(t, err.Error(), "signal: killed")
	case <-time.After(time.Second):
		t.Fatal("Generate did not return within 1 s of the engine's death")
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done is not closed after the engine died")
	}
	assert.ErrorIs(t, p.Err(), ErrEngineDied)
	assert.Equal(t, int64(0), p.Stats().InFlight)

	err := p.Generate(context.Background(), reqs[:1], func(Outcome) { t.Error("outcome from a dead engine") })
	assert.ErrorIs(t, err, ErrEngineDied)
}

func TestProcessCrashOn(t *testing.T) {
	// One request at a time: the three before the poisoned one finish, and their
	// answers reach the caller before the engine dies.
	p := startSim(t, SimConfig{TokensPerSecond: 1e5, BatchSize: 1, CrashOn: "POISON"}, Settings{}, nil)
	reqs := []batchfile.Request{
		chat("a", "fine", nil), chat("b", "fine too", nil), chat("c", "also fine", nil),
		chat("poisoned", "a resume with POISON in it", nil), chat("d", "never runs", nil),
	}
	got, err := generate(t, context.Background(), p, reqs)
	require.ErrorIs(t, err, ErrEngineDied)
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Contains(t, err.Error(), "2 of 5 requests unfinished")
	assert.Len(t, got, 3)
	for _, id := range []string{"a", "b", "c"} {
		assert.NotNil(t, got[id].Result, id)
	}
	<-p.Done()
	assert.ErrorIs(t, p.Err(), ErrEngineDied)
	assert.Contains(t, p.Err().Error(), "crash_on", "the error carries the runner's last log lines")
}

// workTokens is what the sim charges for an answer: every prompt and completion
// token alike (the default prefill factor of 1).
func workTokens(outcomes map[string]Outcome) float64 {
	var w float64
	for _, o := range outcomes {
		w += float64(o.Result.PromptTokens + o.Result.CompletionTokens)
	}
	return w
}

func TestSimThroughputModel(t *testing.T) {
	const tps, batch = 20000.0, 16
	// The prompts are alike: with the prefix cache on, their prefill would be skipped
	// and the rate would measure the cache, not the batch.
	p := startSim(t, SimConfig{TokensPerSecond: tps, BatchSize: batch}, Settings{EnablePrefixCaching: ptr(false)}, nil)
	// Equal requests (every answer cut at 200 tokens), so the batch runs in full waves.
	req := func(i int) batchfile.Request {
		return chat(fmt.Sprintf("t%03d", i), strings.Repeat("r", 400), func(s *batchfile.Sampling) { s.MaxTokens = ptr(200) })
	}

	var full []batchfile.Request
	for i := range 64 {
		full = append(full, req(i))
	}
	start := time.Now()
	got, err := generate(t, context.Background(), p, full)
	require.NoError(t, err)
	fullRate := workTokens(got) / time.Since(start).Seconds()
	assert.InEpsilon(t, tps, fullRate, 0.25, "a full batch runs at tokens_per_second")

	// Two requests at a time keep 2 of 16 slots busy: an eighth of the rate.
	var work, secs float64
	for round := range 4 {
		start := time.Now()
		got, err := generate(t, context.Background(), p, []batchfile.Request{req(100 + 2*round), req(101 + 2*round)})
		require.NoError(t, err)
		secs += time.Since(start).Seconds()
		work += workTokens(got)
	}
	lowRate := work / secs
	t.Logf("full batch %.0f work tokens/s, 2 in flight %.0f (ratio %.2f, model %d)", fullRate, lowRate, fullRate/lowRate, batch/2)
	assert.InEpsilon(t, float64(batch)/2, fullRate/lowRate, 0.25)
}

func TestProcessClose(t *testing.T) {
	p := startSim(t, SimConfig{TokensPerSecond: 100, BatchSize: 1}, Settings{}, nil)
	errc := make(chan error, 1)
	go func() {
		errc <- p.Generate(context.Background(), []batchfile.Request{chat("slow", "resume", nil)}, func(Outcome) {})
	}()
	require.Eventually(t, func() bool { return p.Stats().InFlight == 1 }, 5*time.Second, 5*time.Millisecond)

	start := time.Now()
	require.NoError(t, p.Close())
	t.Logf("Close took %s", time.Since(start))
	assert.Less(t, time.Since(start), 5*time.Second, "shutdown aborts outstanding work, it does not wait for it")
	assert.ErrorIs(t, <-errc, ErrEngineDied, "an outstanding call learns the engine is gone")
	assert.NoError(t, p.Err(), "a clean close is no death")
	require.NoError(t, p.Close(), "Close twice")

	err := p.Generate(context.Background(), []batchfile.Request{chat("late", "x", nil)}, func(Outcome) {})
	assert.ErrorIs(t, err, ErrEngineDied)
	assert.Contains(t, err.Error(), "closed")
}

func TestStartProcessFailures(t *testing.T) {
	requirePython(t)
	t.Run("unknown backend", func(t *testing.T) {
		_, err := StartProcess(context.Background(), ProcessConfig{Backend: "tensorrt"})
		assert.ErrorContains(t, err, `unknown backend "tensorrt"`)
	})
	t.Run("backend that cannot load", func(t *testing.T) {
		if exec.Command("python3", "-c", "import vllm").Run() == nil {
			t.Skip("vllm is importable here; this case needs a host without it")
		}
		var logs bytes.Buffer
		logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(&logs), zapcore.DebugLevel))
		_, err := StartProcess(context.Background(), ProcessConfig{Backend: BackendVLLM, Model: "m", Logger: logger})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "exited before it was ready")
		assert.Contains(t, err.Error(), "vllm backend: No module named 'vllm'")
		assert.Contains(t, err.Error(), "exit status 2")
		assert.Contains(t, logs.String(), "ModuleNotFoundError", "the runner's traceback is in the worker's log")
	})
	t.Run("python missing", func(t *testing.T) {
		_, err := StartProcess(context.Background(), ProcessConfig{Backend: BackendSim, Python: "no-such-python-3"})
		assert.ErrorContains(t, err, "no-such-python-3")
	})
	t.Run("start cancelled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := StartProcess(ctx, ProcessConfig{Backend: BackendSim, Sim: SimConfig{LoadSeconds: 30}})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestRunnerLogLevel(t *testing.T) {
	for _, tc := range []struct {
		line     string
		previous zapcore.Level
		want     zapcore.Level
	}{
		{"vbatch-runner[sim: SIMULATED, no real inference] INFO loaded", zapcore.ErrorLevel, zapcore.InfoLevel},
		{"vbatch-runner[vllm] WARNING low memory", zapcore.InfoLevel, zapcore.WarnLevel},
		{"vbatch-runner[vllm] CRITICAL uncaught exception", zapcore.InfoLevel, zapcore.ErrorLevel},
		{"vbatch-runner[vllm] Traceback (most recent call last):", zapcore.ErrorLevel, zapcore.ErrorLevel},
		{"INFO 11-27 vllm printing on its own", zapcore.ErrorLevel, zapcore.InfoLevel},
	} {
		assert.Equal(t, tc.want, runnerLogLevel(tc.line, tc.previous), tc.line)
	}
}

func TestSimulated(t *testing.T) {
	assert.True(t, Simulated(BackendSim))
	assert.False(t, Simulated(BackendVLLM))
	assert.False(t, Simulated(BackendTransformers))
}

// TestRunnerPythonUnitTests runs runner.py's own unittest file.
func TestRunnerPythonUnitTests(t *testing.T) {
	requirePython(t)
	cmd := exec.Command("python3", "-B", "-m", "unittest", "-v", "test_runner")
	cmd.Dir = "runner"
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "python3 -m unittest test_runner:\n%s", out)
	assert.Contains(t, string(out), "OK")
}
