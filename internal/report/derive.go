package report

import (
	"slices"
	"strings"
)

// Memory is one engine's GPU memory: what the engine says it allocated (its ready
// event) against what NVML saw on its GPUs.
type Memory struct {
	Engine string `json:"engine"`
	GPUs   string `json:"gpus,omitempty"` // names of the engine's GPUs
	// From the engine's ready event; zero where the engine does not report it.
	WeightsGiB float64 `json:"weights_gib"`
	KVCacheGiB float64 `json:"kv_cache_gib"`
	GraphsGiB  float64 `json:"graphs_gib"`
	// From NVML, summed over the engine's GPUs; zero without telemetry.
	PeakGiB  float64 `json:"peak_gib"`
	TotalGiB float64 `json:"total_gib"`
	// OtherGiB is the NVML peak less what the engine reported: the framework's
	// cache, activations, the CUDA context.
	OtherGiB    float64 `json:"other_gib"`
	HeadroomGiB float64 `json:"headroom_gib"` // total less peak
}

// ContextUse is how much of the engine's context window the requests used.
type ContextUse struct {
	MaxModelLen   int     `json:"max_model_len,omitempty"`
	AvgTotal      float64 `json:"avg_total"`
	AvgPrompt     float64 `json:"avg_prompt"`
	AvgCompletion float64 `json:"avg_completion"`
	P95Total      int     `json:"p95_total,omitempty"` // 0: not recorded
	MaxTotal      int     `json:"max_total,omitempty"`
}

// Projection is the seed report's scaling table, computed from this run's measured
// throughput: linear in the number of requests, at this run's tokens per request.
// It is a projection, not a measurement.
type Projection struct {
	Basis            string          `json:"basis"`
	TokensPerSecond  float64         `json:"tokens_per_second"` // measured, all engines together
	Engines          int             `json:"engines"`
	TokensPerRequest float64         `json:"tokens_per_request"`
	MemoryPeakGiB    float64         `json:"memory_peak_gib,omitempty"` // measured peak of the busiest GPU
	Rows             []ProjectionRow `json:"rows,omitempty"`
}

// ProjectionRow is one projected batch size.
type ProjectionRow struct {
	Requests         int     `json:"requests"`
	Tokens           int64   `json:"tokens"`
	Seconds          float64 `json:"seconds"`            // on this run's engines
	OneEngineSeconds float64 `json:"one_engine_seconds"` // on one of them
}

// ProjectionBasis labels every projection.
const ProjectionBasis = "projection from measured throughput"

// projectedSizes are the seed report's batch sizes.
var projectedSizes = []int{5_000, 10_000, 50_000, 200_000}

// Derive computes the sections that follow from the report's other figures: the
// memory breakdown, context use, the scaling projection, and in-flight requests
// from the chunk attempts where no finer series was measured. Measure calls it;
// call it on a report.json written before these sections existed.
func Derive(r *Report) {
	r.Memory = memoryBreakdown(r)
	r.Context = contextUse(r)
	r.Projection = projection(r)
	if len(r.Engines) == 1 && r.Engines[0].Tokens == 0 && r.Tokens.Total > 0 {
		// One engine answered everything; its rate is the run's.
		e := &r.Engines[0]
		e.Tokens, e.WallSeconds, e.TokensPerSecond = r.Tokens.Total, r.Timing.GenerationSeconds, r.Tokens.TokensPerSecond
	}
	if len(r.Series.InFlight) == 0 {
		if width, series := inFlightFromChunkTimes(r); len(series) > 0 {
			r.Series.InFlight, r.Series.InFlightBasis = series, inFlightFromChunks
			if r.Series.BucketSeconds == 0 || len(r.Series.TokensPerSecond) == 0 {
				r.Series.BucketSeconds = width
			}
		}
	}
}

func memoryBreakdown(r *Report) []Memory {
	var out []Memory
	for _, e := range r.Engines {
		m := Memory{Engine: e.Name(), WeightsGiB: e.Ready.WeightsGiB, KVCacheGiB: e.Ready.KVCacheGiB, GraphsGiB: e.Ready.GraphsGiB}
		var names []string
		for _, g := range r.GPUs {
			if g.Worker == e.Worker && e.Ready.Devices != "" && slices.Contains(strings.Split(e.Ready.Devices, ","), g.UUID) {
				m.PeakGiB += g.MemoryPeakGiB
				m.TotalGiB += g.MemoryTotalGiB
				names = append(names, g.Name)
			}
		}
		m.GPUs = strings.Join(names, ", ")
		if m.PeakGiB == 0 && m.WeightsGiB+m.KVCacheGiB+m.GraphsGiB == 0 {
			continue // nothing reported and nothing seen: a simulated engine
		}
		if m.PeakGiB > 0 {
			m.OtherGiB = max(0, m.PeakGiB-m.WeightsGiB-m.KVCacheGiB-m.GraphsGiB)
			m.HeadroomGiB = max(0, m.TotalGiB-m.PeakGiB)
		}
		out = append(out, m)
	}
	return out
}

func contextUse(r *Report) ContextUse {
	c := ContextUse{AvgPrompt: r.Tokens.AvgPrompt, AvgCompletion: r.Tokens.AvgCompletion,
		AvgTotal: r.Tokens.AvgPrompt + r.Tokens.AvgCompletion}
	for _, e := range r.Engines {
		if l := e.Ready.MaxModelLen; l > 0 && (c.MaxModelLen == 0 || l < c.MaxModelLen) {
			c.MaxModelLen = l
		}
	}
	if s := r.TokenStats; s != nil {
		c.P95Total, c.MaxTotal = s.Total.P95, s.Total.Max
	}
	return c
}

func projection(r *Report) Projection {
	p := Projection{Basis: ProjectionBasis, TokensPerSecond: r.Tokens.TokensPerSecond, Engines: len(r.Engines)}
	if r.Counts.Answered > 0 {
		p.TokensPerRequest = float64(r.Tokens.Total) / float64(r.Counts.Answered)
	}
	for _, g := range r.GPUs {
		p.MemoryPeakGiB = max(p.MemoryPeakGiB, g.MemoryPeakGiB)
	}
	if p.TokensPerSecond <= 0 || p.TokensPerRequest <= 0 || p.Engines == 0 {
		return p
	}
	for _, n := range projectedSizes {
		tokens := float64(n) * p.TokensPerRequest
		secs := tokens / p.TokensPerSecond
		p.Rows = append(p.Rows, ProjectionRow{Requests: n, Tokens: int64(tokens), Seconds: secs, OneEngineSeconds: secs * float64(p.Engines)})
	}
	return p
}
