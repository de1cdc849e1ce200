package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
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

func (a *app) demoCmd() *cobra.Command {
	var (
		flags workerFlags
		n     int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main job once on a local stack and print where the results are",
		Long: `Starts the local stack (as 'vbatch dev' does, state under .vbatch/demo), writes synthetic
candidate-scoring requests to S3, runs them through Temporal on the GPU worker (the
simulator on 2 simulated GPUs where this host has no GPUs with vLLM), prints the URIs of
output, errors and report and the headline figures, and stops the stack.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			env, err := a.startLocal(ctx, filepath.Join(stateDir, "demo"), &flags, cmd.Flags().Changed("engine"))
			if err != nil {
				return err
			}
			defer env.stop()
			return a.demo(ctx, cmd.OutOrStdout(), env, n, flags.gpu.Model)
		},
	}
	cmd.Flags().IntVar(&n, "n", 1000, "number of synthetic candidate requests")
	flags.register(cmd.Flags(), "auto")
	_ = cmd.Flags().Set("sim-tokens-per-second", "25000")
	cmd.Flags().Lookup("sim-tokens-per-second").DefValue = "25000"
	return cmd
}

func (a *app) demo(ctx context.Context, out io.Writer, env *localEnv, n int, model string) error {
	// The input goes into the run's own folder, so requests, answers and report sit together.
	runID := "demo-" + time.Now().UTC().Format("20060102-150405")
	output := fmt.Sprintf("s3://%s/demo", env.stack.Bucket)
	input := output + "/" + runID + "/requests.jsonl"
	w, err := env.store.Create(ctx, input)
	if err != nil {
		return err
	}
	if err := synth.WriteCandidates(w, synth.Options{N: n, Seed: 1}); err != nil {
		_ = w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %d synthetic candidate requests to %s\nrunning %s on %s ...\n", n, input, runID, env.engine)
	if err := a.submit(ctx, io.Discard, submitOptions{in: workflows.BatchInput{Input: input, Output: output, Model: model}, id: runID, wait: true}); err != nil {
		return err
	}
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := runStatus(ctx, c, out, runID, false); err != nil {
		return err
	}
	var rep report.Report
	reportURI := output + "/" + runID + "/report.json"
	if err := blob.ReadJSON(ctx, env.store, reportURI, &rep); err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	sim := ""
	if rep.Simulated {
		sim = " (SIMULATED)"
	}
	fmt.Fprintf(out, "\nthroughput%s: %.0f tokens/s, %.1f requests/s over %d engines; generation %.1f s of %.1f s total\n",
		sim, rep.Tokens.TokensPerSecond, rep.Tokens.RequestsPerSecond, len(rep.Engines), rep.Timing.GenerationSeconds, rep.Timing.TotalSeconds)
	fmt.Fprintf(out, "the files stay on disk under %s (versitygw keeps s3://BUCKET/KEY at %s/BUCKET/KEY)\n",
		env.dir, filepath.Join(env.dir, "s3"))
	return nil
}

// localEnv is the local stack with workers attached.
type localEnv struct {
	dir     string
	stack   *devstack.Stack
	client  client.Client
	store   blob.Store
	workers *runningWorkers
	engine  string
}

func (e *localEnv) stop() {
	if e.workers != nil {
		e.workers.stop()
	}
	if e.client != nil {
		e.client.Close()
	}
	_ = e.stack.Stop()
}

// startLocal starts the stack under dir, points the app's configuration at it, and
// starts both workers.
func (a *app) startLocal(ctx context.Context, dir string, flags *workerFlags, engineChosen bool) (*localEnv, error) {
	stack, err := devstack.Start(ctx, devstack.Options{Dir: dir, Bucket: a.cfg.Bucket, Logger: a.log.Named("devstack")})
	if err != nil {
		return nil, err
	}
	env := &localEnv{dir: dir, stack: stack}
	a.cfg.TemporalAddress, a.cfg.Namespace, a.cfg.Blob = stack.TemporalAddress, stack.Namespace, stack.BlobConfig()
	if env.store, err = a.store(ctx); err != nil {
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
	env.engine = gpuCfg.Engine
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
