package report

import (
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/run"
)

func TestBuildMeasuresEngineIdleTimeBetweenFirstAndLastChunk(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	sim := engine.Ready{Backend: "sim", Simulated: true, LoadSeconds: 0.2}
	attempts := []run.AttemptResult{
		// Slot 0: two overlapping chunks from 10 s to 30 s, busy 18 of those 20 s.
		{Chunk: 0, Attempt: 1, Worker: "w", EngineSlot: 0, Engine: sim, Started: at(10), Finished: at(20), Answered: 5,
			EngineBusy: [2]run.BusySample{{Time: at(10), BusySeconds: 100}, {Time: at(20), BusySeconds: 109}}},
		{Chunk: 1, Attempt: 1, Worker: "w", EngineSlot: 0, Engine: sim, Started: at(15), Finished: at(30), Answered: 5,
			EngineBusy: [2]run.BusySample{{Time: at(15), BusySeconds: 104}, {Time: at(30), BusySeconds: 118}}},
		// Slot 1: one chunk, always busy, retried once.
		{Chunk: 2, Attempt: 2, Worker: "w", EngineSlot: 1, Engine: sim, Started: at(10), Finished: at(20), Answered: 5,
			EngineBusy: [2]run.BusySample{{Time: at(10), BusySeconds: 0}, {Time: at(20), BusySeconds: 10}}},
	}
	r := Build(Inputs{RunID: "r1", Status: "completed", Lines: 15, Valid: 15, Answered: 15, Chunks: 3,
		PromptTokens: 1500, CompletionTokens: 600, Started: t0, Generation: at(5), MergeStarted: at(35), Finished: at(40),
		Attempts: attempts})

	if len(r.Engines) != 2 {
		t.Fatalf("%d engines, want 2", len(r.Engines))
	}
	if e := r.Engines[0]; e.ActiveSeconds != 20 || e.BusySeconds != 18 || e.IdleFraction < 0.099 || e.IdleFraction > 0.101 {
		t.Errorf("slot 0: active %.1f busy %.1f idle %.3f, want 20, 18, 0.1", e.ActiveSeconds, e.BusySeconds, e.IdleFraction)
	}
	if got := r.EngineIdleFraction; got < 0.066 || got > 0.067 {
		t.Errorf("engine idle fraction %.4f, want 2/30", got)
	}
	if r.Tokens.Total != 2100 || r.Tokens.TokensPerSecond != 70 || r.Tokens.AvgPrompt != 100 {
		t.Errorf("tokens %+v: want 2100 total, 70/s over 30 s of generation, 100 prompt on average", r.Tokens)
	}
	if r.Counts.Retries != 1 || r.Timing.PlanSeconds != 5 || r.Timing.GenerationSeconds != 30 || r.Timing.TotalSeconds != 40 {
		t.Errorf("counts %+v timing %+v", r.Counts, r.Timing)
	}
	if !r.Simulated || !strings.Contains(r.Title, "SIMULATED") {
		t.Errorf("a sim run's report must say simulated: %q", r.Title)
	}
}

func TestTheTailIsWhenEachEngineLastWorkedNotWhenItsChunksEnded(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	engines := func(t time.Time, samples ...[2]float64) []run.BusySample {
		out := make([]run.BusySample, len(samples))
		for i, s := range samples {
			out[i] = run.BusySample{Time: t, BusySeconds: s[0], IdleSeconds: s[1]}
		}
		return out
	}
	attempts := []run.AttemptResult{
		{Chunk: 0, Worker: "w", EngineSlot: 0, Outcome: "completed", Started: at(0), Finished: at(10),
			WorkerEngines: engines(at(10), [2]float64{10, 0}, [2]float64{0, 10}, [2]float64{0, 10})},
		// Chunk 1 was leased to slot 0 but ended at 30 s only because slot 1 ran its
		// last requests: slot 0 stopped at 22 s, slot 1 at 30 s. Slot 2 never worked.
		{Chunk: 1, Worker: "w", EngineSlot: 0, Outcome: "completed", Started: at(10), Finished: at(30),
			WorkerEngines: engines(at(30), [2]float64{22, 8}, [2]float64{12, 0}, [2]float64{0, 30})},
		{Chunk: 1, Attempt: 1, Worker: "w", EngineSlot: 2, Outcome: "failed", Started: at(0), Finished: at(1)},
	}
	r := Build(Inputs{Started: t0, Generation: t0, Attempts: attempts})
	want := map[string]time.Time{"w/0": at(22), "w/1": at(30)}
	if len(r.Timing.EngineLastBusy) != 2 || !r.Timing.EngineLastBusy["w/0"].Equal(want["w/0"]) || !r.Timing.EngineLastBusy["w/1"].Equal(want["w/1"]) {
		t.Errorf("engines last worked at %v, want %v", r.Timing.EngineLastBusy, want)
	}
	if r.Timing.EngineFinishSpreadSeconds != 8 {
		t.Errorf("finish spread %.1f s, want 8 (slot 0 stopped at 22 s, slot 1 at 30 s)", r.Timing.EngineFinishSpreadSeconds)
	}
}

func TestBuildSummarisesEachGPUsTelemetry(t *testing.T) {
	h100 := func(samples int, util float64, peakGiB uint64) gpu.Summary {
		return gpu.Summary{Index: 0, UUID: "GPU-a", Name: "NVIDIA H100 80GB HBM3", Samples: samples,
			MemoryTotalBytes: 80 << 30, MemoryPeakBytes: peakGiB << 30, UtilizationMeanPct: util, UtilizationMaxPct: util + 1, PowerMeanWatts: 500}
	}
	r := Build(Inputs{Attempts: []run.AttemptResult{
		{Worker: "w", GPUs: []gpu.Summary{h100(10, 90, 70)}},
		{Worker: "w", GPUs: []gpu.Summary{h100(30, 98, 72)}},
	}})
	if len(r.GPUs) != 1 {
		t.Fatalf("%d GPUs, want one", len(r.GPUs))
	}
	g := r.GPUs[0]
	if g.Name != "NVIDIA H100 80GB HBM3" || g.MemoryTotalGiB != 80 || g.MemoryPeakGiB != 72 || g.UtilizationMeanPct != 96 || g.UtilizationMaxPct != 99 || g.Samples != 40 {
		t.Errorf("GPU summary %+v: want the H100, 80 GiB, peak 72, mean utilisation 96 (sample-weighted)", g)
	}
}
