package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workers"
)

// smokeSummary is what `vbatch demo --compare-direct --summary F` writes: the run, the
// direct baseline, and pipeline tokens/s over direct tokens/s.
type smokeSummary struct {
	demoResult
	Direct engine.DirectSummary `json:"direct"`
	// Ratio is pipeline tokens/s per engine over direct tokens/s: DESIGN.md's target is ≥ 0.97.
	Ratio float64 `json:"ratio"`
}

// runDirect feeds the demo's requests (written again from the same seed, so the
// same bytes) to the same backend in one process on the first GPU group.
func (a *app) runDirect(ctx context.Context, out io.Writer, cfg workers.GPUConfig, o demoOptions) (engine.DirectSummary, error) {
	direct, err := a.feedDirect(ctx, out, cfg, o)
	if err != nil {
		return engine.DirectSummary{}, fmt.Errorf("direct run: %w", err)
	}
	fmt.Fprintf(out, "direct: %d results, %.0f tokens/s over %.1f s (load %.1f s)\n",
		direct.Results, direct.TokensPerSecond, direct.Seconds, direct.LoadSeconds)
	return direct, nil
}

func (a *app) feedDirect(ctx context.Context, out io.Writer, cfg workers.GPUConfig, o demoOptions) (engine.DirectSummary, error) {
	dir, err := os.MkdirTemp("", "vbatch-direct-")
	if err != nil {
		return engine.DirectSummary{}, err
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "requests.jsonl")
	f, err := os.Create(input)
	if err != nil {
		return engine.DirectSummary{}, err
	}
	err = synth.WriteCandidates(f, o.workload())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return engine.DirectSummary{}, err
	}
	var env []string
	if devs, err := gpu.Discover(); err == nil && cfg.Engine != workers.EngineSim {
		groups, err := gpu.Groups(devs, max(cfg.Settings.TensorParallelSize, 1))
		if err != nil {
			return engine.DirectSummary{}, err
		}
		env = append(env, "CUDA_VISIBLE_DEVICES="+gpu.VisibleDevices(groups[0]))
	}
	fmt.Fprintf(out, "\nfeeding the same %d requests to the %s backend directly (no Temporal, no S3, no worker) ...\n", o.n, cfg.Engine)
	return engine.RunDirect(ctx, engine.DirectConfig{
		Python: cfg.Python, Backend: cfg.Engine, Model: cfg.Model, Settings: cfg.Settings, Sim: cfg.Sim,
		Env: env, Input: input, Logger: a.log.Named("direct"),
	})
}

// printComparison prints pipeline tokens/s per engine over direct tokens/s, and
// writes both with --summary.
func printComparison(out io.Writer, res demoResult, direct engine.DirectSummary, o demoOptions) error {
	s := smokeSummary{demoResult: res, Direct: direct}
	perEngine := res.Report.Tokens.TokensPerSecond
	if n := len(res.Report.Engines); n > 1 {
		perEngine /= float64(n)
	}
	if direct.TokensPerSecond > 0 {
		s.Ratio = perEngine / direct.TokensPerSecond
	}
	fmt.Fprintf(out, "pipeline %.0f tokens/s per engine / direct %.0f tokens/s = %.3f\n", perEngine, direct.TokensPerSecond, s.Ratio)
	if o.summary != "" {
		return writeSummary(o.summary, s)
	}
	return nil
}

func writeSummary(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
