package bench

import (
	"math"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

func near(t *testing.T, name string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-6 {
		t.Errorf("%s = %v, want %v", name, got, want)
	}
}

// Two simulated GPUs: engine a busy 9 s and finishing its last chunk at 10 s, b busy
// 8 s and finishing at 9.5 s, in a generation phase of 10 s inside a 12 s run.
func TestComputeEfficiencySpreadAndOverhead(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	in := Inputs{
		GPUs:   2,
		Tokens: 160_000, TokensPerSecond: 10_000, // 8 s of full batches on 2 GPUs
		Engines:         []Engine{{Name: "w/0", BusySeconds: 9}, {Name: "w/1", BusySeconds: 8}},
		GenerationStart: at(0), GenerationEnd: at(10),
		Submitted: at(-1), Done: at(11),
		Chunks: []Chunk{
			// 5.0 s in Temporal's history, 4.9 s on the engine: 100 ms outside it,
			// 10 to the worker, 40 before the engine, 30 after it, 20 back to Temporal.
			{Index: 0, Engine: "w/0", ActivityStarted: at(0.1), Started: at(0.11), EngineStart: at(0.15), EngineEnd: at(5.05), Finished: at(5.08), ActivityClosed: at(5.1)},
			// 400 ms: 10, 190, 100, 100.
			{Index: 1, Engine: "w/1", ActivityStarted: at(0.1), Started: at(0.11), EngineStart: at(0.3), EngineEnd: at(9.4), Finished: at(9.5), ActivityClosed: at(9.6)},
			// 200 ms: 10, 90, 100, 0.
			{Index: 2, Engine: "w/0", ActivityStarted: at(5.1), Started: at(5.11), EngineStart: at(5.2), EngineEnd: at(9.9), Finished: at(10), ActivityClosed: at(10)},
		},
		Plan: Window{Start: at(-0.8), End: at(-0.3)}, Merge: Window{Start: at(10.2), End: at(10.45)},
		InputBytes: 10_000_000, OutputBytes: 2_000_000,
		CopyInputSeconds: 0.2, CopyOutputSeconds: 0.5,
	}
	f := Compute(in)
	near(t, "busy", f.BusySeconds, 17)
	near(t, "ideal", f.IdealSeconds, 8.5)
	near(t, "generation", f.GenerationSeconds, 10)
	near(t, "run", f.RunSeconds, 12)
	near(t, "efficiency", f.Efficiency, 0.85)
	near(t, "run efficiency", f.RunEfficiency, 8.5/12)
	near(t, "full-batch ideal", f.FullBatchIdealSeconds, 8)
	near(t, "full-batch efficiency", f.FullBatchEfficiency, 0.8)
	near(t, "finish of w/0", f.EngineFinishedS["w/0"], 10)
	near(t, "finish of w/1", f.EngineFinishedS["w/1"], 9.5)
	near(t, "spread", f.SpreadSeconds, 0.5)
	near(t, "spread %", f.SpreadPct, 5)
	// Overheads: 100, 400 and 200 ms.
	if o := f.ChunkOverheadMs; o.Chunks != 3 || math.Abs(o.Mean-700.0/3) > 1e-6 || math.Abs(o.Median-200) > 1e-6 || math.Abs(o.Max-400) > 1e-6 {
		t.Errorf("chunk overhead = %+v, want mean 233.3, median 200, max 400 over 3 chunks", o)
	}
	o := f.ChunkOverheadMs
	near(t, "to worker", o.ToWorker, 10)
	near(t, "before engine", o.BeforeEngine, 320.0/3)
	near(t, "after engine", o.AfterEngine, 230.0/3)
	near(t, "to server", o.ToServer, 40)
	near(t, "parts add up", (o.ToWorker + o.BeforeEngine + o.AfterEngine + o.ToServer), o.Mean)
	near(t, "plan MB/s", f.Plan.MBPerSecond, 20)
	near(t, "copy input MB/s", f.CopyInput.MBPerSecond, 50)
	near(t, "plan vs copy", f.PlanVsCopy, 0.4)
	near(t, "merge MB/s", f.Merge.MBPerSecond, 8)
	near(t, "merge vs copy", f.MergeVsCopy, 2)
}

// A GPU that got no chunk still counts in K: the ideal makespan spreads the busy
// time over every GPU the run had, so an idle GPU lowers the efficiency.
func TestComputeCountsIdleGPUsInIdeal(t *testing.T) {
	t0 := time.Now()
	f := Compute(Inputs{GPUs: 4, Engines: []Engine{{Name: "w/0", BusySeconds: 8}},
		GenerationStart: t0, GenerationEnd: t0.Add(8 * time.Second), Submitted: t0, Done: t0.Add(8 * time.Second)})
	near(t, "efficiency", f.Efficiency, 0.25)
	if f.SpreadPct != 0 || f.ChunkOverheadMs.Chunks != 0 {
		t.Errorf("no chunks: spread %v %%, overhead over %d chunks, want 0 and 0", f.SpreadPct, f.ChunkOverheadMs.Chunks)
	}
}

// Zero durations give zero rates, not infinities in the JSON.
func TestComputeWithoutDurations(t *testing.T) {
	f := Compute(Inputs{GPUs: 1, InputBytes: 5})
	if f.Efficiency != 0 || f.Plan.MBPerSecond != 0 || f.PlanVsCopy != 0 {
		t.Errorf("efficiency %v, plan %v MB/s, ratio %v: want 0 for unmeasured durations", f.Efficiency, f.Plan.MBPerSecond, f.PlanVsCopy)
	}
}

func TestComputeSaysWhichPhaseReachedTheControlPeak(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	plan := Window{Start: at(1), End: at(3)}
	merge := Window{Start: at(10), End: at(12)}
	for _, tc := range []struct {
		name string
		rose Window
		want string
	}{
		{"first sample, before the run", Window{End: at(0.5)}, PhaseStart},
		{"during Plan", Window{Start: at(2), End: at(2.25)}, PhasePlan},
		{"seen just after Plan closed", Window{Start: at(2.9), End: at(3.15)}, PhasePlan},
		{"while chunks ran", Window{Start: at(5), End: at(5.25)}, PhaseGeneration},
		{"seen just after Merge began", Window{Start: at(9.9), End: at(10.15)}, PhaseMerge},
		{"during Merge", Window{Start: at(11), End: at(11.25)}, PhaseMerge},
		{"during Report", Window{Start: at(12.1), End: at(12.35)}, PhaseAfterMerge},
		{"never sampled", Window{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Compute(Inputs{GPUs: 1, Plan: plan, Merge: merge, ControlPeakRose: tc.rose})
			if f.ControlPeakPhase != tc.want {
				t.Errorf("phase = %q, want %q", f.ControlPeakPhase, tc.want)
			}
		})
	}
}

func TestPeakRSSOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	rss, err := PeakRSS(pid)
	if err != nil {
		t.Skip("no /proc here:", err)
	}
	if rss < 1<<20 {
		t.Errorf("peak RSS of the test process %d bytes, want > 1 MiB", rss)
	}
}

// A peak counts as reached at the first rise that came within a MiB of its final
// value: a page or two touched later does not move it.
func TestPeakReachedAtTheRiseThatMadeIt(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	w := func(s int) Window {
		return Window{Start: t0.Add(time.Duration(s) * time.Second), End: t0.Add(time.Duration(s+1) * time.Second)}
	}
	const mb = 1 << 20
	rises := []rise{{w(0), 40 * mb}, {w(5), 70 * mb}, {w(20), 85 * mb}, {w(30), 85*mb + 300<<10}}
	if got := reached(rises, 85*mb+300<<10); got != w(20) {
		t.Errorf("reached %v, want the rise to 85 MB at %v, not the 300 KB after it", got, w(20))
	}
	if got := reached(rises[:2], 70*mb); got != w(5) {
		t.Errorf("reached %v, want %v", got, w(5))
	}
	if got := reached(nil, 0); !got.Start.IsZero() || !got.End.IsZero() {
		t.Errorf("reached %v with no rises, want the zero window", got)
	}
}

// The watcher records the rises it sees: a watched process that touches 64 MiB
// more than its peak so far has a peak reached after that began.
func TestWatcherSeesThePeakGrow(t *testing.T) {
	pid := os.Getpid()
	before, err := PeakRSS(pid)
	if err != nil {
		t.Skip("no /proc here:", err)
	}
	w := Watch(pid, pid, 10*time.Millisecond)
	time.Sleep(30 * time.Millisecond)
	grew := time.Now()
	// Past the old high-water mark whatever the heap reuses.
	touched := make([]byte, before+64<<20)
	for i := 0; i < len(touched); i += 4096 {
		touched[i] = 1
	}
	time.Sleep(30 * time.Millisecond)
	peaks := w.Stop()
	runtime.KeepAlive(touched)
	if peaks.ControlBytes < before+64<<20 {
		t.Errorf("peak %d bytes after touching %d", peaks.ControlBytes, before+64<<20)
	}
	if r := peaks.ControlRose; r.Start.IsZero() || r.End.Before(grew) {
		t.Errorf("peak reached between %v and %v; want two samples after %v", r.Start, r.End, grew)
	}
}

// Children finds a process this test started.
func TestChildrenFindsAChild(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	found := false
	for _, pid := range Children(os.Getpid()) {
		found = found || pid == cmd.Process.Pid
	}
	if !found {
		t.Errorf("Children(%d) misses the child %d", os.Getpid(), cmd.Process.Pid)
	}
}
