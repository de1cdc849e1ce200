package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/metrics"
	"github.com/vbatch/vbatch/workers"
	"github.com/vbatch/vbatch/workflows"
)

// Worker roles.
const (
	roleAll     = "all"
	roleControl = "control"
	roleGPU     = "gpu"
)

// workerFlags are the flags that configure a GPU worker, shared by worker, dev and demo.
type workerFlags struct {
	gpu           workers.GPUConfig
	prefixCaching bool
	metricsAddr   string
}

func (f *workerFlags) register(fs *pflag.FlagSet, defaultEngine string) {
	g := &f.gpu
	fs.StringVar(&g.Model, "model", workflows.DefaultModel, "model the GPU worker loads and serves")
	fs.StringVar(&g.Engine, "engine", defaultEngine, "engine: vllm, transformers, sim (simulated, no GPU) or openai")
	fs.IntVar(&g.Slots, "gpus", 2, "number of simulated GPUs (sim) or client slots (openai); real engines use every GPU NVML finds")
	fs.IntSliceVar(&g.DeviceIndexes, "gpu-ids", nil, "vllm/transformers: use only these GPUs (NVML indexes, e.g. 0,1); default every GPU")
	fs.IntVar(&g.ChunksPerEngine, "chunks-per-engine", 2, "chunks each engine works on at once, so it never drains between chunks")
	fs.StringVar(&g.Python, "python", "python3", "Python interpreter of the engine process")
	fs.DurationVar(&g.StopTimeout, "stop-timeout", 30*time.Second, "how long a stopping worker lets running chunks checkpoint")
	fs.Float64Var(&g.Settings.GPUMemoryUtilization, "gpu-memory-utilization", 0.90, "share of GPU memory the engine may use")
	fs.IntVar(&g.Settings.MaxModelLen, "max-model-len", 4096, "context window of the engine")
	fs.BoolVar(&f.prefixCaching, "enable-prefix-caching", true, "reuse the KV cache of shared prompt prefixes")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics (Temporal SDK and vbatch_*) at http://HOST:PORT/metrics, e.g. :9090; off when empty")
	fs.IntVar(&g.Settings.TensorParallelSize, "tensor-parallel-size", 1, "GPUs per engine")
	fs.StringVar(&g.Settings.KVCacheDtype, "kv-cache-dtype", "auto", "KV cache data type (auto, fp8)")
	fs.StringVar(&g.Settings.LoadFormat, "load-format", "auto", "weights: auto, or dummy for random weights")
	fs.IntVar(&g.Settings.MaxNumSeqs, "max-num-seqs", 0, "vllm/transformers: requests an engine runs at once; 0 keeps the engine's default (vLLM's own, transformers 256)")
	fs.BoolVar(&g.Settings.EnforceEager, "enforce-eager", false, "vllm/transformers: run without CUDA graphs (less GPU memory, slower steps)")
	fs.Float64Var(&g.Sim.TokensPerSecond, "sim-tokens-per-second", 2500, "sim: tokens/s of each simulated GPU at a full batch")
	fs.IntVar(&g.Sim.BatchSize, "sim-batch-size", 64, "sim: requests each simulated GPU batches at once")
	fs.IntVar(&g.Sim.KVCacheTokens, "sim-kv-cache-tokens", 0, "sim: tokens of each simulated GPU's KV cache, which bounds its prefix cache (default batch size × max model len)")
	fs.StringVar(&g.OpenAI.BaseURL, "openai-url", "", "openai: base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
	fs.StringVar(&g.OpenAI.APIKey, "openai-api-key", os.Getenv("OPENAI_API_KEY"), "openai: bearer token (default $OPENAI_API_KEY)")
	fs.IntVar(&g.OpenAI.Concurrency, "openai-concurrency", 64, "openai: requests in flight per slot")
	// Faults for the reliability tests. Hidden, and named for what they break, so
	// that nobody sets them by accident.
	fs.StringVar(&g.Sim.CrashOn, "sim-crash-on", "", "sim: the engine process exits when a prompt contains this text (a fault for tests)")
	fs.IntSliceVar(&g.FaultFailChunks, "fault-fail-chunk", nil, "FAULT for tests: fail these chunk indexes on every attempt")
	_ = fs.MarkHidden("sim-crash-on")
	_ = fs.MarkHidden("fault-fail-chunk")
}

func (f *workerFlags) config() workers.GPUConfig {
	g := f.gpu
	g.Settings.EnablePrefixCaching = &f.prefixCaching
	return g
}

func (a *app) workerCmd() *cobra.Command {
	var (
		role  string
		flags workerFlags
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a control worker, a GPU worker, or both",
		Long: `Runs vbatch's Temporal workers until interrupted.

The control worker (queue "vbatch") runs the BatchInference workflow and the storage
activities; it needs no GPU. The GPU worker finds its GPUs with NVML, loads one warm
engine per GPU before it polls, and serves the model's GPU task queue.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != roleAll && role != roleControl && role != roleGPU {
				return fmt.Errorf("--role %q: use all, control or gpu", role)
			}
			tightenGC()
			if role == roleGPU {
				// A GPU worker's requests to Temporal are heartbeats, polls and small
				// results, which gzip does not shrink; its compressors (about 0.8 MB
				// each, pooled per P) only held memory. See workerGCPercent.
				a.cfg.Temporal.ConnectionOptions.GrpcCompression = &client.GrpcCompressionNone{}
			}
			stopMetrics, err := a.serveMetrics(flags.metricsAddr)
			if err != nil {
				return err
			}
			defer stopMetrics()
			c, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			store, err := a.store(cmd.Context())
			if err != nil {
				return err
			}
			running, err := a.startWorkers(cmd.Context(), c, store, role, flags.config())
			if err != nil {
				return err
			}
			defer running.stop()
			a.watchHeapPeak(cmd.Context(), role)
			<-cmd.Context().Done()
			a.log.Info("stopping workers")
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", roleAll, "which worker: all, control or gpu")
	flags.register(cmd.Flags(), workers.EngineVLLM)
	return cmd
}

// workerGCPercent is every worker's GOGC unless the environment sets one. A
// worker's live heap is mostly buffers that a long run keeps full from start to
// end and a short one barely fills: the GPU worker's chunks in flight (their
// requests and answers), the control worker's chunk buffers in Plan and its
// read-ahead chunks and output part buffer in Merge (blob: PartSize ×
// (BackgroundParts+1), 5 MiB by default). Go's default of 100 lets the heap grow to
// twice that, so a long run (200,000 requests) peaked tens of MB above a short
// one (5,000). 25 keeps the headroom at a quarter; the GCs' cost showed only with
// engines 200× the targets' speed (2 % of a 16-core host). See
// docs/benchmarks.md, "GPU worker peak RSS" and "The control worker's peak, flatter".
const workerGCPercent = 25

// tightenGC sets the workers' GOGC, leaving an explicit GOGC alone.
func tightenGC() {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(workerGCPercent)
}

// runningWorkers are started workers, stopped together.
type runningWorkers struct {
	control worker.Worker
	gpu     *workers.GPUWorker
}

func (r *runningWorkers) stop() {
	if r.gpu != nil {
		r.gpu.Stop()
	}
	if r.control != nil {
		r.control.Stop()
	}
}

func (a *app) startWorkers(ctx context.Context, c client.Client, store blob.Store, role string, gpuCfg workers.GPUConfig) (*runningWorkers, error) {
	r := &runningWorkers{}
	if role == roleAll || role == roleGPU {
		if a.metrics != nil {
			var err error
			if gpuCfg.Metrics, err = metrics.NewWorker(a.metrics.MeterProvider()); err != nil {
				return nil, fmt.Errorf("metrics: %w", err)
			}
		}
		g, err := workers.StartGPU(ctx, c, store, gpuCfg, a.log.Named("gpu"))
		if err != nil {
			return nil, err
		}
		if err := g.Start(); err != nil {
			g.Stop()
			return nil, fmt.Errorf("start GPU worker: %w", err)
		}
		r.gpu = g
	}
	if role == roleAll || role == roleControl {
		r.control = workers.NewControl(c, store, a.log.Named("control"))
		if err := r.control.Start(); err != nil {
			r.stop()
			return nil, fmt.Errorf("start control worker: %w", err)
		}
		a.log.Info("control worker polling", zap.String("queue", workflows.ControlTaskQueue))
	}
	return r, nil
}

// serveMetrics serves Prometheus metrics on addr until the returned stop; the
// Temporal client dialled afterwards and the GPU worker report to it. With no addr
// it does nothing.
func (a *app) serveMetrics(addr string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	e, err := metrics.NewExporter(a.log.Named("metrics"))
	if err != nil {
		return nil, err
	}
	bound, err := e.Serve(addr)
	if err != nil {
		e.Close()
		return nil, err
	}
	a.metrics = e
	a.log.Info("serving metrics", zap.String("url", "http://"+bound+"/metrics"))
	return func() {
		e.Close()
		a.metrics = nil
	}, nil
}

// autoEngine picks vLLM where this host has GPUs and vLLM, else the simulator; dev
// and demo use it so they run anywhere.
func autoEngine(ctx context.Context, python string, log *zap.Logger) string {
	if why := workers.VLLMUnavailable(ctx, python); why != "" {
		log.Warn("using the SIMULATED engine (sim): "+why, zap.String("engine", workers.EngineSim))
		return workers.EngineSim
	}
	return workers.EngineVLLM
}
