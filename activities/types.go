// Package activities holds vbatch's Temporal activities: Plan, Merge and Report on the
// control worker, which only move bytes between object storage and the run's folder,
// and GenerateChunk on the GPU workers, which feeds a chunk to a warm engine.
package activities

import (
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
)

// Error types that the workflow's retry policies and callers match on.
const (
	// ErrTypeConfig marks errors no retry can mend: a missing input, an unreadable
	// manifest, a model the worker does not serve.
	ErrTypeConfig = "ConfigError"
	// ErrTypeEngineDied marks a chunk attempt whose engine process died; the next
	// attempt resumes from the checkpoint on a restarted engine.
	ErrTypeEngineDied = "EngineDied"
	// ErrTypeWorkerStopping marks a chunk attempt cut short by its worker's graceful
	// stop; what it answered is checkpointed and another worker resumes it.
	ErrTypeWorkerStopping = "WorkerStopping"
	// ErrTypeCheckpoint marks a chunk attempt that could not write its answers to
	// object storage for longer than it may keep them in memory.
	ErrTypeCheckpoint = "CheckpointFailed"
	// ErrTypeInjectedFault marks a failure injected by a test-only worker flag.
	ErrTypeInjectedFault = "InjectedFault"
)

// PlanInput asks Plan to split an input file into the run's chunks.
type PlanInput struct {
	Run          run.Layout         `json:"run"`
	Input        string             `json:"input"`
	Model        string             `json:"model"`
	Sampling     batchfile.Sampling `json:"sampling"`
	ChunkSize    int                `json:"chunk_size"`
	MaxLineBytes int                `json:"max_line_bytes"`
	// ChunkTokens is a full chunk's estimated tokens; 0: ChunkSize requests of the
	// input's mean size. ChunkSize still caps a chunk's lines.
	ChunkTokens int64 `json:"chunk_tokens,omitempty"`
	// Engines is how many engines are expected to serve the run: the last part of
	// the input is cut finer so that they finish together (chunksize.go). 0: the
	// engines of the GPU workers polling GPUTaskQueue, at most MaxInFlightChunks / 2
	// (or that, where none says).
	Engines           int    `json:"engines,omitempty"`
	GPUTaskQueue      string `json:"gpu_task_queue,omitempty"`
	MaxInFlightChunks int    `json:"max_in_flight_chunks,omitempty"`
	// ExpectedCompletionTokens, when set, is what a completion is estimated to
	// take instead of its max_tokens (when smaller).
	ExpectedCompletionTokens int `json:"expected_completion_tokens,omitempty"`
}

// PlanResult is the plan, as counts and the chunk list; the manifest in S3 holds the same.
type PlanResult struct {
	Manifest   string          `json:"manifest"`
	InputBytes int64           `json:"input_bytes"`
	Lines      int             `json:"lines"`
	Valid      int             `json:"valid"`
	Invalid    int             `json:"invalid"`
	Chunks     []run.ChunkPlan `json:"chunks"`
}

// PlanSummary is a PlanResult without its chunk list.
type PlanSummary struct {
	Manifest   string `json:"manifest"`
	InputBytes int64  `json:"input_bytes"`
	Lines      int    `json:"lines"`
	Valid      int    `json:"valid"`
	Invalid    int    `json:"invalid"`
	Chunks     int    `json:"chunks"`
}

// Summary drops the chunk list, which later steps read from the manifest.
func (p PlanResult) Summary() PlanSummary {
	return PlanSummary{Manifest: p.Manifest, InputBytes: p.InputBytes, Lines: p.Lines, Valid: p.Valid, Invalid: p.Invalid, Chunks: len(p.Chunks)}
}

// GenerateInput asks a GPU worker to answer one chunk.
type GenerateInput struct {
	Run               run.Layout    `json:"run"`
	Chunk             run.ChunkPlan `json:"chunk"`
	Model             string        `json:"model"`
	CheckpointEvery   int           `json:"checkpoint_every"`
	CheckpointSeconds int           `json:"checkpoint_seconds"`
	// AttemptBase is the number of attempts earlier runs made on this chunk (a
	// retry run's chunks): Temporal's attempt n is stored as attempt AttemptBase+n,
	// so keys never collide and sort after the earlier ones. Engine deaths of those
	// earlier attempts are not held against any request.
	AttemptBase int `json:"attempt_base,omitempty"`
	// RetryEngineErrors redoes the requests whose answer from an earlier run is an
	// engine_error.
	RetryEngineErrors bool `json:"retry_engine_errors,omitempty"`
	// Cache is the answer cache's prefix (internal/answercache); empty: no cache.
	Cache string `json:"cache,omitempty"`
	// KeepInputOrder feeds the chunk in input order instead of grouped by prompt
	// prefix (prefix.go).
	KeepInputOrder bool `json:"keep_input_order,omitempty"`
}

// GenerateResult is what one chunk's successful attempt did.
type GenerateResult struct {
	Chunk    int `json:"chunk"`
	Attempt  int `json:"attempt"`
	Answered int `json:"answered"` // answers, this attempt's and resumed ones
	Failed   int `json:"failed"`   // per-request errors
	Resumed  int `json:"resumed"`
	Blamed   int `json:"blamed,omitempty"` // requests recorded as engine_error for crashing the engine
	// CacheHits are this attempt's answers from the answer cache; CacheMisses the
	// requests it looked up there in vain and sent to the engine.
	CacheHits        int     `json:"cache_hits,omitempty"`
	CacheMisses      int     `json:"cache_misses,omitempty"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Seconds          float64 `json:"seconds"`
	Worker           string  `json:"worker"`
	Backend          string  `json:"backend"`
	Simulated        bool    `json:"simulated"`
}

// GenerateProgress is a GenerateChunk heartbeat: a hint for the next attempt; the
// checkpoint parts in S3 are the truth.
type GenerateProgress struct {
	Done   int   `json:"done"`
	Tokens int64 `json:"tokens"`
	Parts  int   `json:"parts"`
}

// ChunkFailure is a chunk that failed every attempt, and why.
type ChunkFailure struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// MergeInput asks Merge to write output.jsonl and errors.jsonl for a run.
type MergeInput struct {
	Run       run.Layout     `json:"run"`
	Failed    []ChunkFailure `json:"failed,omitempty"`
	Cancelled []int          `json:"cancelled,omitempty"`
	// Cache says the run used the answer cache at CachePrefix: Merge then counts
	// its hits and misses.
	Cache       bool   `json:"cache,omitempty"`
	CachePrefix string `json:"cache_prefix,omitempty"`
}

// MergeResult counts what Merge wrote.
type MergeResult struct {
	Output           string         `json:"output"`
	ErrorsURI        string         `json:"errors_uri"`
	Answered         int            `json:"answered"`
	Errors           int            `json:"errors"`
	ErrorsByCode     map[string]int `json:"errors_by_code,omitempty"`
	PromptTokens     int64          `json:"prompt_tokens"`
	CompletionTokens int64          `json:"completion_tokens"`
	OutputBytes      int64          `json:"output_bytes"`
	ErrorsBytes      int64          `json:"errors_bytes"`
	// Cache is what the answer cache did for the run; nil without a cache.
	Cache *report.CacheUse `json:"cache,omitempty"`
}

// RetryInput asks PlanRetry what is left to do in an earlier run.
type RetryInput struct {
	// RetryOf is the earlier run's workflow id.
	RetryOf string `json:"retry_of"`
	// Input and Output, when given, locate the earlier run's folder directly
	// (<output or the input's folder>/<run id>/) instead of looking its input up in
	// Temporal: for runs whose history is gone.
	Input             string `json:"input,omitempty"`
	Output            string `json:"output,omitempty"`
	RetryEngineErrors bool   `json:"retry_engine_errors,omitempty"`
}

// RetryPlan is an earlier run's folder and plan, and the chunks that still have
// requests without an answer (or, with RetryEngineErrors, with an engine_error).
type RetryPlan struct {
	Run   run.Layout   `json:"run"`
	Input string       `json:"input"`
	Model string       `json:"model"`
	Plan  PlanResult   `json:"plan"` // the earlier run's plan, every chunk
	Redo  []RetryChunk `json:"redo"`
}

// RetryChunk is one chunk a retry redoes.
type RetryChunk struct {
	Index        int `json:"index"`
	AttemptBase  int `json:"attempt_base"`
	Missing      int `json:"missing"`       // requests without any answer
	EngineErrors int `json:"engine_errors"` // requests whose answer is an engine_error
}

// ReportInput is everything the workflow knows that the run's folder does not.
type ReportInput struct {
	Run    run.Layout        `json:"run"`
	Input  string            `json:"input"`
	Model  string            `json:"model"`
	Status string            `json:"status"`
	Labels map[string]string `json:"labels,omitempty"`
	// SeriesPrefix is where the series index lives when not beside the run's
	// folder: a templated output's fixed part.
	SeriesPrefix string `json:"series_prefix,omitempty"`
	// Scheduled is the time a scheduled run stands for; zero for other runs.
	Scheduled         time.Time      `json:"scheduled,omitzero"`
	RetryOf           string         `json:"retry_of,omitempty"`
	Plan              PlanSummary    `json:"plan"`
	Merge             MergeResult    `json:"merge"`
	FailedChunks      []ChunkFailure `json:"failed_chunks,omitempty"`
	Started           time.Time      `json:"started"`
	GenerationStarted time.Time      `json:"generation_started"`
	MergeStarted      time.Time      `json:"merge_started"`
}

// LoadChunksInput names chunks of a run's plan by index ranges.
type LoadChunksInput struct {
	Run    run.Layout       `json:"run"`
	Chunks []run.IndexRange `json:"chunks"`
}
