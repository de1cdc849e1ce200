package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// fakeOpenAI is an OpenAI-compatible server whose completion handler a test supplies.
// It lists one model and records every body it was sent.
type fakeOpenAI struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	paths  []string
	auth   []string
}

func newFakeOpenAI(t *testing.T, complete http.HandlerFunc) *fakeOpenAI {
	t.Helper()
	f := &fakeOpenAI{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"google/gemma-3-4b-it","object":"model","max_model_len":8192}]}`)
	})
	record := func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(data, &body); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		f.paths = append(f.paths, r.URL.Path)
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(data))
		complete(w, r)
	}
	mux.HandleFunc("POST /v1/chat/completions", record)
	mux.HandleFunc("POST /v1/completions", record)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeOpenAI) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

// oaChatAnswer answers every request with the same chat completion.
func oaChatAnswer(w http.ResponseWriter, r *http.Request) {
	fmt.Fprint(w, `{"id":"cmpl-1","object":"chat.completion","model":"google/gemma-3-4b-it",
		"choices":[{"index":0,"message":{"role":"assistant","content":"{\"score\": 7}"},"finish_reason":"stop"}],
		"usage":{"prompt_tokens":120,"completion_tokens":9,"total_tokens":129,"prompt_tokens_details":{"cached_tokens":64}}}`)
}

func newTestOpenAI(t *testing.T, f *fakeOpenAI, cfg OpenAIConfig) *OpenAI {
	t.Helper()
	cfg.BaseURL = f.URL + "/v1"
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = time.Millisecond
	}
	e, err := NewOpenAI(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewOpenAI: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func oaPtr[T any](v T) *T { return &v }

func oaChatRequest(id string) batchfile.Request {
	return batchfile.Request{
		CustomID: id, Line: 1, Kind: batchfile.KindChat,
		Messages: json.RawMessage(`[{"role":"user","content":"Score candidate ` + id + `"}]`),
		Sampling: batchfile.Sampling{MaxTokens: oaPtr(2000), Temperature: oaPtr(0.7)},
	}
}

// generate runs Generate and returns the outcomes by custom_id, failing the test if
// onOutcome ran concurrently with itself or twice for one request.
func oaGenerate(t *testing.T, e *OpenAI, ctx context.Context, reqs []batchfile.Request) (map[string]Outcome, error) {
	t.Helper()
	got := make(map[string]Outcome)
	var inCallback atomic.Int32
	err := e.Generate(ctx, reqs, func(o Outcome) {
		if inCallback.Add(1) != 1 {
			t.Error("onOutcome called concurrently")
		}
		defer inCallback.Add(-1)
		if _, dup := got[o.Request.CustomID]; dup {
			t.Errorf("two outcomes for %s", o.Request.CustomID)
		}
		got[o.Request.CustomID] = o
	})
	return got, err
}

func TestOpenAIChat(t *testing.T) {
	f := newFakeOpenAI(t, oaChatAnswer)
	e := newTestOpenAI(t, f, OpenAIConfig{APIKey: "sk-test"})
	if r := e.Ready(); r.Backend != "openai" || r.Model != "google/gemma-3-4b-it" || r.MaxModelLen != 8192 || r.LoadSeconds != 0 {
		t.Fatalf("Ready = %+v, want backend openai, the listed model and its max_model_len", r)
	}

	req := oaChatRequest("cand-00017")
	req.Sampling.TopP = oaPtr(0.9)
	req.Sampling.Stop = []string{"\n\n"}
	req.Sampling.ResponseFormat = json.RawMessage(`{"type":"json_schema","json_schema":{"name":"score","schema":{"type":"object"}}}`)
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{req})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}

	o := got["cand-00017"]
	if o.Err != nil || o.Result == nil {
		t.Fatalf("outcome = %+v, want a result", o)
	}
	want := Result{Text: `{"score": 7}`, FinishReason: "stop", PromptTokens: 120, CompletionTokens: 9, CachedTokens: 64}
	if *o.Result != want {
		t.Errorf("result = %+v, want %+v", *o.Result, want)
	}

	body := f.bodies[0]
	if f.paths[0] != "/v1/chat/completions" || f.auth[0] != "Bearer sk-test" {
		t.Errorf("sent to %s with Authorization %q, want /v1/chat/completions with the bearer token", f.paths[0], f.auth[0])
	}
	if body["model"] != "google/gemma-3-4b-it" || body["max_tokens"] != 2000.0 || body["temperature"] != 0.7 || body["top_p"] != 0.9 {
		t.Errorf("body = %v, want model, max_tokens 2000, temperature 0.7, top_p 0.9", body)
	}
	msgs, _ := json.Marshal(body["messages"])
	if string(msgs) != `[{"content":"Score candidate cand-00017","role":"user"}]` {
		t.Errorf("messages = %s, want the request's messages", msgs)
	}
	rf, _ := json.Marshal(body["response_format"])
	if string(rf) != `{"json_schema":{"name":"score","schema":{"type":"object"}},"type":"json_schema"}` {
		t.Errorf("response_format = %s, want it passed through", rf)
	}
	if stop, _ := json.Marshal(body["stop"]); string(stop) != `["\n\n"]` {
		t.Errorf("stop = %s", stop)
	}
	for _, absent := range []string{"prompt", "top_k", "n", "seed", "logprobs", "stream"} {
		if _, ok := body[absent]; ok {
			t.Errorf("body has %q although the request did not set it: %v", absent, body)
		}
	}

	s := e.Stats()
	if s.Submitted != 1 || s.Finished != 1 || s.InFlight != 0 || s.PromptTokens != 120 || s.CompletionTokens != 9 || s.BusySeconds <= 0 {
		t.Errorf("stats = %+v, want 1 submitted and finished, 120+9 tokens, some busy time", s)
	}
}

func TestOpenAICompletion(t *testing.T) {
	f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"text_completion","choices":[{"index":0,"text":"Paris.","finish_reason":"length"}],
			"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`)
	})
	e := newTestOpenAI(t, f, OpenAIConfig{Model: "google/gemma-3-4b-it"})
	req := batchfile.Request{
		CustomID: "q1", Kind: batchfile.KindCompletion, Prompt: "The capital of France is",
		Sampling: batchfile.Sampling{MaxTokens: oaPtr(16), Temperature: oaPtr(0.0), Seed: oaPtr(int64(42)), Logprobs: true, TopLogprobs: oaPtr(3)},
	}
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{req})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if r := got["q1"].Result; r == nil || r.Text != "Paris." || r.FinishReason != "length" || r.PromptTokens != 5 || r.CompletionTokens != 2 || r.CachedTokens != 0 {
		t.Fatalf("outcome = %+v, want text Paris., finish length, 5+2 tokens", got["q1"])
	}
	body := f.bodies[0]
	if f.paths[0] != "/v1/completions" || f.auth[0] != "" {
		t.Errorf("sent to %s with Authorization %q, want /v1/completions without one", f.paths[0], f.auth[0])
	}
	if body["prompt"] != "The capital of France is" || body["max_tokens"] != 16.0 || body["temperature"] != 0.0 || body["seed"] != 42.0 {
		t.Errorf("body = %v, want prompt, max_tokens 16, temperature 0, seed 42", body)
	}
	// The completions endpoint takes logprobs as a count.
	if body["logprobs"] != 3.0 || body["top_logprobs"] != nil || body["messages"] != nil {
		t.Errorf("body = %v, want logprobs 3 and no top_logprobs or messages", body)
	}
}

func TestOpenAIConcurrencyLimit(t *testing.T) {
	var cur, peak atomic.Int32
	f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
		oaChatAnswer(w, r)
	})
	e := newTestOpenAI(t, f, OpenAIConfig{Concurrency: 4})

	// Two Generate calls at once share the engine's limit, as chunks on one engine do.
	var wg sync.WaitGroup
	results := make([]map[string]Outcome, 2)
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := make([]batchfile.Request, 20)
			for i := range reqs {
				reqs[i] = oaChatRequest(fmt.Sprintf("c%d-%02d", c, i))
			}
			got, err := oaGenerate(t, e, context.Background(), reqs)
			if err != nil {
				t.Errorf("Generate %d: %v", c, err)
			}
			results[c] = got
		}()
	}
	wg.Wait()
	for c, got := range results {
		if len(got) != 20 {
			t.Errorf("call %d got %d outcomes, want 20", c, len(got))
		}
	}
	if p := peak.Load(); p != 4 {
		t.Errorf("server saw at most %d requests at once, want exactly the limit of 4", p)
	}
	if s := e.Stats(); s.Submitted != 40 || s.Finished != 40 || s.InFlight != 0 {
		t.Errorf("stats = %+v, want 40 submitted and finished", s)
	}
}

func TestOpenAIRetryAfter(t *testing.T) {
	var calls atomic.Int32
	f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"rate limited","type":"rate_limit"}}`)
			return
		}
		oaChatAnswer(w, r)
	})
	e := newTestOpenAI(t, f, OpenAIConfig{})
	start := time.Now()
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("a")})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if got["a"].Result == nil {
		t.Fatalf("outcome = %+v, want a result after the retry", got["a"])
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("server got %d requests, want 2", n)
	}
	// The backoff is 1 ms here, so waiting a second can only come from Retry-After.
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("retried after %v, want the 1 s that Retry-After asked for", elapsed)
	}
}

// oaIsFor says whether a recorded request is the one oaChatRequest built for id.
func oaIsFor(r *http.Request, id string) bool {
	body, _ := io.ReadAll(r.Body)
	return strings.Contains(string(body), "Score candidate "+id+`"`)
}

func TestOpenAIServerErrorsExhaustRetries(t *testing.T) {
	var failing atomic.Int32
	f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
		if oaIsFor(r, "bad") {
			failing.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"object":"error","message":"CUDA error: an illegal memory access","type":"InternalServerError","code":500}`)
			return
		}
		oaChatAnswer(w, r)
	})
	e := newTestOpenAI(t, f, OpenAIConfig{MaxRetries: 3})
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("bad"), oaChatRequest("good")})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if got["good"].Result == nil {
		t.Errorf("the other request's outcome = %+v, want a result", got["good"])
	}
	o := got["bad"]
	if o.Err == nil || o.Err.Code != batchfile.CodeEngineError {
		t.Fatalf("outcome = %+v, want engine_error", o)
	}
	for _, want := range []string{"4 attempts", "status 500", "CUDA error: an illegal memory access"} {
		if !strings.Contains(o.Err.Message, want) {
			t.Errorf("message %q lacks %q", o.Err.Message, want)
		}
	}
	if n := failing.Load(); n != 4 {
		t.Errorf("server got %d attempts, want 1 + MaxRetries = 4", n)
	}
	if s := e.Stats(); s.Finished != 2 {
		t.Errorf("stats = %+v, want both requests finished", s)
	}
}

func TestOpenAINetworkErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     OpenAIConfig
		handler http.HandlerFunc
		want    []string
	}{
		{"connection dropped", OpenAIConfig{MaxRetries: 2}, func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}, []string{"gave up after 3 attempts", "EOF"}},
		{"no answer within the timeout", OpenAIConfig{MaxRetries: -1, Timeout: 50 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, []string{"gave up after 1 attempt:", "no response within 50ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeOpenAI(t, tt.handler)
			e := newTestOpenAI(t, f, tt.cfg)
			got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("a")})
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			o := got["a"]
			if o.Err == nil || o.Err.Code != batchfile.CodeEngineError {
				t.Fatalf("outcome = %+v, want engine_error", o)
			}
			for _, w := range tt.want {
				if !strings.Contains(o.Err.Message, w) {
					t.Errorf("message %q lacks %q", o.Err.Message, w)
				}
			}
		})
	}
}

func TestOpenAIClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode string
		wantMsg  string
	}{
		{"vLLM context length", 400,
			`{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 6000 tokens (4000 in the messages, 2000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}}`,
			batchfile.CodePromptTooLong, "maximum context length is 4096 tokens"},
		{"OpenAI context code", 400,
			`{"error":{"message":"Request too large.","type":"invalid_request_error","code":"context_length_exceeded"}}`,
			batchfile.CodePromptTooLong, "Request too large."},
		{"SGLang input length", 400,
			`{"object":"error","message":"Input length (5000 tokens) exceeds the maximum allowed length (4096 tokens).","code":400}`,
			batchfile.CodePromptTooLong, "exceeds the maximum allowed length"},
		{"unknown model", 404,
			`{"error":{"message":"The model 'gpt-9' does not exist.","type":"NotFoundError","code":404}}`,
			batchfile.CodeInvalidRequest, "status 404: The model 'gpt-9' does not exist."},
		{"bad field", 400, `{"detail":"top_k must be -1 or at least 1"}`,
			batchfile.CodeInvalidRequest, "status 400: top_k must be -1 or at least 1"},
		{"plain text body", 422, `unprocessable`, batchfile.CodeInvalidRequest, "status 422: unprocessable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			})
			e := newTestOpenAI(t, f, OpenAIConfig{})
			got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("a")})
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			o := got["a"]
			if o.Err == nil || o.Err.Code != tt.wantCode || !strings.Contains(o.Err.Message, tt.wantMsg) {
				t.Fatalf("outcome error = %+v, want %s containing %q", o.Err, tt.wantCode, tt.wantMsg)
			}
			if n := f.requests(); n != 1 {
				t.Errorf("server got %d requests, want 1: client errors are not retried", n)
			}
		})
	}
}

func TestOpenAIRejectsSeveralChoices(t *testing.T) {
	f := newFakeOpenAI(t, oaChatAnswer)
	e := newTestOpenAI(t, f, OpenAIConfig{})
	req := oaChatRequest("a")
	req.Sampling.N = oaPtr(3)
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{req})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if o := got["a"]; o.Err == nil || o.Err.Code != batchfile.CodeInvalidRequest || !strings.Contains(o.Err.Message, "n=3") {
		t.Fatalf("outcome = %+v, want invalid_request naming n=3", o)
	}
	if n := f.requests(); n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

func TestOpenAICancelMidRun(t *testing.T) {
	f := newFakeOpenAI(t, func(w http.ResponseWriter, r *http.Request) {
		if !oaIsFor(r, "c") && !oaIsFor(r, "d") {
			oaChatAnswer(w, r)
			return
		}
		select { // a generation that takes far longer than the test
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	e := newTestOpenAI(t, f, OpenAIConfig{Concurrency: 1})
	reqs := []batchfile.Request{oaChatRequest("a"), oaChatRequest("b"), oaChatRequest("c"), oaChatRequest("d")}

	ctx, cancel := context.WithCancel(context.Background())
	var outcomes atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- e.Generate(ctx, reqs, func(Outcome) {
			if outcomes.Add(1) == 2 {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Generate = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Generate still running 5 s after cancel")
	}
	if n := outcomes.Load(); n != 2 {
		t.Errorf("%d outcomes reported, want the 2 that finished before cancel", n)
	}
	if s := e.Stats(); s.InFlight != 0 || s.Finished != 2 {
		t.Errorf("stats after cancel = %+v, want nothing in flight and 2 finished", s)
	}
	// The engine is still usable, its concurrency slot released.
	got, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("e")})
	if err != nil || got["e"].Result == nil {
		t.Fatalf("Generate after a cancelled call = %v, %+v; want a result", err, got["e"])
	}
}

func TestOpenAIUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String() + "/v1"
	l.Close()

	_, err = NewOpenAI(context.Background(), OpenAIConfig{BaseURL: base})
	if err == nil || !strings.Contains(err.Error(), base+"/models") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("NewOpenAI(%s) = %v, want an error naming the URL as unreachable", base, err)
	}
}

func TestOpenAIProbeErrors(t *testing.T) {
	unauthorized := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"Unauthorized"}}`)
	}))
	defer unauthorized.Close()
	_, err := NewOpenAI(context.Background(), OpenAIConfig{BaseURL: unauthorized.URL + "/v1/"})
	if err == nil || !strings.Contains(err.Error(), unauthorized.URL+"/v1/models: status 401: Unauthorized") {
		t.Errorf("NewOpenAI against a server refusing the key = %v, want the URL, status and message", err)
	}

	if _, err := NewOpenAI(context.Background(), OpenAIConfig{BaseURL: "127.0.0.1:8000/v1"}); err == nil || !strings.Contains(err.Error(), `"127.0.0.1:8000/v1" is not an http(s) URL`) {
		t.Errorf("NewOpenAI without a scheme = %v, want a bad-URL error", err)
	}
}

func TestOpenAIModelNotListed(t *testing.T) {
	f := newFakeOpenAI(t, oaChatAnswer)
	core, logs := observer.New(zap.WarnLevel)
	e := newTestOpenAI(t, f, OpenAIConfig{Model: "gemma3:4b", Logger: zap.New(core)})
	if r := e.Ready(); r.Model != "gemma3:4b" || r.MaxModelLen != 0 {
		t.Errorf("Ready = %+v, want the configured model, max_model_len unknown", r)
	}
	warned := logs.FilterMessage("configured model is not in the server's model list").All()
	if len(warned) != 1 {
		t.Fatalf("warnings = %v, want one about the unlisted model", logs.All())
	}
	if _, err := oaGenerate(t, e, context.Background(), []batchfile.Request{oaChatRequest("a")}); err != nil {
		t.Fatal(err)
	}
	if f.bodies[0]["model"] != "gemma3:4b" {
		t.Errorf("sent model %v, want the configured one", f.bodies[0]["model"])
	}
}
