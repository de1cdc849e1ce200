package run

import (
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
)

// Manifest is the plan of a run, written by Plan and read by everything after it.
type Manifest struct {
	Input      string `json:"input"`
	InputETag  string `json:"input_etag"`
	InputBytes int64  `json:"input_bytes"`
	Model      string `json:"model"`
	ConfigHash string `json:"config_hash"` // what the answers depend on: model, engine settings, sampling defaults
	Lines      int    `json:"lines"`       // non-blank lines read
	Valid      int    `json:"valid"`
	Invalid    int    `json:"invalid"`
	// ChunkTokens is a full chunk's estimated tokens and Engines the engines the
	// tail was cut for (0: not cut); see activities/chunksize.go.
	ChunkTokens int64       `json:"chunk_tokens,omitempty"`
	Engines     int         `json:"engines,omitempty"`
	Chunks      []ChunkPlan `json:"chunks"`
	PlannedAt   time.Time   `json:"planned_at"`
}

// ChunkPlan is one chunk of a plan: a contiguous run of valid input lines.
type ChunkPlan struct {
	Index     int `json:"index"`
	Requests  int `json:"requests"`
	FirstLine int `json:"first_line"`
	LastLine  int `json:"last_line"`
	// EstimatedTokens is the estimated engine work of its requests: prompt bytes / 4
	// plus max_tokens (or the run's expected completion tokens, when smaller).
	EstimatedTokens int64 `json:"estimated_tokens"`
}

// Answer is one checkpointed outcome of one request, a line of a part object. Merge
// turns it into an output or error envelope; exactly one of Error and the answer
// fields is meaningful.
type Answer struct {
	CustomID         string               `json:"custom_id"`
	Line             int                  `json:"line"`
	Kind             batchfile.Kind       `json:"kind"`
	Created          int64                `json:"created"`
	Text             string               `json:"text,omitempty"`
	FinishReason     string               `json:"finish_reason,omitempty"`
	PromptTokens     int                  `json:"prompt_tokens,omitempty"`
	CompletionTokens int                  `json:"completion_tokens,omitempty"`
	CachedTokens     int                  `json:"cached_tokens,omitempty"`
	Error            *engine.RequestError `json:"error,omitempty"`
	Attempt          int                  `json:"attempt"`
	// EngineSeconds is the answer's share of its engine's busy time
	// (engine.Result.EngineSeconds); for an answer from the answer cache, the
	// share of the engine that first answered it: the GPU time the hit saved.
	EngineSeconds float64 `json:"engine_seconds,omitempty"`
	// Cached says the answer came from the answer cache, not an engine.
	Cached bool `json:"cached,omitempty"`
}

// ErrorCode is the code of the answer's error, or "" for an answer without one.
func (a Answer) ErrorCode() string {
	if a.Error == nil {
		return ""
	}
	return a.Error.Code
}

// AttemptResult is what one GenerateChunk attempt did, written when it ends, for the
// report: where it ran, how long, what it produced, and the GPUs' telemetry meanwhile.
type AttemptResult struct {
	Chunk            int           `json:"chunk"`
	Attempt          int           `json:"attempt"`
	Worker           string        `json:"worker"`
	Engine           engine.Ready  `json:"engine"`
	EngineSlot       int           `json:"engine_slot"`
	Started          time.Time     `json:"started"`
	Finished         time.Time     `json:"finished"`
	Requests         int           `json:"requests"`
	Resumed          int           `json:"resumed"` // answered by earlier attempts, skipped
	Answered         int           `json:"answered"`
	Failed           int           `json:"failed"`
	PromptTokens     int64         `json:"prompt_tokens"`
	CompletionTokens int64         `json:"completion_tokens"`
	Parts            int           `json:"parts"`
	Suspects         int           `json:"suspects,omitempty"` // requests fed carefully after an engine death
	Blamed           int           `json:"blamed,omitempty"`   // requests recorded as engine_error for crashing the engine
	Outcome          string        `json:"outcome"`            // completed, failed, cancelled, stopped (the worker stopped)
	Error            string        `json:"error,omitempty"`
	GPUs             []gpu.Summary `json:"gpus,omitempty"`
	// EngineBusy samples the engine's cumulative busy time (≥ 1 request in flight)
	// when the attempt got the engine and when it let go; across a slot's attempts
	// they give the engine's idle time while it still had chunks to run.
	EngineBusy [2]BusySample `json:"engine_busy"`
	// WorkerEngines samples every engine of the worker, by slot, when the attempt
	// let go of its engine. Engines also run requests of chunks leased to other
	// engines, so a chunk's end is not when an engine stopped: the worker's last
	// attempt of a run says, through each engine's IdleSeconds, when each last worked.
	WorkerEngines []BusySample `json:"worker_engines,omitempty"`
	// GPUSeries is the GPUs' telemetry while the attempt ran, downsampled to at
	// most a few hundred points (report.DownsampleGPU), for the report's charts.
	GPUSeries []gpu.Sample `json:"gpu_series,omitempty"`
}

// EngineDeath is what a chunk attempt saw when its engine process died under it:
// which of the chunk's requests were in flight, and whether the attempt had the
// engine to itself. Later attempts of the chunk read these records to find a request
// that crashes the engine (a "poison" request) without blaming the innocent ones
// that happened to be in flight with it.
type EngineDeath struct {
	Chunk   int       `json:"chunk"`
	Attempt int       `json:"attempt"`
	Worker  string    `json:"worker"`
	Slot    int       `json:"slot"` // the slot whose engine died: another slot's, if it had taken some of the chunk's requests
	Time    time.Time `json:"time"`
	// InFlight are the custom_ids of the chunk's requests that were handed to an
	// engine and had no outcome when it died, in input order; requests still waiting
	// in the worker for an engine with room are not among them.
	InFlight []string `json:"in_flight"`
	// Alone says no other chunk's request was in the engine: whatever killed it
	// was among InFlight.
	Alone bool   `json:"alone"`
	Error string `json:"error,omitempty"`
}

// BusySample is an engine's cumulative busy seconds at a moment, and how long it had
// been empty then (0: it had requests in flight).
type BusySample struct {
	Time        time.Time `json:"time"`
	BusySeconds float64   `json:"busy_seconds"`
	IdleSeconds float64   `json:"idle_seconds,omitempty"`
	// Tokens are the prompt and completion tokens of every answer the engine has
	// given, whichever engine's chunk the request came from.
	Tokens int64 `json:"tokens,omitempty"`
}

// SampleEngine is a BusySample of an engine's running totals, taken now.
func SampleEngine(s engine.Stats) BusySample {
	return BusySample{Time: time.Now(), BusySeconds: s.BusySeconds, IdleSeconds: s.IdleSeconds,
		Tokens: s.PromptTokens + s.CompletionTokens}
}
