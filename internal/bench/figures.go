// Package bench owns the arithmetic of `vbatch bench`: from a run's chunk attempts,
// its engines' busy clocks and its activity timings it computes how close the
// pipeline came to K GPUs that never wait (efficiency), how far apart the GPUs
// finished (spread), what each chunk cost outside the engine (overhead), and how
// Plan and Merge compare with a plain copy of the same bytes. It also reads the
// peak resident memory of the processes it is told to watch (procfs.go).
package bench

import (
	"slices"
	"time"
)

// Chunk is one completed chunk attempt as the bench measures it.
type Chunk struct {
	Index  int
	Engine string // worker/slot
	// ActivityStarted and ActivityClosed are Temporal's times for the attempt: the
	// task handed to the worker, and the result recorded by the server.
	ActivityStarted, ActivityClosed time.Time
	// EngineStart and EngineEnd bound the attempt's time on its engine: from the
	// moment it held the engine (and began submitting) to its last answer.
	EngineStart, EngineEnd time.Time
	// Started is when the activity function began and Finished when it had written
	// its result, on the worker's clock.
	Started, Finished time.Time
}

// Engine is one simulated GPU's busy time (≥ 1 request in flight) over the run.
type Engine struct {
	Name        string
	BusySeconds float64
}

// Inputs are the measurements of one run.
type Inputs struct {
	GPUs int // K: the engines the run had, whether or not each got a chunk
	// Tokens are the run's prompt + completion tokens and TokensPerSecond one
	// simulated GPU's rate at a full batch: their ratio is the work in GPU-seconds.
	Tokens          int64
	TokensPerSecond float64
	Engines         []Engine
	// EngineLastBusy is when each engine last had requests (the report's); where
	// set, it says when an engine finished instead of its last chunk's end, which
	// other engines may have helped to finish.
	EngineLastBusy map[string]time.Time
	Chunks         []Chunk
	// GenerationStart is the first chunk's dispatch (its activity scheduled) and
	// GenerationEnd the last chunk's close; Submitted and Done bound the whole run
	// as its submitter saw it.
	GenerationStart, GenerationEnd time.Time
	Submitted, Done                time.Time
	// Plan and Merge are when those activities ran, and ControlPeakRose the two
	// samples between which the control worker's peak RSS was reached (Peaks).
	Plan, Merge, ControlPeakRose Window
	InputBytes, OutputBytes      int64
	// CopyInputSeconds and CopyOutputSeconds are a plain download + upload of the
	// input and of the output through the same client, on the same server.
	CopyInputSeconds, CopyOutputSeconds float64
}

// Window is a stretch of time: an activity from started to closed, or the two
// samples around a change.
type Window struct{ Start, End time.Time }

// Seconds is the window's length.
func (w Window) Seconds() float64 { return w.End.Sub(w.Start).Seconds() }

func (w Window) overlaps(o Window) bool {
	return !w.Start.IsZero() && !o.Start.IsZero() && w.Start.Before(o.End) && o.Start.Before(w.End)
}

// Phases of a run, for where the control worker's peak was reached.
const (
	PhaseStart      = "start" // the worker's own start, before Plan
	PhasePlan       = "Plan"
	PhaseGeneration = "generation"
	PhaseMerge      = "Merge"
	PhaseAfterMerge = "after Merge" // Report, and the run's end
)

// Figures are what the bench reports.
type Figures struct {
	BusySeconds       float64 `json:"engine_busy_seconds"`    // all engines together
	IdealSeconds      float64 `json:"ideal_makespan_seconds"` // busy / K
	GenerationSeconds float64 `json:"generation_seconds"`     // first chunk dispatched → last chunk closed
	RunSeconds        float64 `json:"run_seconds"`            // submit → result
	// Efficiency is ideal over the generation phase; RunEfficiency over the whole
	// run, Plan and Merge included.
	Efficiency    float64 `json:"efficiency"`
	RunEfficiency float64 `json:"run_efficiency"`
	// FullBatchIdealSeconds is tokens / (K × tokens/s): the makespan of K GPUs that
	// always run a full batch. Busy time counts an engine with one request in flight
	// as busy although it then delivers a fraction of its rate (a memory-bound GPU,
	// and the sim, do); this ideal charges that too. FullBatchEfficiency is it over
	// the generation phase.
	FullBatchIdealSeconds float64 `json:"full_batch_ideal_seconds"`
	FullBatchEfficiency   float64 `json:"full_batch_efficiency"`
	// EngineFinishedS is when each engine last had requests (Inputs.EngineLastBusy),
	// else its last chunk result, seconds after the generation started; the spread
	// is between the first and last to finish.
	EngineFinishedS map[string]float64 `json:"engine_finished_s"`
	SpreadSeconds   float64            `json:"finish_spread_seconds"`
	SpreadPct       float64            `json:"finish_spread_pct"` // of the generation phase
	// ChunkOverheadMs is, per completed chunk, its activity's time in Temporal's
	// history (handed to the worker → result recorded) less its time on the engine:
	// reading the chunk and its checkpoints from S3, the final checkpoint and result
	// writes, the activity's round trips and the worker's own work.
	ChunkOverheadMs ChunkOverhead `json:"chunk_overhead_ms"`
	Plan            Throughput    `json:"plan"`
	Merge           Throughput    `json:"merge"`
	CopyInput       Throughput    `json:"copy_input"`
	CopyOutput      Throughput    `json:"copy_output"`
	PlanVsCopy      float64       `json:"plan_vs_copy"`  // Plan MB/s over copying the input
	MergeVsCopy     float64       `json:"merge_vs_copy"` // Merge MB/s over copying the output
	// ControlPeakPhase is the phase in which the control worker's peak RSS was
	// reached (a Phase constant), "" when unknown: Plan and Merge hold different
	// buffers, and which of them sets the peak differs between short and long runs.
	ControlPeakPhase string `json:"control_worker_peak_phase,omitempty"`
}

// ChunkOverhead summarises the per-chunk overhead, and where its mean went.
type ChunkOverhead struct {
	Mean   float64 `json:"mean"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
	Chunks int     `json:"chunks"`
	// The mean's parts: Temporal handing the task to the activity function;
	// reading the chunk and its checkpoints from S3 until the engine has it; from
	// the last answer to the final checkpoint and result written; the result back
	// to Temporal's history.
	ToWorker     float64 `json:"to_worker"`
	BeforeEngine float64 `json:"before_engine"`
	AfterEngine  float64 `json:"after_engine"`
	ToServer     float64 `json:"to_server"`
}

// Throughput is bytes over seconds, in MB/s (10^6 bytes).
type Throughput struct {
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	MBPerSecond float64 `json:"mb_per_s"`
}

func throughput(bytes int64, seconds float64) Throughput {
	t := Throughput{Bytes: bytes, Seconds: seconds}
	if seconds > 0 {
		t.MBPerSecond = float64(bytes) / 1e6 / seconds
	}
	return t
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// Compute derives the figures from one run's measurements.
func Compute(in Inputs) Figures {
	var f Figures
	for _, e := range in.Engines {
		f.BusySeconds += e.BusySeconds
	}
	if in.GPUs > 0 {
		f.IdealSeconds = f.BusySeconds / float64(in.GPUs)
	}
	f.GenerationSeconds = in.GenerationEnd.Sub(in.GenerationStart).Seconds()
	f.RunSeconds = in.Done.Sub(in.Submitted).Seconds()
	f.Efficiency = ratio(f.IdealSeconds, f.GenerationSeconds)
	f.RunEfficiency = ratio(f.IdealSeconds, f.RunSeconds)
	if in.GPUs > 0 && in.TokensPerSecond > 0 {
		f.FullBatchIdealSeconds = float64(in.Tokens) / (float64(in.GPUs) * in.TokensPerSecond)
	}
	f.FullBatchEfficiency = ratio(f.FullBatchIdealSeconds, f.GenerationSeconds)

	f.EngineFinishedS = map[string]float64{}
	var overheads []float64
	var parts [4]time.Duration
	for name, t := range in.EngineLastBusy {
		f.EngineFinishedS[name] = t.Sub(in.GenerationStart).Seconds()
	}
	for _, c := range in.Chunks {
		at := c.Finished.Sub(in.GenerationStart).Seconds()
		if prev, ok := f.EngineFinishedS[c.Engine]; len(in.EngineLastBusy) == 0 && (!ok || at > prev) {
			f.EngineFinishedS[c.Engine] = at
		}
		if c.ActivityStarted.IsZero() || c.ActivityClosed.IsZero() || c.EngineStart.IsZero() {
			continue
		}
		activity := c.ActivityClosed.Sub(c.ActivityStarted)
		onEngine := c.EngineEnd.Sub(c.EngineStart)
		overheads = append(overheads, float64(activity-onEngine)/float64(time.Millisecond))
		if !c.Started.IsZero() && !c.Finished.IsZero() {
			parts[0] += c.Started.Sub(c.ActivityStarted)
			parts[1] += c.EngineStart.Sub(c.Started)
			parts[2] += c.Finished.Sub(c.EngineEnd)
			parts[3] += c.ActivityClosed.Sub(c.Finished)
		}
	}
	if len(f.EngineFinishedS) > 0 {
		first, last := -1.0, 0.0
		for _, at := range f.EngineFinishedS {
			if first < 0 || at < first {
				first = at
			}
			last = max(last, at)
		}
		f.SpreadSeconds = last - first
		f.SpreadPct = 100 * ratio(f.SpreadSeconds, f.GenerationSeconds)
	}
	if n := len(overheads); n > 0 {
		slices.Sort(overheads)
		var sum float64
		for _, o := range overheads {
			sum += o
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(n) }
		f.ChunkOverheadMs = ChunkOverhead{Mean: sum / float64(n), Max: overheads[n-1], Chunks: n,
			ToWorker: ms(parts[0]), BeforeEngine: ms(parts[1]), AfterEngine: ms(parts[2]), ToServer: ms(parts[3])}
		if n%2 == 1 {
			f.ChunkOverheadMs.Median = overheads[n/2]
		} else {
			f.ChunkOverheadMs.Median = (overheads[n/2-1] + overheads[n/2]) / 2
		}
	}

	f.Plan = throughput(in.InputBytes, in.Plan.Seconds())
	f.Merge = throughput(in.OutputBytes, in.Merge.Seconds())
	f.CopyInput = throughput(in.InputBytes, in.CopyInputSeconds)
	f.CopyOutput = throughput(in.OutputBytes, in.CopyOutputSeconds)
	f.PlanVsCopy = ratio(f.Plan.MBPerSecond, f.CopyInput.MBPerSecond)
	f.MergeVsCopy = ratio(f.Merge.MBPerSecond, f.CopyOutput.MBPerSecond)
	f.ControlPeakPhase = peakPhase(in.ControlPeakRose, in.Plan, in.Merge)
	return f
}

// peakPhase names the phase in which a peak that grew between the two samples of
// rose was reached. Samples are a fraction of a second apart, so a rise that
// overlaps Plan or Merge is theirs.
func peakPhase(rose, plan, merge Window) string {
	switch {
	case rose.End.IsZero() || plan.Start.IsZero() || merge.Start.IsZero():
		return ""
	case rose.overlaps(merge):
		return PhaseMerge
	case rose.overlaps(plan):
		return PhasePlan
	case !rose.End.After(plan.Start):
		return PhaseStart
	case !rose.Start.Before(merge.End):
		return PhaseAfterMerge
	default:
		return PhaseGeneration
	}
}
