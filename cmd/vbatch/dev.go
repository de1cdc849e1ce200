package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workers"
	"github.com/vbatch/vbatch/workflows"
)

// stateDir is where the local stack keeps its state, relative to the working directory.
const stateDir = ".vbatch"

func (a *app) devCmd() *cobra.Command {
	var flags workerFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local Temporal server, S3 server and workers until Ctrl-C",
		Long: `Starts the pinned Temporal dev server (with its UI) and versitygw (S3) on loopback with
state under .vbatch/dev, plus a control and a GPU worker: vLLM where this host has GPUs and
vLLM, else the simulator on 2 simulated GPUs. Writes .vbatch/env, so that another shell can
'source .vbatch/env' and use 'vbatch submit' or the temporal CLI against this stack.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			env, err := a.startLocal(ctx, filepath.Join(stateDir, "dev"), &flags, cmd.Flags().Changed("engine"))
			if err != nil {
				return err
			}
			defer env.stop()
			envFile := filepath.Join(stateDir, "env")
			if err := env.stack.WriteEnvFile(envFile); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "\nvbatch dev is running (Ctrl-C stops it)\n")
			fmt.Fprintf(out, "  Temporal UI   %s\n  Temporal      %s\n  S3            %s  bucket %s\n",
				env.stack.UIAddress, env.stack.TemporalAddress, env.stack.S3Endpoint, env.stack.Bucket)
			fmt.Fprintf(out, "  engine        %s\n\nIn another shell:\n  source %s\n", env.engine, envFile)
			fmt.Fprintf(out, "  vbatch sample candidates --n 100 --out s3://%s/in/requests.jsonl\n", env.stack.Bucket)
			fmt.Fprintf(out, "  vbatch submit --input s3://%s/in/requests.jsonl --wait\n", env.stack.Bucket)
			<-ctx.Done()
			fmt.Fprintln(out, "stopping")
			return nil
		},
	}
	flags.register(cmd.Flags(), "auto")
	return cmd
}

// demoOptions shape the demo's workload; with compareDirect the demo is also the GPU
// smoke run: the same requests fed to the same backend without vbatch, for the ratio.
type demoOptions struct {
	n, maxTokens, chunkSize int
	minMaxTokens            int // draw each request's max_tokens from minMaxTokens..maxTokens
	noSchema, compareDirect bool
	// engines, systemPrompts and keepInputOrder are for measuring the tail and the
	// prefix cache: BatchInput.Engines, synth.Options.SystemPrompts and
	// BatchInput.KeepInputOrder.
	engines, systemPrompts int
	keepInputOrder         bool
	// directFirst runs the direct baseline before the pipeline, so that repeated
	// smoke runs can alternate the order and show any drift of the GPU between them.
	directFirst bool
	summary     string
	// warmup runs that many other requests an engine (another seed) through the
	// same engines first, unmeasured: engines capture their CUDA graphs and fill
	// their caches in the first tens of seconds, a cost a night's run pays once and a
	// short measured run would pay again in every figure. It counts per engine
	// because each engine captures its own graphs: a fixed total would warm four
	// engines a quarter as much as one.
	warmup int
	// warmingUp marks the warm-up run itself: seed 2 instead of 1, so that no
	// request of the measured run repeats, and a run ID ending in -warmup.
	warmingUp bool
}

func (a *app) demoCmd() *cobra.Command {
	var (
		flags workerFlags
		o     demoOptions
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main job once on a local stack and print where the results are",
		Long: `Starts the local stack (as 'vbatch dev' does, state under .vbatch/demo), writes synthetic
candidate-scoring requests to S3, runs them through Temporal on the GPU worker (the
simulator on 2 simulated GPUs where this host has no GPUs with vLLM), prints the URIs of
output, errors and report and the headline figures, and stops the stack.

With --compare-direct it is also a GPU smoke test: after the run it feeds the same
requests to the same backend directly (no Temporal, no S3, no worker) and prints
pipeline tokens/s over direct tokens/s.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			gpuCfg := flags.config()
			if o.warmup > 0 && o.compareDirect {
				return errors.New("--warmup and --compare-direct: the direct baseline would run cold against a warm pipeline; use one or the other")
			}
			var direct *engine.DirectSummary
			if o.compareDirect && o.directFirst {
				if !cmd.Flags().Changed("engine") || gpuCfg.Engine == "auto" {
					gpuCfg.Engine = autoEngine(ctx, gpuCfg.Python, a.log)
				}
				d, err := a.runDirect(ctx, out, gpuCfg, o)
				if err != nil {
					return err
				}
				direct = &d
			}
			env, err := a.startLocal(ctx, filepath.Join(stateDir, "demo"), &flags, cmd.Flags().Changed("engine"))
			if err != nil {
				return err
			}
			if err := a.warmUp(ctx, out, env, o, gpuCfg.Model); err != nil {
				env.stop()
				return err
			}
			res, err := a.demo(ctx, out, env, o, gpuCfg.Model)
			// The engines leave the GPU before a direct run needs it.
			env.stop()
			if err != nil || !o.compareDirect {
				return err
			}
			if direct == nil {
				gpuCfg.Engine = env.engineKind
				d, err := a.runDirect(ctx, out, gpuCfg, o)
				if err != nil {
					return err
				}
				direct = &d
			}
			return printComparison(out, res, *direct, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.n, "n", 1000, "number of synthetic candidate requests")
	f.IntVar(&o.maxTokens, "max-tokens", 2000, "max_tokens of every request")
	f.IntVar(&o.minMaxTokens, "min-max-tokens", 0, "draw each request's max_tokens between this and --max-tokens, as real completions differ in length (0: every request --max-tokens)")
	f.IntVar(&o.chunkSize, "chunk-size", 0, fmt.Sprintf("requests per chunk (default %d)", workflows.DefaultChunkSize))
	f.BoolVar(&o.noSchema, "no-schema", false, "leave response_format out (engines that cannot enforce a schema)")
	f.IntVar(&o.engines, "engines", 0, "engines the plan cuts the tail for (default: the demo worker's engines)")
	f.IntVar(&o.systemPrompts, "system-prompts", 1, "distinct system prompts in the workload, interleaved (for measuring the prefix cache)")
	f.BoolVar(&o.keepInputOrder, "keep-input-order", false, "feed each chunk in input order, not grouped by prompt prefix (to measure what grouping gains)")
	f.BoolVar(&o.compareDirect, "compare-direct", false, "afterwards, feed the same requests to the same backend directly and compare tokens/s")
	f.BoolVar(&o.directFirst, "direct-first", false, "with --compare-direct, run the direct baseline before the pipeline")
	f.StringVar(&o.summary, "summary", "", "write the run's figures (and the comparison) as JSON to this file")
	f.IntVar(&o.warmup, "warmup", 0, "first run this many other requests an engine through the same engines, unmeasured, so that the measured run starts warm")
	flags.register(f, "auto")
	_ = f.Set("sim-tokens-per-second", "25000")
	f.Lookup("sim-tokens-per-second").DefValue = "25000"
	return cmd
}

// workload is the demo's requests; the direct baseline writes the same bytes.
func (o demoOptions) workload() synth.Options {
	seed := int64(1)
	if o.warmingUp {
		seed = 2
	}
	return synth.Options{N: o.n, Seed: seed, MaxTokens: o.maxTokens, MinMaxTokens: o.minMaxTokens,
		NoSchema: o.noSchema, SystemPrompts: o.systemPrompts}
}

// warmUp runs o.warmup other requests an engine through env's engines as a run of
// its own, and says how long it took; the measured run follows on the same engines.
func (a *app) warmUp(ctx context.Context, out io.Writer, env *localEnv, o demoOptions, model string) error {
	if o.warmup <= 0 {
		return nil
	}
	w := o
	w.n, w.warmingUp, w.summary, w.compareDirect = o.warmup*max(env.engines(), 1), true, "", false
	fmt.Fprintf(out, "warming up with %d other requests an engine (%d in all) ...\n", o.warmup, w.n)
	res, err := a.demo(ctx, io.Discard, env, w, model)
	if err != nil {
		return fmt.Errorf("warm-up run: %w", err)
	}
	fmt.Fprintf(out, "warm-up %s: %d answered in %.1f s (not measured below)\n",
		res.Result.RunID, res.Report.Counts.Answered, res.Report.Timing.TotalSeconds)
	return nil
}

// demoResult is what the demo ran and measured.
type demoResult struct {
	Input  string                `json:"input"`
	Result workflows.BatchResult `json:"result"`
	Report report.Report         `json:"report"`
}

func (a *app) demo(ctx context.Context, out io.Writer, env *localEnv, o demoOptions, model string) (demoResult, error) {
	// The input goes into the run's own folder, so requests, answers and report sit together.
	runID := "demo-" + time.Now().UTC().Format("20060102-150405")
	if o.warmingUp {
		runID += "-warmup"
	}
	output := fmt.Sprintf("s3://%s/demo", env.stack.Bucket)
	res := demoResult{Input: output + "/" + runID + "/requests.jsonl"}
	w, err := env.store.Create(ctx, res.Input)
	if err != nil {
		return res, err
	}
	if err := synth.WriteCandidates(w, o.workload()); err != nil {
		_ = w.Abort()
		return res, err
	}
	if err := w.Close(); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "wrote %d synthetic candidate requests to %s\nrunning %s on %s ...\n", o.n, res.Input, runID, env.engine)
	if o.engines == 0 {
		// The demo's own worker is the only one: Plan cuts the tail for its engines.
		o.engines = env.engines()
	}
	in := workflows.BatchInput{Input: res.Input, Output: output, Model: model, ChunkSize: o.chunkSize,
		Engines: o.engines, KeepInputOrder: o.keepInputOrder}
	// The demo's own worker serves the model: a check for pollers could only race
	// its first poll reaching the server.
	if err := a.submit(ctx, io.Discard, submitOptions{in: in, id: runID, wait: true, allowNoWorkers: true}); err != nil {
		return res, err
	}
	if err := runStatus(ctx, env.client, out, runID, false); err != nil {
		return res, err
	}
	if err := env.client.GetWorkflow(ctx, runID, "").Get(ctx, &res.Result); err != nil {
		return res, err
	}
	if err := blob.ReadJSON(ctx, env.store, res.Result.Report, &res.Report); err != nil {
		return res, fmt.Errorf("read report: %w", err)
	}
	rep := res.Report
	sim := ""
	if rep.Simulated {
		sim = " (SIMULATED)"
	}
	fmt.Fprintf(out, "\nthroughput%s: %.0f tokens/s, %.1f requests/s over %d engines; generation %.1f s of %.1f s total\n",
		sim, rep.Tokens.TokensPerSecond, rep.Tokens.RequestsPerSecond, len(rep.Engines), rep.Timing.GenerationSeconds, rep.Timing.TotalSeconds)
	for _, g := range rep.GPUs {
		fmt.Fprintf(out, "GPU %d %s: peak %.1f of %.1f GiB, mean utilisation %.0f%%, %.0f W\n",
			g.Index, g.Name, g.MemoryPeakGiB, g.MemoryTotalGiB, g.UtilizationMeanPct, g.PowerMeanWatts)
	}
	fmt.Fprintf(out, "the files stay on disk under %s (versitygw keeps s3://BUCKET/KEY at %s/BUCKET/KEY)\n",
		env.dir, filepath.Join(env.dir, "s3"))
	if _, bucket, key, err := blob.ParseURI(res.Result.Report); err == nil {
		folder := filepath.Join(env.dir, "s3", bucket, filepath.Dir(key))
		fmt.Fprintf(out, "report: %s (open report.html in a browser; report.md beside it)\n", filepath.Join(folder, "report.html"))
	}
	if o.summary != "" && !o.compareDirect {
		return res, writeSummary(o.summary, res)
	}
	return res, nil
}

// localEnv is the local stack with workers attached.
type localEnv struct {
	dir     string
	stack   *devstack.Stack
	client  client.Client
	store   blob.Store
	workers *runningWorkers
	engine  string // in words, for people
	// engineKind is the engine the workers run (auto resolved).
	engineKind string
	// stopMetrics stops serving --metrics-addr.
	stopMetrics func()
}

// engines is how many engines the local GPU worker runs; 0 without one.
func (e *localEnv) engines() int {
	if e.workers == nil || e.workers.gpu == nil {
		return 0
	}
	return e.workers.gpu.Engines()
}

// stop stops workers, client and stack; a second call does nothing.
func (e *localEnv) stop() {
	if e.workers != nil {
		e.workers.stop()
		e.workers = nil
	}
	if e.client != nil {
		e.client.Close()
		e.client = nil
	}
	if e.stopMetrics != nil {
		e.stopMetrics()
		e.stopMetrics = nil
	}
	if e.stack != nil {
		_ = e.stack.Stop()
		e.stack = nil
	}
}

// localBlob is the local stack's S3 with the environment's tuning of writers
// (VBATCH_S3_BACKGROUND_PARTS): the workers started beside it read that from
// the environment, and what this process writes (the bench's plain copy) must
// write as they do.
func localBlob(stack *devstack.Stack, env blob.Config) blob.Config {
	cfg := stack.BlobConfig()
	cfg.PartSize, cfg.BackgroundParts = env.PartSize, env.BackgroundParts
	return cfg
}

// startLocal starts the stack under dir, points the app's configuration at it, and
// starts both workers.
func (a *app) startLocal(ctx context.Context, dir string, flags *workerFlags, engineChosen bool) (*localEnv, error) {
	stack, err := devstack.Start(ctx, devstack.Options{Dir: dir, Bucket: a.cfg.Bucket, Logger: a.log.Named("devstack")})
	if err != nil {
		return nil, err
	}
	env := &localEnv{dir: dir, stack: stack}
	// The local stack replaces whatever Temporal and S3 the environment named.
	a.cfg.Temporal = client.Options{HostPort: stack.TemporalAddress, Namespace: stack.Namespace}
	a.cfg.Blob = localBlob(stack, a.cfg.Blob)
	if env.store, err = a.store(ctx); err != nil {
		env.stop()
		return nil, err
	}
	if env.stopMetrics, err = a.serveMetrics(flags.metricsAddr); err != nil {
		env.stop()
		return nil, err
	}
	if env.client, err = a.dial(ctx); err != nil {
		env.stop()
		return nil, err
	}
	gpuCfg := flags.config()
	if !engineChosen || gpuCfg.Engine == "auto" {
		gpuCfg.Engine = autoEngine(ctx, gpuCfg.Python, a.log)
	}
	env.engine, env.engineKind = gpuCfg.Engine, gpuCfg.Engine
	if gpuCfg.Engine == workers.EngineSim {
		env.engine = fmt.Sprintf("the SIMULATED engine (sim) on %d simulated GPUs at %.0f tokens/s each", gpuCfg.Slots, gpuCfg.Sim.TokensPerSecond)
	}
	if env.workers, err = a.startWorkers(ctx, env.client, env.store, roleAll, gpuCfg); err != nil {
		env.stop()
		return nil, err
	}
	a.log.Info("local stack ready", zap.String("ui", stack.UIAddress))
	return env, nil
}
