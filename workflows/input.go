// Package workflows holds vbatch's Temporal workflows: BatchInference, which plans a
// batch into durable chunks, fans them out to GPU workers and merges the answers.
package workflows

import (
	"regexp"
	"strings"
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
)

// Names that clients, workers and the UI share.
const (
	// ControlTaskQueue serves the workflow and the storage activities (Plan, Merge, Report).
	ControlTaskQueue = "vbatch"
	// ProgressQuery answers a Progress.
	ProgressQuery = "progress"
	// WorkflowType is what `temporal workflow start --type` and the UI name.
	WorkflowType = "BatchInference"
)

// Defaults of BatchInput, applied inside the workflow so that a run started from the
// UI or the temporal CLI with only {"input": …} gets them too.
const (
	DefaultModel             = "google/gemma-3-4b-it"
	DefaultChunkSize         = 256
	DefaultMaxInFlightChunks = 32
	DefaultMaxAttempts       = 5
	DefaultMaxLineBytes      = 1 << 20
	DefaultTemperature       = 0.7
	DefaultTopP              = 0.9
	DefaultMaxTokens         = 2000
	// DefaultCheckpointEvery is a default chunk: a chunk is one part of answers
	// unless it runs past DefaultCheckpointSeconds, which is what bounds the work
	// a lost worker costs. Every part is an S3 write for the GPU worker and a read
	// for Merge; at 64 a fast engine's chunk was four.
	DefaultCheckpointEvery   = DefaultChunkSize
	DefaultCheckpointSeconds = 10
	DefaultHeartbeatTimeout  = 2 * time.Minute
	// DefaultContinueAsNewEvery keeps one execution's history to a few thousand
	// events (about six a chunk): Temporal's limit is 51,200, and replaying a long
	// history slows every workflow task.
	DefaultContinueAsNewEvery = 1000
)

// BatchInput is the one argument of BatchInference. Every field but Input is optional.
type BatchInput struct {
	// Input is the JSONL file of requests: s3://bucket/key or file:///path. It may
	// hold template fields ({{.Date}}, {{.Time}}, {{.Schedule}}: see
	// internal/uritemplate), resolved from the time the run stands for: its
	// schedule's time for a scheduled run, else its start.
	Input string `json:"input"`
	// Output is the prefix under which the run's folder is written; default: the
	// input's folder. It may hold template fields as Input does.
	Output string `json:"output,omitempty"`
	// Timezone is the IANA zone in which template fields are resolved (default UTC).
	Timezone string `json:"timezone,omitempty"`
	// Model names the model; it picks the GPU task queue whose workers loaded it.
	Model string `json:"model,omitempty"`
	// Engine records the engine settings the run asks for (the worker's loaded engine serves them).
	Engine engine.Settings `json:"engine,omitempty"`
	// Sampling fills what a request line leaves out (temperature 0.7, top_p 0.9, max_tokens 2000).
	Sampling batchfile.Sampling `json:"sampling,omitempty"`
	// ChunkSize caps the requests of a chunk (default 256).
	ChunkSize int `json:"chunk_size,omitempty"`
	// ChunkTokens is a full chunk's estimated tokens (prompt bytes / 4 plus
	// max_tokens, or ExpectedCompletionTokens): chunks are balanced by engine work,
	// not lines. Default: ChunkSize requests of the input's mean size.
	ChunkTokens int64 `json:"chunk_tokens,omitempty"`
	// Engines is how many engines (GPUs) are expected to serve the run. Plan cuts
	// the last part of the input into smaller and smaller chunks for them, so that
	// they all finish within moments of each other. Default: the engines of the GPU
	// workers polling the model's queue when Plan runs (each says its count in its
	// Temporal identity), at most MaxInFlightChunks / 2, the most engines the chunk
	// window keeps busy at two chunks each, which is also the default where no worker
	// polls yet; guessing too many costs some more, smaller chunks at the end, too
	// few a tail.
	Engines int `json:"engines,omitempty"`
	// ExpectedCompletionTokens is what a completion usually takes, where it is well
	// below max_tokens; it makes the token estimate of chunks closer to the truth.
	ExpectedCompletionTokens int `json:"expected_completion_tokens,omitempty"`
	// KeepInputOrder feeds each chunk to its engine in input order, instead of
	// grouped by prompt prefix (the same system prompt and leading messages) for
	// the engine's prefix cache: for measuring what the grouping gains.
	KeepInputOrder bool `json:"keep_input_order,omitempty"`
	// MaxInFlightChunks bounds the chunks scheduled at once (default 32).
	MaxInFlightChunks int `json:"max_in_flight_chunks,omitempty"`
	// MaxAttempts bounds the attempts of one chunk (default 5).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxLineBytes is the longest accepted input line (default 1 MiB).
	MaxLineBytes int `json:"max_line_bytes,omitempty"`
	// CheckpointEvery and CheckpointSeconds: a chunk writes its answers to S3 every N
	// answers or T seconds, whichever comes first (defaults 256 and 10).
	CheckpointEvery   int `json:"checkpoint_every,omitempty"`
	CheckpointSeconds int `json:"checkpoint_seconds,omitempty"`
	// HeartbeatTimeoutSeconds is how long a chunk may go without a heartbeat before it is retried (default 120).
	HeartbeatTimeoutSeconds int `json:"heartbeat_timeout_seconds,omitempty"`
	// RetryOf names an earlier run (its workflow id) whose unfinished chunks this
	// run redoes — those that failed every attempt, or that a cancel cut short —
	// in the earlier run's folder, then merges the whole run again. The earlier
	// run's input, output and model come from its own start; Input and Output,
	// when given, name its folder directly instead.
	RetryOf string `json:"retry_of,omitempty"`
	// RetryEngineErrors makes a retry also redo the requests that ended with
	// engine_error.
	RetryEngineErrors bool `json:"retry_engine_errors,omitempty"`
	// Cache answers a request from the answer cache when the same model, engine
	// settings and request (sampling defaults applied, custom_id aside) were
	// answered before, and stores the new answers there: a rerun of unchanged
	// requests costs almost no GPU time. At temperature > 0 a hit is the one sample
	// the cache stored.
	Cache bool `json:"cache,omitempty"`
	// CachePrefix is where the answer cache lies; default: vbatch-cache/ at the
	// root of the output's bucket (beside the run folders for a file:// output).
	CachePrefix string `json:"cache_prefix,omitempty"`
	// Labels are free-form tags carried into the report.
	Labels map[string]string `json:"labels,omitempty"`
	// ContinueAsNewEvery is how many chunks one execution finishes before the run
	// continues as new (default 1000), or sooner when Temporal suggests it.
	ContinueAsNewEvery int `json:"continue_as_new_every,omitempty"`
	// Continuation is set by the run itself when it continues as new; never by a user.
	Continuation *Continuation `json:"continuation,omitempty"`
}

// withDefaults returns in with every unset field at its default.
func (in BatchInput) withDefaults() BatchInput {
	if in.Model == "" {
		in.Model = DefaultModel
	}
	if in.ChunkSize <= 0 {
		in.ChunkSize = DefaultChunkSize
	}
	if in.MaxInFlightChunks <= 0 {
		in.MaxInFlightChunks = DefaultMaxInFlightChunks
	}
	if in.MaxAttempts <= 0 {
		in.MaxAttempts = DefaultMaxAttempts
	}
	if in.MaxLineBytes <= 0 {
		in.MaxLineBytes = DefaultMaxLineBytes
	}
	if in.CheckpointEvery <= 0 {
		in.CheckpointEvery = DefaultCheckpointEvery
	}
	if in.CheckpointSeconds <= 0 {
		in.CheckpointSeconds = DefaultCheckpointSeconds
	}
	if in.ContinueAsNewEvery <= 0 {
		in.ContinueAsNewEvery = DefaultContinueAsNewEvery
	}
	if in.HeartbeatTimeoutSeconds <= 0 {
		in.HeartbeatTimeoutSeconds = int(DefaultHeartbeatTimeout / time.Second)
	}
	s := &in.Sampling
	if s.Temperature == nil {
		s.Temperature = ptr(DefaultTemperature)
	}
	if s.TopP == nil {
		s.TopP = ptr(DefaultTopP)
	}
	if s.MaxTokens == nil {
		s.MaxTokens = ptr(DefaultMaxTokens)
	}
	return in
}

func ptr[T any](v T) *T { return &v }

var unsafeQueueChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// GPUTaskQueue is the task queue of the GPU workers that loaded model: one queue per
// model, so a chunk only ever reaches an engine that has its model warm.
func GPUTaskQueue(model string) string {
	return "vbatch-gpu-" + strings.Trim(unsafeQueueChars.ReplaceAllString(strings.ToLower(model), "-"), "-")
}
