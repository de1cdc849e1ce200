package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// The runner's vllm backend, through the real process protocol, against the
// stand-in vllm package of runner/contract (see its README): it mimics the names,
// arguments and outputs of the vLLM API the backend calls, so these tests run
// wherever python3 does.

var evaluationSchema = json.RawMessage(`{"type":"json_schema","json_schema":{"name":"evaluation","schema":{
	"type":"object","properties":{"recommendation":{"type":"string","enum":["Yes","No"]},
	"score":{"type":"number"},"is_software_engineer":{"type":"boolean"}}}}}`)

func startFakeVLLM(t *testing.T, model string, env ...string) (*Process, *observer.ObservedLogs, error) {
	t.Helper()
	requirePython(t)
	contract, err := filepath.Abs(filepath.Join("runner", "contract"))
	require.NoError(t, err)
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := StartProcess(context.Background(), ProcessConfig{
		Backend: BackendVLLM,
		Model:   model,
		Settings: Settings{
			GPUMemoryUtilization: 0.5, MaxModelLen: 512, EnablePrefixCaching: ptr(true),
			TensorParallelSize: 1, KVCacheDtype: "auto", LoadFormat: "dummy",
		},
		Env:          append([]string{"PYTHONPATH=" + contract, "VBATCH_FAKE_VLLM_STEP_SECONDS=0.005"}, env...),
		Logger:       zap.New(core),
		ReadyTimeout: time.Minute,
	})
	if err == nil {
		t.Cleanup(func() { _ = p.Close() })
	}
	return p, logs, err
}

// chatML is the stand-in tokenizer's chat template rendered for req, with the
// assistant's turn opened: one token a byte.
func chatML(t *testing.T, req batchfile.Request) string {
	t.Helper()
	var msgs []map[string]string
	require.NoError(t, json.Unmarshal(req.Messages, &msgs))
	var b strings.Builder
	b.WriteString("<s>")
	for _, m := range msgs {
		b.WriteString("<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n")
	}
	b.WriteString("<|im_start|>assistant\n")
	return b.String()
}

func TestVLLMContractReady(t *testing.T) {
	p, _, err := startFakeVLLM(t, "fake/model")
	require.NoError(t, err)
	r := p.Ready()
	assert.Equal(t, BackendVLLM, r.Backend)
	assert.False(t, r.Simulated)
	assert.Equal(t, "fake/model", r.Model)
	assert.Equal(t, 512, r.MaxModelLen)
	assert.Equal(t, 2048*16, r.KVCacheTokens, "num_gpu_blocks × block_size at 0.5 of the fake GPU")
	assert.Equal(t, 7.166, r.WeightsGiB, "read from the engine core's log line")
	assert.Equal(t, 4.0, r.KVCacheGiB)
	assert.Equal(t, 0.52, r.GraphsGiB)
	assert.Equal(t, 64.0, r.MaxConcurrency)
	assert.Equal(t, "0.11.0+vbatch.contract", r.Versions["vllm"])
	assert.Equal(t, 1, r.TensorParallel)
	assert.True(t, r.PrefixCaching)
	assert.Equal(t, 0.5, r.GPUMemoryUtilize)
	assert.Greater(t, r.LoadSeconds, 0.0)
}

func TestVLLMContractGenerate(t *testing.T) {
	p, _, err := startFakeVLLM(t, "fake/model")
	require.NoError(t, err)

	long := chat("long", "Resume of a long-winded candidate", nil)
	short := chat("short", "Resume of a brief one", func(s *batchfile.Sampling) { s.MaxTokens = ptr(3) })
	schema := chat("schema", "Resume to score", func(s *batchfile.Sampling) { s.ResponseFormat = evaluationSchema })
	completion := batchfile.Request{CustomID: "completion", Kind: batchfile.KindCompletion, Prompt: "Once upon a time"}
	reqs := []batchfile.Request{
		long, short, schema, completion,
		chat("too-long", strings.Repeat("x", 600), nil),
		chat("cold", "x", func(s *batchfile.Sampling) { s.Temperature = ptr(-1.0) }),
		chat("wide", "x", func(s *batchfile.Sampling) { s.TopP = ptr(1.5) }),
	}
	var order []string
	arrived := map[string]time.Time{}
	got := map[string]Outcome{}
	require.NoError(t, p.Generate(context.Background(), reqs, func(o Outcome) {
		order = append(order, o.Request.CustomID)
		arrived[o.Request.CustomID] = time.Now()
		got[o.Request.CustomID] = o
	}))
	require.Len(t, got, len(reqs))

	// Per-request failures are that request's alone.
	for id, want := range map[string][2]string{
		"too-long": {batchfile.CodePromptTooLong, "max_model_len is 512"},
		"cold":     {batchfile.CodeInvalidRequest, "temperature must be non-negative"},
		"wide":     {batchfile.CodeInvalidRequest, "top_p must be in (0, 1]"},
	} {
		require.NotNil(t, got[id].Err, id)
		assert.Equal(t, want[0], got[id].Err.Code, id)
		assert.Contains(t, got[id].Err.Message, want[1], id)
	}

	// Results stream out as each finishes: the short answer does not wait for the
	// long one that was submitted before it.
	assert.Less(t, indexOf(order, "short"), indexOf(order, "long"), "outcome order %v", order)
	assert.Greater(t, arrived["long"].Sub(arrived["short"]), 50*time.Millisecond)

	r := got["short"].Result
	require.NotNil(t, r)
	assert.Equal(t, "length", r.FinishReason)
	assert.Equal(t, 3, r.CompletionTokens)

	// The model's chat template was applied, generation prompt included.
	r = got["long"].Result
	require.NotNil(t, r)
	assert.Equal(t, "stop", r.FinishReason)
	assert.Equal(t, len(chatML(t, long)), r.PromptTokens)
	assert.Contains(t, r.Text, `<|im_start|>assistant\n`)
	assert.Equal(t, len(r.Text)+1, r.CompletionTokens, "answer bytes and EOS")

	// json_schema became structured outputs: the answer is JSON with the schema's keys.
	r = got["schema"].Result
	require.NotNil(t, r)
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.Text), &doc), r.Text)
	assert.Equal(t, map[string]any{"recommendation": "Yes", "score": 1.5, "is_software_engineer": true}, doc)

	r = got["completion"].Result
	require.NotNil(t, r)
	assert.Equal(t, len("Once upon a time")+1, r.PromptTokens, "a completion prompt gets BOS")

	// The shared system prompt was cached for every chat after the first one added.
	cached := 0
	for _, id := range []string{"long", "short", "schema"} {
		c := got[id].Result.CachedTokens
		assert.Zero(t, c%16, "%s: whole KV blocks", id)
		cached += c
	}
	assert.Positive(t, cached)

	st := p.Stats()
	assert.Equal(t, int64(len(reqs)), st.Finished)
	assert.Zero(t, st.InFlight)
}

func TestVLLMContractAbort(t *testing.T) {
	// 20 ms a step: each answer needs ~1.7 s, long enough to be in the engine when
	// the cancel comes even on a busy machine.
	p, logs, err := startFakeVLLM(t, "fake/model", "VBATCH_FAKE_VLLM_STEP_SECONDS=0.02")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- p.Generate(ctx, []batchfile.Request{chat("a", "Resume A", nil), chat("b", "Resume B", nil)},
			func(o Outcome) { t.Errorf("outcome for aborted %s", o.Request.CustomID) })
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Second):
		t.Fatal("Generate did not return within 1 s of its context's cancel")
	}
	require.Eventually(t, func() bool {
		return logs.FilterMessageSnippet("[fake vllm] abort_request").FilterMessageSnippet("aborted 1").Len() == 2
	}, 5*time.Second, 10*time.Millisecond, "the runner aborted both requests in the engine")

	got, err := generate(t, context.Background(), p, []batchfile.Request{
		chat("after", "x", func(s *batchfile.Sampling) { s.MaxTokens = ptr(2) })})
	require.NoError(t, err)
	require.NotNil(t, got["after"].Result)
	assert.Zero(t, p.Stats().InFlight)
}

func TestVLLMContractEngineFailure(t *testing.T) {
	p, _, err := startFakeVLLM(t, "fake/model", "VBATCH_FAKE_VLLM_FAIL_ON=POISON")
	require.NoError(t, err)
	_, err = generate(t, context.Background(), p, []batchfile.Request{chat("poisoned", "a POISON resume", nil)})
	require.ErrorIs(t, err, ErrEngineDied)
	assert.Contains(t, err.Error(), "exit status 4")
	assert.Contains(t, err.Error(), "EngineCore encountered an issue", "the error carries the runner's last log lines")
}

func TestVLLMContractLoadFailure(t *testing.T) {
	_, _, err := startFakeVLLM(t, "missing/model")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited before it was ready")
	assert.Contains(t, err.Error(), "vllm backend: missing/model is not a local folder")
	assert.Contains(t, err.Error(), "exit status 2")
}

// TestRunnerFilesShipped checks what the worker writes for its runner: every module
// runner.py imports, direct.py and the dummy model configs, and none of the tests
// or the stand-in vllm (which would shadow a real vLLM on a GPU host).
func TestRunnerFilesShipped(t *testing.T) {
	script, err := runnerScriptPath()
	require.NoError(t, err)
	dir := filepath.Dir(script)
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(path, "__pycache__") {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	}))
	assert.ElementsMatch(t, []string{
		"runner.py", "protocol.py", "vllm_backend.py", "hf_backend.py", "direct.py",
		"models/README.md", "models/llama-3.6b/config.json",
	}, files)
}

// TestRunDirectFeedsDirectPy runs the shipped direct.py through RunDirect, with the
// sim and with the vllm stand-in, and reads its summary.
func TestRunDirectFeedsDirectPy(t *testing.T) {
	requirePython(t)
	input := filepath.Join(t.TempDir(), "requests.jsonl")
	var lines []string
	for i := range 40 {
		line, err := json.Marshal(map[string]any{
			"custom_id": fmt.Sprintf("c%d", i), "method": "POST", "url": "/v1/chat/completions",
			"body": map[string]any{"max_tokens": 50, "messages": []map[string]string{
				{"role": "user", "content": fmt.Sprintf("Resume %d", i)}}},
		})
		require.NoError(t, err)
		lines = append(lines, string(line))
	}
	require.NoError(t, os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	contract, err := filepath.Abs(filepath.Join("runner", "contract"))
	require.NoError(t, err)

	for _, tc := range []struct {
		backend, model string
		env            []string
	}{
		{BackendSim, "sim-model", nil},
		{BackendVLLM, "fake/model", []string{"PYTHONPATH=" + contract}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			s, err := RunDirect(context.Background(), DirectConfig{
				Backend: tc.backend, Model: tc.model, Input: input, Env: tc.env,
				Settings: Settings{MaxModelLen: 1024},
				Sim:      SimConfig{TokensPerSecond: 1e5, LoadSeconds: 0.01},
			})
			require.NoError(t, err)
			assert.Equal(t, tc.backend, s.Backend)
			assert.Equal(t, Simulated(tc.backend), s.Simulated)
			assert.Equal(t, 40, s.Requests)
			assert.Equal(t, 40, s.Results)
			assert.Empty(t, s.Errors)
			assert.Equal(t, int64(40*50), s.CompletionTokens, "every answer cut at max_tokens 50")
			assert.Positive(t, s.PromptTokens)
			assert.Positive(t, s.Seconds)
			// seconds is rounded in the summary, so the quotient agrees only to a few percent;
			// counting completion tokens alone would be off by a factor of several.
			assert.InEpsilon(t, float64(s.PromptTokens+s.CompletionTokens)/s.Seconds, s.TokensPerSecond, 0.05)
			assert.EqualValues(t, 1024, s.Ready["max_model_len"])
		})
	}
}

func indexOf(ids []string, id string) int {
	for i, v := range ids {
		if v == id {
			return i
		}
	}
	return -1
}
