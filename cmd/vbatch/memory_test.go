//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// The control worker streams Plan and Merge: its peak RSS stays under 200 MB however
// large the input. CI runs 20,000 requests; docs/benchmarks.md records the 200,000
// run (VBATCH_MEMORY_REQUESTS=200000).
func TestControlWorkerPeakRSSStaysBounded(t *testing.T) {
	n := 20000
	if v := os.Getenv("VBATCH_MEMORY_REQUESTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	const model = "e2e/memory"
	control := startVbatch(t, "worker", "--role", "control")
	gpuWorker := startVbatch(t, "worker", "--role", "gpu", "--engine", "sim", "--model", model, "--gpus", "4",
		"--sim-tokens-per-second", "20000000", "--sim-batch-size", "512", "--chunks-per-engine", "2")
	control.waitFor(t, "control worker polling", time.Minute)
	gpuWorker.waitFor(t, "GPU worker ready", time.Minute)

	ctx := context.Background()
	input := fmt.Sprintf("s3://%s/memory/%d/requests.jsonl", stack.Bucket, n)
	w, err := store.Create(ctx, input)
	if err != nil {
		t.Fatal(err)
	}
	if err := synth.WriteCandidates(w, synth.Options{N: n, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := store.Stat(ctx, input)
	if err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	run, err := temporal.ExecuteWorkflow(runCtx, client.StartWorkflowOptions{
		ID: fmt.Sprintf("e2e-memory-%d", n), TaskQueue: workflows.ControlTaskQueue,
	}, workflows.WorkflowType, workflows.BatchInput{Input: input, Model: model, ChunkSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.BatchResult
	if err := run.Get(runCtx, &res); err != nil {
		t.Fatal(err)
	}
	if res.Answered != n {
		t.Fatalf("answered %d of %d", res.Answered, n)
	}
	controlPeak := peakRSS(t, control.cmd.Process.Pid)
	gpuPeak := peakRSS(t, gpuWorker.cmd.Process.Pid)

	var rep report.Report
	if err := blob.ReadJSON(ctx, store, res.Report, &rep); err != nil {
		t.Fatal(err)
	}
	outInfo, err := store.Stat(ctx, res.Output)
	if err != nil {
		t.Fatal(err)
	}
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	t.Logf("requests %d, input %.0f MB, output %.0f MB; control worker peak RSS %.0f MB, GPU worker peak RSS %.0f MB; "+
		"plan %.1f s (%.0f MB/s), merge+report %.1f s (%.0f MB/s of output)",
		n, mb(info.Size), mb(outInfo.Size), mb(controlPeak), mb(gpuPeak),
		rep.Timing.PlanSeconds, mb(info.Size)/rep.Timing.PlanSeconds,
		rep.Timing.FinishSeconds, mb(outInfo.Size)/rep.Timing.FinishSeconds)
	if controlPeak > 200e6 {
		t.Errorf("control worker peak RSS %.0f MB, want < 200 MB: Plan or Merge holds too much", mb(controlPeak))
	}
}

// peakRSS reads a live process's peak resident set (VmHWM) from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
