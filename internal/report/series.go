package report

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/run"
)

// Series are the report's time series, x in seconds since the run started.
type Series struct {
	// BucketSeconds is the width of one point of TokensPerSecond and InFlight;
	// point i covers [i, i+1) × BucketSeconds.
	BucketSeconds float64 `json:"bucket_seconds,omitempty"`
	// TokensPerSecond are the prompt and completion tokens of the answers that
	// finished in each bucket (by their created second), over its width.
	TokensPerSecond []float64 `json:"tokens_per_second,omitempty"`
	// InFlight are each engine's requests submitted and not yet answered at the
	// end of each bucket: derived, see InFlightBasis.
	InFlight      []EngineSeries `json:"in_flight,omitempty"`
	InFlightBasis string         `json:"in_flight_basis,omitempty"`
	// GPUs are NVML readings while chunks ran, downsampled; none where the chunk
	// attempts stored no series.
	GPUs []GPUTrack `json:"gpus,omitempty"`
}

// How InFlight was derived.
const (
	// inFlightFromAnswers: each chunk attempt's requests from its start, less its
	// answers as they finished (their created second), until the attempt ended.
	inFlightFromAnswers = "answers"
	// inFlightFromChunks: the requests of every chunk attempt running at the time,
	// with nothing finer recorded: an upper bound.
	inFlightFromChunks = "chunks"
)

// EngineSeries is one engine's values over the buckets.
type EngineSeries struct {
	Engine string `json:"engine"`
	Values []int  `json:"values"`
}

// GPUTrack is one GPU's readings.
type GPUTrack struct {
	Worker         string     `json:"worker"`
	Index          int        `json:"index"`
	UUID           string     `json:"uuid"`
	MemoryTotalGiB float64    `json:"memory_total_gib"`
	Points         []GPUPoint `json:"points"`
}

// GPUPoint is one reading, T seconds after the run started.
type GPUPoint struct {
	T              float64 `json:"t"`
	MemoryGiB      float64 `json:"memory_gib"`
	UtilizationPct float64 `json:"utilization_pct"`
	PowerWatts     float64 `json:"power_watts"`
}

// maxBuckets bounds the points of a series: enough for a chart, small in report.json.
const maxBuckets = 240

// timeline divides [origin, end] into at most maxBuckets buckets of whole seconds.
type timeline struct {
	origin  time.Time
	width   time.Duration
	buckets int
}

func newTimeline(origin, end time.Time) timeline {
	span := end.Sub(origin)
	if origin.IsZero() || span <= 0 {
		return timeline{origin: origin, width: time.Second}
	}
	width := time.Duration(math.Ceil(span.Seconds()/maxBuckets)) * time.Second
	return timeline{origin: origin, width: width, buckets: int(span/width) + 1}
}

// bucket is the bucket of t; ok is false outside the timeline.
func (tl timeline) bucket(t time.Time) (int, bool) {
	d := t.Sub(tl.origin)
	if d < 0 || tl.buckets == 0 {
		return 0, false
	}
	return min(int(d/tl.width), tl.buckets-1), true
}

func (tl timeline) end(b int) time.Time { return tl.origin.Add(time.Duration(b+1) * tl.width) }

// seriesOrigin is the x = 0 of every series: the run's start, or its first chunk
// attempt's start when the start is not known.
func (r *Report) seriesOrigin() time.Time { return r.Timing.Started }

// gpuTracks joins the attempts' GPU series into one track per GPU: overlapping
// attempts on one GPU stored the same readings, which are kept once.
func gpuTracks(attempts []run.AttemptResult, origin time.Time) []GPUTrack {
	type key struct{ worker, uuid string }
	samples := map[key][]gpu.Sample{}
	for _, a := range attempts {
		for _, s := range a.GPUSeries {
			k := key{a.Worker, s.UUID}
			samples[k] = append(samples[k], s)
		}
	}
	var out []GPUTrack
	for k, ss := range samples {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Time.Before(ss[j].Time) })
		ss = slices.CompactFunc(ss, func(a, b gpu.Sample) bool { return a.Time.Equal(b.Time) })
		ss = DownsampleGPU(ss, maxBuckets)
		t := GPUTrack{Worker: k.worker, UUID: k.uuid, Index: ss[0].Index}
		for _, s := range ss {
			t.MemoryTotalGiB = max(t.MemoryTotalGiB, float64(s.MemoryTotalBytes)/gib)
			t.Points = append(t.Points, GPUPoint{T: s.Time.Sub(origin).Seconds(), MemoryGiB: float64(s.MemoryUsedBytes) / gib,
				UtilizationPct: s.UtilizationPct, PowerWatts: s.PowerWatts})
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Worker != out[j].Worker {
			return out[i].Worker < out[j].Worker
		}
		return out[i].Index < out[j].Index
	})
	return out
}

// DownsampleGPU keeps at most n readings of samples (all GPUs together), time order
// within each GPU: consecutive readings of a GPU are merged into one point with
// their mean utilisation, power and temperature and their peak memory, so the
// memory chart still shows the peak. GenerateChunk stores
// DownsampleGPU(monitor.Series(...), 120) with each attempt's result.
func DownsampleGPU(samples []gpu.Sample, n int) []gpu.Sample {
	if len(samples) <= n || n <= 0 {
		return samples
	}
	var order []string
	byGPU := map[string][]gpu.Sample{}
	for _, s := range samples {
		if _, ok := byGPU[s.UUID]; !ok {
			order = append(order, s.UUID)
		}
		byGPU[s.UUID] = append(byGPU[s.UUID], s)
	}
	per := max(1, n/len(order))
	var out []gpu.Sample
	for _, uuid := range order {
		ss := byGPU[uuid]
		if len(ss) <= per {
			out = append(out, ss...)
			continue
		}
		for i := range per {
			group := ss[i*len(ss)/per : (i+1)*len(ss)/per]
			out = append(out, mergeSamples(group))
		}
	}
	return out
}

func mergeSamples(group []gpu.Sample) gpu.Sample {
	m := group[0]
	first, last := group[0].Time, group[len(group)-1].Time
	m.Time = first.Add(last.Sub(first) / 2)
	var util, power, temp float64
	for _, s := range group {
		m.MemoryUsedBytes = max(m.MemoryUsedBytes, s.MemoryUsedBytes)
		m.MemoryTotalBytes = max(m.MemoryTotalBytes, s.MemoryTotalBytes)
		util += s.UtilizationPct
		power += s.PowerWatts
		temp += s.TemperatureC
	}
	n := float64(len(group))
	m.UtilizationPct, m.PowerWatts, m.TemperatureC = util/n, power/n, temp/n
	return m
}

// inFlightFromChunkTimes derives in-flight requests per engine from the chunk
// attempts alone (start, duration, requests): the requests of every attempt
// running at each bucket's end. Without answer times it cannot see requests
// finish, so it is an upper bound; it is what an older report.json allows.
func inFlightFromChunkTimes(r *Report) (width float64, series []EngineSeries) {
	var end float64
	for _, c := range r.Chunks {
		end = max(end, c.StartS+c.Seconds)
	}
	if end <= 0 || len(r.Engines) == 0 {
		return 0, nil
	}
	width = math.Ceil(end / maxBuckets)
	buckets := int(end/width) + 1
	index := map[string]int{}
	for i, e := range r.Engines {
		index[e.Name()] = i
		series = append(series, EngineSeries{Engine: e.Name(), Values: make([]int, buckets)})
	}
	for _, c := range r.Chunks {
		e, ok := index[engineName(c.Worker, c.Slot)]
		if !ok {
			continue
		}
		for b := range buckets {
			if t := float64(b+1) * width; c.StartS <= t && t < c.StartS+c.Seconds {
				series[e].Values[b] += c.Requests
			}
		}
	}
	return width, series
}
