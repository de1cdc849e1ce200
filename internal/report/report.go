// Package report owns a run's benchmark report: the figures measured from the run's
// folder (plan, merged outputs, every chunk attempt's result and GPU telemetry), the
// comparison with the previous run of the same series, and their renderings:
// report.json, report.md and a self-contained report.html with SVG charts. The
// sections follow the seed report that vbatch started from.
//
// Files: report.go (the Report and Build), measure.go (Measure: reading the run's
// folder), answers.go (the one pass over output.jsonl, the chunks and errors.jsonl),
// schema.go (JSON-schema checks), derive.go (sections computed from the others),
// series.go (time series), compare.go (previous run, score changes), publish.go
// (writing the files, the series index), doc.go (the report as sections of tables),
// markdown.go, html.go and svg.go (the renderings).
package report

import (
	"fmt"
	"sort"
	"time"

	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/run"
)

// Report is report.json. Sections that a run did not record (an older report.json,
// a run rendered without its folder) are nil or empty, and the renderings say
// "not recorded" for them rather than show zeros.
type Report struct {
	Title     string            `json:"title"`
	RunID     string            `json:"run_id"`
	Status    string            `json:"status"`
	Simulated bool              `json:"simulated"` // the sim engine answered: no figure here is real inference
	Input     string            `json:"input"`
	Model     string            `json:"model"`
	Labels    map[string]string `json:"labels,omitempty"`
	// SeriesPrefix is where the index of the run's series lives when not beside
	// the run's folder (SeriesIndexURI).
	SeriesPrefix string `json:"series_prefix,omitempty"`
	// Scheduled is the time a scheduled run stands for: its schedule's time, also
	// when it ran late or was backfilled. Its series is in this order; other runs
	// are in the order they started.
	Scheduled time.Time `json:"scheduled,omitzero"`
	// Notes are said under the title, for what the figures cannot say themselves
	// (random weights, how a report was regenerated).
	Notes     []string        `json:"notes,omitempty"`
	Generated time.Time       `json:"generated,omitzero"`
	Engines   []EngineSummary `json:"engines"`
	GPUs      []GPUSummary    `json:"gpus,omitempty"` // NVML telemetry while chunks ran; none on hosts without GPUs
	Config    RunConfig       `json:"config"`
	Memory    []Memory        `json:"memory,omitempty"`
	Counts    Counts          `json:"counts"`
	Tokens    Tokens          `json:"tokens"`
	// TokenStats are the per-request distributions, measured from output.jsonl.
	TokenStats  *TokenStats    `json:"token_stats,omitempty"`
	Context     ContextUse     `json:"context"`
	Timing      Timing         `json:"timing"`
	Reliability Reliability    `json:"reliability"`
	Quality     *Quality       `json:"quality,omitempty"`
	Sample      *Sample        `json:"sample,omitempty"`
	Projection  Projection     `json:"projection"`
	Series      Series         `json:"series"`
	Chunks      []ChunkSummary `json:"chunks"`
	Files       Files          `json:"files"`
	Comparison  *Comparison    `json:"comparison,omitempty"`
	// Cache is what the answer cache did; nil for a run without one.
	Cache *CacheUse `json:"cache,omitempty"`
	// EngineIdleFraction is the engines' idle time while they had chunks left, over
	// their active time, all engines together.
	EngineIdleFraction float64 `json:"engine_idle_fraction"`

	// scores are the answers' candidate scores by custom_id, kept from Measure's
	// pass over output.jsonl for the comparison with the next run; never written.
	scores *scoreSet
	// heartbeat is Inputs.Heartbeat, for Publish's reading of the previous run.
	heartbeat func()
}

// EngineSummary is one engine that answered chunks of the run.
type EngineSummary struct {
	Worker string       `json:"worker"`
	Slot   int          `json:"slot"`
	Ready  engine.Ready `json:"ready"`
	Chunks int          `json:"chunks"`
	// From the engine's first chunk to its last, the time it had requests in flight
	// and the share it had none: idle while it still had work to do.
	ActiveSeconds float64 `json:"active_seconds"`
	BusySeconds   float64 `json:"busy_seconds"`
	IdleFraction  float64 `json:"idle_fraction"`
	// Tokens are the prompt and completion tokens of the answers this engine
	// produced, over the time from its first chunk's start to its last chunk's end:
	// read from the engine's own count where the attempts sampled it, since an
	// engine also answers requests of chunks leased to the worker's other engines;
	// else those of its chunks' answers.
	Tokens          int64   `json:"tokens,omitempty"`
	WallSeconds     float64 `json:"wall_seconds,omitempty"`
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`

	first, last run.BusySample
	counted     bool // Tokens came from the engine's count, not its chunks' answers
}

// Name is how the report names an engine: worker/slot.
func (e EngineSummary) Name() string { return engineName(e.Worker, e.Slot) }

func engineName(worker string, slot int) string { return fmt.Sprintf("%s/%d", worker, slot) }

// GPUSummary is one GPU's NVML telemetry over the chunks that ran on it. Chunks that
// overlapped on one GPU weigh its samples more than once in the means.
type GPUSummary struct {
	Worker             string  `json:"worker"`
	Index              int     `json:"index"`
	UUID               string  `json:"uuid"`
	Name               string  `json:"name"`
	MemoryTotalGiB     float64 `json:"memory_total_gib"`
	MemoryPeakGiB      float64 `json:"memory_peak_gib"`
	UtilizationMeanPct float64 `json:"utilization_mean_pct"`
	UtilizationMaxPct  float64 `json:"utilization_max_pct"`
	PowerMeanWatts     float64 `json:"power_mean_watts"`
	TemperatureMaxC    float64 `json:"temperature_max_c"`
	Samples            int     `json:"samples"`
}

// Counts are request and chunk counts.
type Counts struct {
	Requests     int            `json:"requests"`
	Valid        int            `json:"valid"`
	Answered     int            `json:"answered"`
	Errors       int            `json:"errors"`
	ErrorsByCode map[string]int `json:"errors_by_code,omitempty"`
	Chunks       int            `json:"chunks"`
	FailedChunks int            `json:"failed_chunks"`
	Attempts     int            `json:"attempts"`
	Retries      int            `json:"retries"`
}

// CacheUse is what the answer cache (internal/answercache) did for a run, counted
// over the answers merged into its output: each request once.
type CacheUse struct {
	Prefix string `json:"prefix,omitempty"`
	// Hits are answers from the cache; Misses are answers and per-request errors
	// that an engine produced after the cache had none.
	Hits   int `json:"hits"`
	Misses int `json:"misses"`
	// SavedEngineSeconds is what the hits cost their engines when they were first
	// answered (their shares of the engines' busy time), and SavedTokens their
	// prompt and completion tokens: the GPU work this run did not redo.
	SavedEngineSeconds    float64 `json:"saved_engine_seconds"`
	SavedPromptTokens     int64   `json:"saved_prompt_tokens"`
	SavedCompletionTokens int64   `json:"saved_completion_tokens"`
}

// Add counts o's hits, misses and savings into c.
func (c *CacheUse) Add(o CacheUse) {
	c.Hits += o.Hits
	c.Misses += o.Misses
	c.SavedEngineSeconds += o.SavedEngineSeconds
	c.SavedPromptTokens += o.SavedPromptTokens
	c.SavedCompletionTokens += o.SavedCompletionTokens
}

// Tokens are token totals and averages per answered request.
type Tokens struct {
	Prompt              int64   `json:"prompt"`
	Completion          int64   `json:"completion"`
	Total               int64   `json:"total"`
	AvgPrompt           float64 `json:"avg_prompt"`
	AvgCompletion       float64 `json:"avg_completion"`
	TokensPerSecond     float64 `json:"tokens_per_second"` // total tokens / generation seconds
	RequestsPerSecond   float64 `json:"requests_per_second"`
	PerEngineTokensPerS float64 `json:"per_engine_tokens_per_second"`
	// Cached are the prompt tokens the engines served from their prefix cache
	// (usage.prompt_tokens_details.cached_tokens), PrefixCacheHitRate their share
	// of the prompt tokens.
	Cached             int64   `json:"cached"`
	PrefixCacheHitRate float64 `json:"prefix_cache_hit_rate"`
}

// Timing is where the run's wall time went.
type Timing struct {
	Started           time.Time `json:"started"`
	Finished          time.Time `json:"finished"`
	PlanSeconds       float64   `json:"plan_seconds"`
	GenerationSeconds float64   `json:"generation_seconds"`
	FinishSeconds     float64   `json:"finish_seconds"` // merge and report
	TotalSeconds      float64   `json:"total_seconds"`
	ModelLoadSeconds  float64   `json:"model_load_seconds"` // the slowest engine's load, paid once at worker start
	// EngineFinishSpreadSeconds is the run's tail: from the first engine to stop
	// working on the run to the last one (0 with one engine). Where the workers
	// sampled all their engines (EngineLastBusy), an engine stops when it last had
	// requests; before that, when its last chunk ended.
	EngineFinishSpreadSeconds float64 `json:"engine_finish_spread_seconds"`
	// EngineLastBusy is when each engine, by name, last had requests of the run.
	EngineLastBusy map[string]time.Time `json:"engine_last_busy,omitempty"`
}

// ChunkSummary is one chunk attempt.
type ChunkSummary struct {
	Chunk    int     `json:"chunk"`
	Attempt  int     `json:"attempt"`
	Worker   string  `json:"worker"`
	Slot     int     `json:"slot"`
	Outcome  string  `json:"outcome"`
	Requests int     `json:"requests"`
	Answered int     `json:"answered"`
	Seconds  float64 `json:"seconds"`
	StartS   float64 `json:"start_s"` // since the run started
}

// Files are the run's outputs.
type Files struct {
	Output      string `json:"output"`
	Errors      string `json:"errors"`
	Manifest    string `json:"manifest"`
	OutputBytes int64  `json:"output_bytes"`
	ErrorsBytes int64  `json:"errors_bytes"`
	OutputLines int    `json:"output_lines,omitempty"`
	ErrorsLines int    `json:"errors_lines,omitempty"`
	// Report are the report's own files, relative to its folder: report.json,
	// report.md, report.html and the charts, as WriteFiles wrote them.
	Report []string `json:"report,omitempty"`
}

// Inputs are the measurements a report is built from.
type Inputs struct {
	RunID, Status, Input, Model    string
	Labels                         map[string]string
	SeriesPrefix                   string
	Scheduled                      time.Time
	Lines, Valid, Answered, Errors int
	ErrorsByCode                   map[string]int
	FailedChunks, Chunks           int
	PromptTokens, CompletionTokens int64
	Started, Generation, Finished  time.Time
	MergeStarted                   time.Time
	Attempts                       []run.AttemptResult
	Output, ErrorsURI, Manifest    string
	OutputBytes, ErrorsBytes       int64
	Cache                          *CacheUse
	// Heartbeat, when set, is called at every chunk and every few thousand lines
	// while Measure and then Publish read the run's files, so that an activity can
	// heartbeat through a long report.
	Heartbeat func()
}

// Build computes a report from its inputs.
func Build(in Inputs) Report {
	r := Report{
		RunID: in.RunID, Status: in.Status, Input: in.Input, Model: in.Model, Labels: in.Labels,
		SeriesPrefix: in.SeriesPrefix, Scheduled: in.Scheduled,
		Counts: Counts{Requests: in.Lines, Valid: in.Valid, Answered: in.Answered, Errors: in.Errors,
			ErrorsByCode: in.ErrorsByCode, Chunks: in.Chunks, FailedChunks: in.FailedChunks, Attempts: len(in.Attempts)},
		Files: Files{Output: in.Output, Errors: in.ErrorsURI, Manifest: in.Manifest, OutputBytes: in.OutputBytes, ErrorsBytes: in.ErrorsBytes},
		Cache: in.Cache,
	}
	engines := map[[2]any]*EngineSummary{}
	spans := map[[2]any][2]time.Time{}
	for _, a := range in.Attempts {
		r.Simulated = r.Simulated || a.Engine.Simulated
		if a.Attempt > 1 {
			r.Counts.Retries++
		}
		key := [2]any{a.Worker, a.EngineSlot}
		e, ok := engines[key]
		if !ok {
			e = &EngineSummary{Worker: a.Worker, Slot: a.EngineSlot, Ready: a.Engine}
			engines[key] = e
		}
		e.Chunks++
		if start := a.EngineBusy[0]; !start.Time.IsZero() && (e.first.Time.IsZero() || start.Time.Before(e.first.Time)) {
			e.first = start
		}
		if end := a.EngineBusy[1]; end.Time.After(e.last.Time) {
			e.last = end
		}
		span := spans[key]
		if span[0].IsZero() || a.Started.Before(span[0]) {
			span[0] = a.Started
		}
		if a.Finished.After(span[1]) {
			span[1] = a.Finished
		}
		spans[key] = span
		if a.Engine.LoadSeconds > r.Timing.ModelLoadSeconds {
			r.Timing.ModelLoadSeconds = a.Engine.LoadSeconds
		}
		r.Chunks = append(r.Chunks, ChunkSummary{Chunk: a.Chunk, Attempt: a.Attempt, Worker: a.Worker, Slot: a.EngineSlot,
			Outcome: a.Outcome, Requests: a.Requests, Answered: a.Answered,
			Seconds: a.Finished.Sub(a.Started).Seconds(), StartS: a.Started.Sub(in.Started).Seconds()})
	}
	r.GPUs = gpuSummaries(in.Attempts)
	var active, busy float64
	var firstDone, lastDone time.Time
	for key, e := range engines {
		if end := spans[key][1]; !end.IsZero() {
			if firstDone.IsZero() || end.Before(firstDone) {
				firstDone = end
			}
			lastDone = later(lastDone, end)
		}
		// A restarted engine starts its clock again: its span cannot be measured.
		if !e.first.Time.IsZero() && e.last.Time.After(e.first.Time) && e.last.BusySeconds >= e.first.BusySeconds {
			e.ActiveSeconds = e.last.Time.Sub(e.first.Time).Seconds()
			e.BusySeconds = min(e.last.BusySeconds-e.first.BusySeconds, e.ActiveSeconds)
			e.IdleFraction = 1 - e.BusySeconds/e.ActiveSeconds
			active += e.ActiveSeconds
			busy += e.BusySeconds
			if e.last.Tokens > 0 && e.last.Tokens >= e.first.Tokens {
				e.Tokens, e.counted = e.last.Tokens-e.first.Tokens, true
			}
		}
		e.WallSeconds = spans[key][1].Sub(spans[key][0]).Seconds()
		r.Engines = append(r.Engines, *e)
	}
	if active > 0 {
		r.EngineIdleFraction = 1 - busy/active
	}
	r.Timing.EngineFinishSpreadSeconds = seconds(firstDone, lastDone)
	if last := engineLastBusy(in.Attempts); len(last) > 0 {
		r.Timing.EngineLastBusy = last
		firstDone, lastDone = time.Time{}, time.Time{}
		for _, t := range last {
			if firstDone.IsZero() || t.Before(firstDone) {
				firstDone = t
			}
			lastDone = later(lastDone, t)
		}
		r.Timing.EngineFinishSpreadSeconds = seconds(firstDone, lastDone)
	}
	sort.Slice(r.Engines, func(i, j int) bool {
		if r.Engines[i].Worker != r.Engines[j].Worker {
			return r.Engines[i].Worker < r.Engines[j].Worker
		}
		return r.Engines[i].Slot < r.Engines[j].Slot
	})
	sort.Slice(r.Chunks, func(i, j int) bool {
		if r.Chunks[i].Chunk != r.Chunks[j].Chunk {
			return r.Chunks[i].Chunk < r.Chunks[j].Chunk
		}
		return r.Chunks[i].Attempt < r.Chunks[j].Attempt
	})

	r.Timing.Started, r.Timing.Finished = in.Started, in.Finished
	r.Timing.PlanSeconds = seconds(in.Started, in.Generation)
	r.Timing.GenerationSeconds = seconds(in.Generation, in.MergeStarted)
	r.Timing.FinishSeconds = seconds(in.MergeStarted, in.Finished)
	r.Timing.TotalSeconds = seconds(in.Started, in.Finished)

	r.Tokens.Prompt, r.Tokens.Completion = in.PromptTokens, in.CompletionTokens
	r.rates()
	r.Title = "vbatch run " + in.RunID
	if r.Simulated {
		r.Title += " (SIMULATED engine: no real inference; throughput figures are simulated)"
	}
	return r
}

// ping calls a heartbeat function that may be nil.
func ping(heartbeat func()) {
	if heartbeat != nil {
		heartbeat()
	}
}

// seconds is the time from a to b, 0 when either is not known.
func seconds(a, b time.Time) float64 {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a).Seconds()
}

// rates computes the token totals, averages and rates from the token counts, the
// answered count and the generation time.
func (r *Report) rates() {
	t := &r.Tokens
	t.Total = t.Prompt + t.Completion
	t.AvgPrompt, t.AvgCompletion = 0, 0
	if n := r.Counts.Answered; n > 0 {
		t.AvgPrompt = float64(t.Prompt) / float64(n)
		t.AvgCompletion = float64(t.Completion) / float64(n)
	}
	t.PrefixCacheHitRate = 0
	if t.Prompt > 0 {
		t.PrefixCacheHitRate = float64(t.Cached) / float64(t.Prompt)
	}
	t.TokensPerSecond, t.RequestsPerSecond, t.PerEngineTokensPerS = 0, 0, 0
	if s := r.Timing.GenerationSeconds; s > 0 {
		t.TokensPerSecond = float64(t.Total) / s
		t.RequestsPerSecond = float64(r.Counts.Answered) / s
		if len(r.Engines) > 0 {
			t.PerEngineTokensPerS = t.TokensPerSecond / float64(len(r.Engines))
		}
	}
}

const gib = 1 << 30

func gpuSummaries(attempts []run.AttemptResult) []GPUSummary {
	type acc struct {
		GPUSummary
		util, power float64
	}
	byUUID := map[string]*acc{}
	var order []string
	for _, a := range attempts {
		for _, g := range a.GPUs {
			if g.Samples == 0 {
				continue
			}
			s, ok := byUUID[g.UUID]
			if !ok {
				s = &acc{GPUSummary: GPUSummary{Worker: a.Worker, Index: g.Index, UUID: g.UUID, Name: g.Name,
					MemoryTotalGiB: float64(g.MemoryTotalBytes) / gib}}
				byUUID[g.UUID] = s
				order = append(order, g.UUID)
			}
			n := float64(g.Samples)
			s.Samples += g.Samples
			s.util += g.UtilizationMeanPct * n
			s.power += g.PowerMeanWatts * n
			s.MemoryPeakGiB = max(s.MemoryPeakGiB, float64(g.MemoryPeakBytes)/gib)
			s.UtilizationMaxPct = max(s.UtilizationMaxPct, g.UtilizationMaxPct)
			s.TemperatureMaxC = max(s.TemperatureMaxC, g.TemperatureMaxC)
		}
	}
	sort.Strings(order)
	out := make([]GPUSummary, 0, len(order))
	for _, uuid := range order {
		s := byUUID[uuid]
		s.UtilizationMeanPct = s.util / float64(s.Samples)
		s.PowerMeanWatts = s.power / float64(s.Samples)
		out = append(out, s.GPUSummary)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Worker != out[j].Worker {
			return out[i].Worker < out[j].Worker
		}
		return out[i].Index < out[j].Index
	})
	return out
}

// engineLastBusy says when each engine last had requests of the run, from the
// samples of all its engines that each completed attempt took as it let go of its
// own (run.AttemptResult.WorkerEngines). Of each worker's earliest and latest
// samples, an engine counts if a chunk was leased to it or its busy time grew
// between them (it ran requests of other engines' chunks), and it last worked its
// idle seconds before the latest sample. Nil where no attempt sampled.
func engineLastBusy(attempts []run.AttemptResult) map[string]time.Time {
	type span struct {
		first, last []run.BusySample
		leased      map[int]bool
	}
	workers := map[string]*span{}
	for _, a := range attempts {
		if a.Outcome != "completed" || len(a.WorkerEngines) == 0 {
			continue
		}
		w := workers[a.Worker]
		if w == nil {
			w = &span{first: a.WorkerEngines, last: a.WorkerEngines, leased: map[int]bool{}}
			workers[a.Worker] = w
		}
		w.leased[a.EngineSlot] = true
		if t := a.WorkerEngines[0].Time; t.Before(w.first[0].Time) {
			w.first = a.WorkerEngines
		} else if t.After(w.last[0].Time) {
			w.last = a.WorkerEngines
		}
	}
	if len(workers) == 0 {
		return nil
	}
	out := map[string]time.Time{}
	for name, w := range workers {
		for slot, s := range w.last {
			grew := slot < len(w.first) && s.BusySeconds > w.first[slot].BusySeconds
			if w.leased[slot] || grew {
				out[engineName(name, slot)] = s.Time.Add(-time.Duration(s.IdleSeconds * float64(time.Second)))
			}
		}
	}
	return out
}
