package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// OpenAIConfig configures an engine that sends requests to an OpenAI-compatible
// server (vllm serve, SGLang, Ollama) instead of a runner process.
type OpenAIConfig struct {
	BaseURL string // e.g. http://127.0.0.1:8000/v1; the endpoints are appended to it
	APIKey  string // optional bearer token
	// Model is the model name sent with every request; empty means the first model the
	// server lists.
	Model string
	// Concurrency is the number of requests in flight across all Generate calls,
	// default 64. It should be at least the server's batch size, or the GPU idles.
	Concurrency int
	Timeout     time.Duration // per attempt of one request, default 10 min
	// MaxRetries is how often a request is retried after a 408, 429, 5xx or network
	// error; 0 means the default 5, negative means never.
	MaxRetries int
	// RetryBackoff is the delay before the first retry, doubled (with jitter) each
	// retry up to 30 s; default 500 ms. A Retry-After header replaces it.
	RetryBackoff time.Duration
	HTTPClient   *http.Client // default: a client keeping Concurrency connections alive
	Logger       *zap.Logger
}

const (
	openAIDefaultConcurrency = 64
	openAIDefaultTimeout     = 10 * time.Minute
	openAIDefaultRetries     = 5
	openAIDefaultBackoff     = 500 * time.Millisecond
	openAIMaxBackoff         = 30 * time.Second
	// A server asking for a longer pause than this is treated as asking for this
	// long, so one header cannot park a chunk for an hour.
	openAIMaxRetryAfter = 5 * time.Minute
	openAIProbeTimeout  = 30 * time.Second
	// Responses larger than this are not answers we can use; the cap keeps a broken
	// server from exhausting the worker's memory.
	openAIMaxResponseBytes = 64 << 20
)

// OpenAI is the `openai` engine. Requests from all Generate calls share one limit of
// Concurrency in flight, so several chunks can feed the server at once without
// overloading it.
type OpenAI struct {
	cfg         OpenAIConfig
	client      *http.Client
	ownsClient  bool
	log         *zap.Logger
	ready       Ready
	slots       chan struct{} // one token per request in flight
	closed      atomic.Bool
	statsMu     sync.Mutex
	stats       Stats
	busySince   time.Time // start of the current busy period, while InFlight > 0
	idleSince   time.Time // when InFlight last fell to 0
	maxAttempts int
}

var _ Engine = (*OpenAI)(nil)

// NewOpenAI checks that the server answers GET {BaseURL}/models and returns the
// engine. An unreachable server, or one that refuses the API key, is an error naming
// the URL; nothing is retried here, so the caller decides how long to wait for a
// server that is still loading its model.
func NewOpenAI(ctx context.Context, cfg OpenAIConfig) (*OpenAI, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("openai engine: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = openAIDefaultConcurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = openAIDefaultTimeout
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = openAIDefaultRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = openAIDefaultBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	e := &OpenAI{
		cfg:         cfg,
		client:      cfg.HTTPClient,
		log:         cfg.Logger.With(zap.String("engine", "openai"), zap.String("base_url", cfg.BaseURL)),
		slots:       make(chan struct{}, cfg.Concurrency),
		maxAttempts: cfg.MaxRetries + 1,
	}
	if e.client == nil {
		// The default transport keeps 2 idle connections per host; with dozens of
		// requests in flight every other request would open a new connection.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.Concurrency
		e.client = &http.Client{Transport: tr}
		e.ownsClient = true
	}
	model, maxLen, err := e.probe(ctx)
	if err != nil {
		e.closeIdle()
		return nil, err
	}
	e.ready = Ready{Backend: "openai", Model: model, MaxModelLen: maxLen}
	e.log.Info("openai engine ready", zap.String("model", model), zap.Int("max_model_len", maxLen),
		zap.Int("concurrency", cfg.Concurrency))
	return e, nil
}

// probe lists the server's models: it proves the server is there and picks the model
// when none is configured. vLLM also tells its max_model_len there.
func (e *OpenAI) probe(ctx context.Context) (model string, maxModelLen int, err error) {
	endpoint := e.cfg.BaseURL + "/models"
	ctx, cancel := context.WithTimeout(ctx, min(e.cfg.Timeout, openAIProbeTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return "", 0, fmt.Errorf("openai engine: probe %s: %w", endpoint, err)
	}
	e.authorize(req)
	resp, err := e.client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("openai engine: server unreachable at %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, openAIMaxResponseBytes))
	if err != nil {
		return "", 0, fmt.Errorf("openai engine: read %s: %w", endpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := errorMessage(resp.StatusCode, body)
		return "", 0, fmt.Errorf("openai engine: GET %s: status %d: %s", endpoint, resp.StatusCode, msg)
	}
	var list struct {
		Data []struct {
			ID          string `json:"id"`
			MaxModelLen int    `json:"max_model_len"` // vLLM only
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return "", 0, fmt.Errorf("openai engine: GET %s: not a model list: %w", endpoint, err)
	}
	ids := make([]string, len(list.Data))
	for i, m := range list.Data {
		ids[i] = m.ID
		if m.ID == e.cfg.Model {
			return m.ID, m.MaxModelLen, nil
		}
	}
	if e.cfg.Model == "" {
		if len(list.Data) == 0 {
			return "", 0, fmt.Errorf("openai engine: GET %s lists no models and none is configured", endpoint)
		}
		return list.Data[0].ID, list.Data[0].MaxModelLen, nil
	}
	// Not fatal: some servers (Ollama) accept names they list differently
	// ("llama3" for "llama3:latest"); if this one does not, every request fails
	// with the server's own message.
	e.log.Warn("configured model is not in the server's model list",
		zap.String("model", e.cfg.Model), zap.Strings("listed", ids))
	return e.cfg.Model, 0, nil
}

// Ready describes the engine; a remote server has no load time of ours.
func (e *OpenAI) Ready() Ready { return e.ready }

// Stats counts the requests sent since the engine started; failed requests count as
// finished, cancelled ones do not.
func (e *OpenAI) Stats() Stats {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	s := e.stats
	if s.InFlight > 0 {
		s.BusySeconds += time.Since(e.busySince).Seconds()
	} else if !e.idleSince.IsZero() {
		s.IdleSeconds = time.Since(e.idleSince).Seconds()
	}
	return s
}

// Close makes later Generate calls fail and drops idle connections.
func (e *OpenAI) Close() error {
	e.closed.Store(true)
	e.closeIdle()
	return nil
}

func (e *OpenAI) closeIdle() {
	if e.ownsClient {
		e.client.CloseIdleConnections()
	}
}

// Generate sends reqs with at most Concurrency requests in flight (shared with other
// Generate calls) and calls onOutcome from the calling goroutine as each finishes.
// Failures of single requests are outcomes; when ctx ends, requests in flight are
// abandoned and ctx.Err() is returned.
func (e *OpenAI) Generate(ctx context.Context, reqs []batchfile.Request, onOutcome func(Outcome)) error {
	if e.closed.Load() {
		return errors.New("openai engine: generate after close")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Cancel first, then wait: an early return must not leave requests running
	// against the server or holding concurrency slots.
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Buffered for every request, so senders never wait on a slow onOutcome while
	// holding nothing, and never block once Generate has returned.
	outcomes := make(chan Outcome, len(reqs))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, r := range reqs {
			select {
			case e.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			e.begin()
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, ok := e.send(ctx, r)
				<-e.slots
				e.end(o, ok)
				if ok {
					outcomes <- o
				}
			}()
		}
	}()

	for range reqs {
		select {
		case o := <-outcomes:
			// An outcome and cancellation can race; once cancelled, report nothing more.
			if err := ctx.Err(); err != nil {
				return err
			}
			onOutcome(o)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (e *OpenAI) begin() {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	e.stats.Submitted++
	e.stats.InFlight++
	if e.stats.InFlight == 1 {
		e.busySince = time.Now()
	}
}

func (e *OpenAI) end(o Outcome, finished bool) {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	e.stats.InFlight--
	if e.stats.InFlight == 0 {
		e.stats.BusySeconds += time.Since(e.busySince).Seconds()
		e.idleSince = time.Now()
	}
	if !finished {
		return
	}
	e.stats.Finished++
	if o.Result != nil {
		e.stats.PromptTokens += int64(o.Result.PromptTokens)
		e.stats.CompletionTokens += int64(o.Result.CompletionTokens)
	}
}

// attemptFailure is why one HTTP attempt did not produce a result.
type attemptFailure struct {
	status     int    // 0 when no response came back
	message    string // the server's message, or the transport error
	code       string // the request's error code if this failure is final
	retryable  bool
	retryAfter time.Duration // from a Retry-After header; 0 if none
}

func (f *attemptFailure) String() string {
	if f.status == 0 {
		return f.message
	}
	return fmt.Sprintf("status %d: %s", f.status, f.message)
}

// send runs one request to its outcome, retrying what is worth retrying. ok is false
// when ctx ended first; the request then has no outcome.
func (e *OpenAI) send(ctx context.Context, r batchfile.Request) (o Outcome, ok bool) {
	o.Request = r
	path, body, reqErr := e.body(r)
	if reqErr != nil {
		o.Err = reqErr
		return o, true
	}
	for attempt := 1; ; attempt++ {
		res, fail := e.attempt(ctx, path, body)
		if ctx.Err() != nil {
			return o, false
		}
		if fail == nil {
			o.Result = res
			return o, true
		}
		if !fail.retryable {
			o.Err = &RequestError{Code: fail.code, Message: fail.String()}
			return o, true
		}
		if attempt >= e.maxAttempts {
			o.Err = &RequestError{Code: batchfile.CodeEngineError,
				Message: fmt.Sprintf("gave up after %s: %s", attempts(attempt), fail)}
			e.log.Warn("request failed", zap.String("custom_id", r.CustomID), zap.Int("attempts", attempt),
				zap.String("error", fail.String()))
			return o, true
		}
		delay := fail.retryAfter
		if delay == 0 {
			delay = e.backoff(attempt)
		}
		e.log.Debug("retrying request", zap.String("custom_id", r.CustomID), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.String("error", fail.String()))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return o, false
		case <-t.C:
		}
	}
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return strconv.Itoa(n) + " attempts"
}

// backoff is the pause after the given failed attempt: RetryBackoff doubled per
// attempt, capped, with the upper half jittered so that requests which failed
// together (a server restart) do not come back together.
func (e *OpenAI) backoff(attempt int) time.Duration {
	d := e.cfg.RetryBackoff << min(attempt-1, 20)
	if d <= 0 || d > openAIMaxBackoff {
		d = openAIMaxBackoff
	}
	half := d / 2
	return half + rand.N(half+1)
}

// chatBody and completionBody are the JSON bodies of the two endpoints; the sampling
// fields carry the names of the OpenAI API, so they embed as they are.
type chatBody struct {
	Model    string          `json:"model"`
	Messages json.RawMessage `json:"messages"`
	batchfile.Sampling
}

type completionBody struct {
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	batchfile.Sampling
	// The legacy completions endpoint takes logprobs as a count, not a flag. These
	// fields shadow Sampling's of the same JSON names.
	Logprobs    *int `json:"logprobs,omitempty"`
	TopLogprobs *int `json:"top_logprobs,omitempty"` // always nil: folded into Logprobs
}

// body builds the endpoint path and JSON body of r, or the error that makes r
// unsendable.
func (e *OpenAI) body(r batchfile.Request) (string, []byte, *RequestError) {
	// An answer carries one choice; sending n > 1 would spend GPU time on answers
	// that are then silently dropped.
	if r.Sampling.N != nil && *r.Sampling.N > 1 {
		return "", nil, &RequestError{Code: batchfile.CodeInvalidRequest,
			Message: fmt.Sprintf("n=%d is not supported: an answer carries one choice", *r.Sampling.N)}
	}
	var (
		path string
		v    any
	)
	switch r.Kind {
	case batchfile.KindChat:
		path, v = "/chat/completions", chatBody{Model: e.ready.Model, Messages: r.Messages, Sampling: r.Sampling}
	case batchfile.KindCompletion:
		b := completionBody{Model: e.ready.Model, Prompt: r.Prompt, Sampling: r.Sampling}
		if r.Sampling.Logprobs || r.Sampling.TopLogprobs != nil {
			n := 0 // the sampled token's own logprob only
			if r.Sampling.TopLogprobs != nil {
				n = *r.Sampling.TopLogprobs
			}
			b.Logprobs = &n
		}
		path, v = "/completions", b
	default:
		return "", nil, &RequestError{Code: batchfile.CodeInvalidRequest,
			Message: fmt.Sprintf("unknown request kind %q", r.Kind)}
	}
	body, err := json.Marshal(v)
	if err != nil {
		return "", nil, &RequestError{Code: batchfile.CodeInvalidRequest, Message: "encode request: " + err.Error()}
	}
	return path, body, nil
}

// attempt makes one HTTP request and classifies what came back.
func (e *OpenAI) attempt(ctx context.Context, path string, body []byte) (*Result, *attemptFailure) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	endpoint := e.cfg.BaseURL + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, &attemptFailure{message: err.Error(), code: batchfile.CodeEngineError}
	}
	req.Header.Set("Content-Type", "application/json")
	e.authorize(req)
	resp, err := e.client.Do(req)
	if err != nil {
		msg := err.Error()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			msg = fmt.Sprintf("POST %s: no response within %s", endpoint, e.cfg.Timeout)
		}
		return nil, &attemptFailure{message: msg, retryable: true}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, openAIMaxResponseBytes))
	if err != nil {
		return nil, &attemptFailure{status: resp.StatusCode, message: "read response: " + err.Error(), retryable: true}
	}
	if resp.StatusCode/100 == 2 {
		res, err := parseResult(data)
		if err != nil {
			return nil, &attemptFailure{status: resp.StatusCode, message: err.Error(), code: batchfile.CodeEngineError}
		}
		return res, nil
	}
	msg, code := errorMessage(resp.StatusCode, data)
	f := &attemptFailure{status: resp.StatusCode, message: msg}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		f.retryable = true
		f.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
	case isContextLengthError(code, msg):
		f.code = batchfile.CodePromptTooLong
	default:
		f.code = batchfile.CodeInvalidRequest
	}
	return nil, f
}

func (e *OpenAI) authorize(req *http.Request) {
	if e.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+e.cfg.APIKey)
	}
}

// parseResult reads a chat.completion or text_completion object.
func parseResult(data []byte) (*Result, error) {
	var resp struct {
		Choices []struct {
			Message *struct {
				Content *string `json:"content"` // null when the model only called tools
			} `json:"message"`
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens        int `json:"prompt_tokens"`
			CompletionTokens    int `json:"completion_tokens"`
			PromptTokensDetails *struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("response is not a completion object: %w", err)
	}
	if len(resp.Choices) == 0 {
		return nil, errors.New("response has no choices")
	}
	c := resp.Choices[0]
	res := &Result{
		Text:             c.Text,
		FinishReason:     c.FinishReason,
		PromptTokens:     resp.Usage.PromptTokens,
		CompletionTokens: resp.Usage.CompletionTokens,
	}
	if c.Message != nil && c.Message.Content != nil {
		res.Text = *c.Message.Content
	}
	if d := resp.Usage.PromptTokensDetails; d != nil {
		res.CachedTokens = d.CachedTokens
	}
	return res, nil
}

// errorMessage extracts the message and code of an error body in the shapes servers
// use: OpenAI's {"error":{"message","code"}}, vLLM's older top-level
// {"message","code"}, {"error":"…"}, FastAPI's {"detail":"…"}; else the raw body.
func errorMessage(status int, body []byte) (msg, code string) {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Code    json.RawMessage `json:"code"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &e) == nil {
		var inner struct {
			Message string          `json:"message"`
			Code    json.RawMessage `json:"code"`
		}
		var s string
		switch {
		case json.Unmarshal(e.Error, &inner) == nil && inner.Message != "":
			return inner.Message, rawCode(inner.Code)
		case json.Unmarshal(e.Error, &s) == nil && s != "":
			return s, ""
		case e.Message != "":
			return e.Message, rawCode(e.Code)
		case len(e.Detail) > 0:
			if json.Unmarshal(e.Detail, &s) == nil {
				return s, ""
			}
			return string(e.Detail), ""
		}
	}
	msg = strings.TrimSpace(string(body))
	if msg == "" {
		return http.StatusText(status), ""
	}
	const maxLen = 500
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "…"
	}
	return msg, ""
}

// rawCode reads an error code that servers send as a string or a number.
func rawCode(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// contextLengthPhrases are how servers say a request does not fit the model's context
// (vLLM, SGLang, Ollama, OpenAI); there is no shared error code.
var contextLengthPhrases = []string{
	"maximum context length",             // vLLM, OpenAI
	"maximum model length",               // vLLM: "longer than the maximum model length"
	"context length exceeded",            //
	"exceeds the context length",         // Ollama
	"exceeds the maximum allowed length", // SGLang
	"prompt is too long",
	"input is too long",
}

func isContextLengthError(code, msg string) bool {
	if code == "context_length_exceeded" {
		return true
	}
	msg = strings.ToLower(msg)
	for _, p := range contextLengthPhrases {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 if absent or
// unreadable.
func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = time.Until(t)
	}
	if d <= 0 {
		return 0
	}
	return min(d, openAIMaxRetryAfter)
}
