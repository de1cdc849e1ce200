package report

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// RunConfig is how the run was set up, as its plan and its requests show it.
type RunConfig struct {
	InputBytes int64  `json:"input_bytes,omitempty"`
	ConfigHash string `json:"config_hash,omitempty"`
	Chunks     int    `json:"chunks"`
	// ChunkSize is the largest chunk's request count: the run's chunk_size unless
	// every chunk was smaller.
	ChunkSize int `json:"chunk_size,omitempty"`
	// Sampling are the distinct sampling settings of the valid requests (run
	// defaults filled in), most common first.
	Sampling []SamplingCount `json:"sampling,omitempty"`
}

// SamplingCount is one sampling setting and how many requests had it.
type SamplingCount struct {
	MaxTokens      *int     `json:"max_tokens,omitempty"`
	Temperature    *float64 `json:"temperature,omitempty"`
	TopP           *float64 `json:"top_p,omitempty"`
	ResponseFormat string   `json:"response_format,omitempty"` // json_schema, json_object, or empty for text
	Requests       int      `json:"requests"`
}

// Reliability is what went wrong on the way and what it cost.
type Reliability struct {
	Attempts       int `json:"attempts"`
	Retries        int `json:"retries"`         // attempts after a chunk's first
	FailedAttempts int `json:"failed_attempts"` // attempts that ended failed (the chunk was retried or failed)
	// LostAttempts are attempt numbers that left no result: the attempt timed out
	// (heartbeat or start-to-close) or its worker was killed.
	LostAttempts   int `json:"lost_attempts"`
	EngineRestarts int `json:"engine_restarts"` // engine processes that died under a chunk and were restarted
	// OOMs are failed attempts and failed requests whose error says the GPU ran
	// out of memory.
	OOMs         int            `json:"ooms"`
	FailedChunks int            `json:"failed_chunks"`
	ErrorsByCode map[string]int `json:"errors_by_code,omitempty"`
	// ErrorExamples are the first few lines of errors.jsonl.
	ErrorExamples []ErrorExample `json:"error_examples,omitempty"`
	// Measured says the chunk folders were read (deaths, lost attempts); false in a
	// report rendered from an older report.json.
	Measured bool `json:"measured"`
}

// ErrorExample is one line of errors.jsonl.
type ErrorExample struct {
	CustomID string `json:"custom_id"`
	Line     int    `json:"line,omitempty"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

// oomPattern finds an out-of-memory error in an engine's or attempt's message.
var oomPattern = regexp.MustCompile(`(?i)out of memory|\boom\b|OutOfMemoryError`)

// Measure builds the report of the run in layout's folder. in carries what only
// the workflow knows (status, timings, labels); everything else is measured from
// the folder: the manifest, every chunk attempt's result and engine death record,
// and one streaming pass over output.jsonl (merge-joined with the chunk files for
// each answer's request), then errors.jsonl. Counts and tokens come from the files,
// not from in. Its memory is about 20 bytes per answer (the candidate scores, by a
// hash of the custom_id) plus one chunk file's line at a time; the token
// distributions are counts per distinct value.
func Measure(ctx context.Context, store blob.Store, layout run.Layout, in Inputs) (Report, error) {
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, store, layout.Manifest(), &manifest); err != nil {
		return Report{}, fmt.Errorf("read manifest: %w", err)
	}
	folders, err := readChunkFolders(ctx, store, layout, manifest.Chunks, in.Heartbeat)
	if err != nil {
		return Report{}, err
	}
	if in.Attempts == nil {
		in.Attempts = folders.attempts
	}
	if in.Started.IsZero() {
		// Without the workflow's start, the series start at the first chunk.
		for _, a := range in.Attempts {
			if in.Started.IsZero() || a.Started.Before(in.Started) {
				in.Started = a.Started
			}
		}
	}
	if in.RunID == "" {
		in.RunID = layout.RunID
	}
	if in.Input == "" {
		in.Input = manifest.Input
	}
	if in.Model == "" {
		in.Model = manifest.Model
	}
	if in.Lines == 0 && in.Valid == 0 {
		in.Lines, in.Valid = manifest.Lines, manifest.Valid
	}
	in.Chunks = len(manifest.Chunks)
	in.Manifest, in.Output, in.ErrorsURI = layout.Manifest(), layout.Output(), layout.Errors()
	r := Build(in)
	r.heartbeat = in.Heartbeat
	r.Generated = time.Now().UTC()
	r.Config = RunConfig{InputBytes: manifest.InputBytes, ConfigHash: manifest.ConfigHash, Chunks: len(manifest.Chunks)}
	for _, c := range manifest.Chunks {
		r.Config.ChunkSize = max(r.Config.ChunkSize, c.Requests)
	}
	r.Reliability = Reliability{Attempts: len(in.Attempts), Retries: r.Counts.Retries, FailedChunks: in.FailedChunks,
		LostAttempts: folders.lost, EngineRestarts: folders.deaths, Measured: true}
	for _, a := range in.Attempts {
		if a.Outcome == "failed" {
			r.Reliability.FailedAttempts++
			if oomPattern.MatchString(a.Error) {
				r.Reliability.OOMs++
			}
		}
	}

	p := newPass(&r, manifest.Chunks, in.Attempts)
	if err := p.outputs(ctx, store, layout, in.Heartbeat); err != nil {
		return Report{}, err
	}
	if err := p.errors(ctx, store, layout.Errors(), in.Heartbeat); err != nil {
		return Report{}, err
	}
	p.finish()
	r.Series.GPUs = gpuTracks(in.Attempts, r.seriesOrigin())
	Derive(&r)
	return r, nil
}

// chunkFolders is what the chunk folders hold besides the answers.
type chunkFolders struct {
	attempts []run.AttemptResult
	deaths   int // engine death records
	lost     int // attempt numbers without a result
}

// readChunkFolders lists every chunk's folder once and reads its attempt results.
func readChunkFolders(ctx context.Context, store blob.Store, layout run.Layout, chunks []run.ChunkPlan, heartbeat func()) (chunkFolders, error) {
	var f chunkFolders
	for _, chunk := range chunks {
		ping(heartbeat)
		objects, err := store.List(ctx, layout.ChunkDir(chunk.Index))
		if err != nil {
			return f, fmt.Errorf("list chunk %d: %w", chunk.Index, err)
		}
		lastAttempt, results := 0, 0
		for _, o := range objects {
			if n, ok := run.AttemptNumber(o.URI); ok {
				lastAttempt = max(lastAttempt, n)
			}
			switch {
			case run.IsDeath(o.URI):
				f.deaths++
			case run.IsAttemptResult(o.URI):
				var a run.AttemptResult
				if err := blob.ReadJSON(ctx, store, o.URI, &a); err != nil {
					return f, fmt.Errorf("read %s: %w", o.URI, err)
				}
				f.attempts = append(f.attempts, a)
				results++
			}
		}
		// Attempts are numbered from 1 without gaps: a number with no result is an
		// attempt that never got to write one.
		f.lost += max(0, lastAttempt-results)
	}
	sort.SliceStable(f.attempts, func(i, j int) bool {
		if f.attempts[i].Chunk != f.attempts[j].Chunk {
			return f.attempts[i].Chunk < f.attempts[j].Chunk
		}
		return f.attempts[i].Attempt < f.attempts[j].Attempt
	})
	return f, nil
}
