// Package engine owns inference engines: the Engine interface that GenerateChunk
// feeds, the runner process (runner.py, embedded) that speaks JSON lines over
// stdin/stdout with its backends (vllm, transformers, sim), and the openai engine
// that sends requests to an OpenAI-compatible server.
package engine

import (
	"context"
	"errors"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// Engine is one warm inference engine: a model loaded once, pinned to its GPUs,
// shared by every chunk that the worker runs on it. It is safe for concurrent use:
// several Generate calls run at once so the engine never drains between chunks.
type Engine interface {
	// Ready describes the loaded engine, as its ready event reported it.
	Ready() Ready
	// Generate submits reqs and calls onOutcome once per request, from one goroutine
	// per call, as each finishes. It returns when every request has an outcome (nil),
	// when ctx ends (outstanding requests are aborted; ctx.Err()), or when the engine
	// dies (an error wrapping ErrEngineDied). Per-request failures are outcomes with
	// Err set, never a returned error.
	Generate(ctx context.Context, reqs []batchfile.Request, onOutcome func(Outcome)) error
	// Stats counts what the engine has done since it started.
	Stats() Stats
	// Close shuts the engine down and waits for its process.
	Close() error
}

// ErrEngineDied says the engine process exited or broke its protocol; the worker
// restarts it and the chunk attempt is retried.
var ErrEngineDied = errors.New("engine died")

// Ready is the runner's ready event: what was loaded and what it costs.
type Ready struct {
	Backend        string            `json:"backend"` // vllm, transformers, sim, openai
	Simulated      bool              `json:"simulated"`
	Model          string            `json:"model"`
	Versions       map[string]string `json:"versions,omitempty"`
	MaxModelLen    int               `json:"max_model_len,omitempty"`
	KVCacheTokens  int               `json:"kv_cache_tokens,omitempty"`
	KVCacheGiB     float64           `json:"kv_cache_gib,omitempty"`
	WeightsGiB     float64           `json:"weights_gib,omitempty"`
	GraphsGiB      float64           `json:"graphs_gib,omitempty"`
	MaxConcurrency float64           `json:"max_concurrency,omitempty"` // at max_model_len
	// MaxNumSeqs is the most requests the engine runs at once (vLLM's max_num_seqs,
	// the sim's batch); the worker keeps its queue just deeper than that. Zero where
	// the engine does not say.
	MaxNumSeqs       int     `json:"max_num_seqs,omitempty"`
	LoadSeconds      float64 `json:"load_seconds"`
	Devices          string  `json:"devices,omitempty"` // CUDA_VISIBLE_DEVICES it ran with
	TensorParallel   int     `json:"tensor_parallel_size,omitempty"`
	PrefixCaching    bool    `json:"enable_prefix_caching,omitempty"`
	GPUMemoryUtilize float64 `json:"gpu_memory_utilization,omitempty"`
}

// Result is one finished request.
type Result struct {
	Text             string `json:"text"`
	FinishReason     string `json:"finish_reason"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	CachedTokens     int    `json:"cached_tokens,omitempty"`
	// EngineSeconds is the request's share of the engine's busy time: each moment
	// the engine is busy is split evenly among the requests in it, so the shares of
	// all requests add up to Stats.BusySeconds. Zero where the engine does not
	// measure it (openai).
	EngineSeconds float64 `json:"engine_seconds,omitempty"`
}

// RequestError is a failure of one request alone (prompt too long, a sampling field
// the engine rejects); the code is one of batchfile's codes.
type RequestError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *RequestError) Error() string { return e.Code + ": " + e.Message }

// Outcome is what happened to one request: exactly one of Result and Err is set.
type Outcome struct {
	Request batchfile.Request
	Result  *Result
	Err     *RequestError
}

// Stats are an engine's running totals.
type Stats struct {
	Submitted        int64 `json:"submitted"`
	Finished         int64 `json:"finished"`
	InFlight         int64 `json:"in_flight"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// BusySeconds is the time the engine had at least one request in flight; the
	// idle fraction while work remains is derived from it.
	BusySeconds float64 `json:"busy_seconds"`
	// IdleSeconds is how long the engine has had nothing in flight, 0 while it has
	// something: when it last worked, also on requests of chunks leased to another
	// engine of the worker.
	IdleSeconds float64 `json:"idle_seconds,omitempty"`
}
