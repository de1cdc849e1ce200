//go:build integration

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/devstack"
)

// `vbatch bench` runs a tiny workload end to end on its own stack and writes JSON
// whose figures are measured, not defaulted: efficiency in (0, 1], every process's
// peak RSS, Plan, Merge and copy rates, and a Markdown row.
func TestBenchWritesSaneFigures(t *testing.T) {
	binDir, err := devstack.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	jsonPath, mdPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.md")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vbatchBin, "bench", "--requests", "200", "--gpus", "2", "--tokens-per-second", "2000000",
		"--chunk-size", "25", "--json", jsonPath, "--markdown", mdPath)
	cmd.Dir = dir // the bench's stack folder goes here, and is removed
	cmd.Env = append(os.Environ(), "VBATCH_BIN_DIR="+binDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vbatch bench: %v\n%s", err, out)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var r benchResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	// Chunks of at most 25 lines, cut finer toward the end for the 2 engines.
	if r.Answered != 200 || r.Chunks < 8 || !r.Simulated {
		t.Errorf("answered %d in %d chunks (simulated %v), want 200 in 8 or more, simulated", r.Answered, r.Chunks, r.Simulated)
	}
	if r.Efficiency <= 0 || r.Efficiency > 1 || r.RunEfficiency <= 0 || r.RunEfficiency > r.Efficiency {
		t.Errorf("efficiency %v, run efficiency %v: want 0 < run ≤ generation ≤ 1", r.Efficiency, r.RunEfficiency)
	}
	if r.FullBatchEfficiency <= 0 || r.FullBatchIdealSeconds <= 0 {
		t.Errorf("full-batch ideal %v s, efficiency %v: want both > 0", r.FullBatchIdealSeconds, r.FullBatchEfficiency)
	}
	if r.IdealSeconds <= 0 || r.GenerationSeconds < r.IdealSeconds || r.RunSeconds < r.GenerationSeconds {
		t.Errorf("ideal %v s, generation %v s, run %v s: want 0 < ideal ≤ generation ≤ run", r.IdealSeconds, r.GenerationSeconds, r.RunSeconds)
	}
	if len(r.EngineFinishedS) != 2 || r.SpreadPct < 0 || r.SpreadPct > 100 {
		t.Errorf("engines finished %v, spread %v %%: want both simulated GPUs, spread in [0, 100]", r.EngineFinishedS, r.SpreadPct)
	}
	if r.ChunkOverheadMs.Chunks != r.Chunks || r.ChunkOverheadMs.Mean <= 0 {
		t.Errorf("chunk overhead %+v: want a positive mean over all %d chunks", r.ChunkOverheadMs, r.Chunks)
	}
	if r.RSS.ControlBytes <= 0 || r.RSS.GPUBytes <= 0 || r.RSS.RunnerBytes <= 0 || r.RSS.Runners != 2 {
		t.Errorf("peak RSS %+v: want every process measured, 2 engine processes", r.RSS)
	}
	for name, mbps := range map[string]float64{"plan": r.Plan.MBPerSecond, "merge": r.Merge.MBPerSecond,
		"copy of input": r.CopyInput.MBPerSecond, "copy of output": r.CopyOutput.MBPerSecond} {
		if mbps <= 0 {
			t.Errorf("%s: %v MB/s, want > 0", name, mbps)
		}
	}
	if r.Plan.Bytes != r.CopyInput.Bytes || r.Merge.Bytes != r.CopyOutput.Bytes || r.Plan.Bytes == 0 {
		t.Errorf("plan %d bytes against a copy of %d, merge %d against %d: the copies must move the same bytes",
			r.Plan.Bytes, r.CopyInput.Bytes, r.Merge.Bytes, r.CopyOutput.Bytes)
	}
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(md)), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "| 200 | 2 × 2000000 |") {
		t.Errorf("markdown: want a header, a rule and one row of 200 requests on 2 GPUs:\n%s", md)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, ".vbatch", "bench")); len(entries) != 0 {
		t.Errorf("the stack's folder stayed without --keep: %v", entries)
	}
}
