package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/answercache"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/metrics"
	"github.com/vbatch/vbatch/workflows"
)

// Engine kinds a GPU worker can run.
const (
	EngineVLLM         = "vllm"
	EngineTransformers = "transformers"
	EngineSim          = "sim"
	EngineOpenAI       = "openai"
)

// GPUConfig configures a GPU worker.
type GPUConfig struct {
	Model  string
	Engine string // vllm, transformers, sim or openai
	// Slots is the number of simulated GPUs for the sim engine, and of parallel
	// client slots for openai; vllm and transformers take one slot per GPU group.
	Slots int
	// DeviceIndexes limits real engines to these NVML GPU indexes; none means every GPU.
	DeviceIndexes []int
	// ChunksPerEngine is how many chunks an engine works on at once: more than one,
	// so an engine never drains to empty between chunks. The worker takes up to
	// hungryChunksFactor times as many while their requests do not fill its
	// engines' batches (small chunks at the end of a run; slots.go).
	ChunksPerEngine int
	Settings        engine.Settings
	Sim             engine.SimConfig
	OpenAI          engine.OpenAIConfig
	Python          string
	Name            string // this worker's name in reports; default host:pid
	// StopTimeout is how long a stopping worker waits for its chunks to
	// checkpoint and hand back their work.
	StopTimeout time.Duration
	// FaultFailChunks is a test-only fault (the hidden --fault-fail-chunk flag):
	// these chunk indexes fail on every attempt.
	FaultFailChunks []int
	// Metrics receives the worker's vbatch_* metrics; nil records none.
	Metrics *metrics.Worker
}

// heartbeatThrottle is the longest a GPU worker holds back a chunk's heartbeat; the
// SDK's default (up to 60 s) would let a cancelled chunk run on for a minute.
const heartbeatThrottle = 5 * time.Second

// GPUWorker is a started GPU worker: engines warm, not yet polling.
type GPUWorker struct {
	worker.Worker
	pool    *pool
	monitor *gpu.Monitor
	devices []gpu.Device
	// stopObserving ends the metrics' readings of the pool and the monitor.
	stopObserving func()
}

// StartGPU discovers the GPUs, starts and loads one engine per slot, and returns the
// worker registered on the model's GPU task queue; Run or Start it to poll.
func StartGPU(ctx context.Context, c client.Client, store blob.Store, cfg GPUConfig, log *zap.Logger) (*GPUWorker, error) {
	if cfg.ChunksPerEngine <= 0 {
		cfg.ChunksPerEngine = 2
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	w := &GPUWorker{}
	groups, err := w.slots(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	start := func(ctx context.Context, slot int) (engine.Engine, error) {
		return startEngine(ctx, cfg, groups[slot], len(groups), log.With(zap.Int("slot", slot)))
	}
	if w.pool, err = newPool(ctx, uuids(groups), start, cfg.Metrics, log); err != nil {
		w.stopMonitor()
		return nil, err
	}
	if w.stopObserving, err = cfg.Metrics.Observe(w.pool.load, w.monitor); err != nil {
		w.pool.Close()
		w.stopMonitor()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	queue := workflows.GPUTaskQueue(cfg.Model)
	share := len(groups) * cfg.ChunksPerEngine
	tuner, err := gpuTuner(newChunkSlots(w.pool, share, hungryChunksFactor*share))
	if err != nil {
		w.pool.Close()
		w.stopMonitor()
		return nil, fmt.Errorf("activity slots: %w", err)
	}
	w.Worker = worker.New(c, queue, worker.Options{
		Tuner:                        tuner,
		WorkerStopTimeout:            cfg.StopTimeout,
		MaxHeartbeatThrottleInterval: heartbeatThrottle,
		Identity:                     activities.GPUWorkerIdentity(cfg.Name, len(groups)),
	})
	ready := w.pool.slots[0].engine.Ready()
	w.RegisterActivityWithOptions(&activities.GPU{
		Store: store, Engines: w.pool, Model: cfg.Model, Worker: cfg.Name, Monitor: w.monitor, Logger: log,
		CacheEngine:     answercache.EngineOf(cfg.Model, cfg.Settings, cfg.Sim, ready),
		FaultFailChunks: cfg.FaultFailChunks,
		Metrics:         cfg.Metrics,
	}, activity.RegisterOptions{})
	if len(cfg.FaultFailChunks) > 0 {
		log.Warn("FAULT INJECTION: this worker fails chunks on every attempt (--fault-fail-chunk); never use it in production",
			zap.Ints("chunks", cfg.FaultFailChunks))
	}
	log.Info("GPU worker ready", zap.String("queue", queue), zap.String("model", cfg.Model),
		zap.String("engine", ready.Backend), zap.Bool("simulated", ready.Simulated), zap.Int("engines", len(groups)),
		zap.Int("chunks_per_engine", cfg.ChunksPerEngine))
	return w, nil
}

// slots decides what each engine runs on. Real engines get one slot per GPU group,
// pinned by UUID; the simulator and the openai client get cfg.Slots slots without GPUs.
func (w *GPUWorker) slots(ctx context.Context, cfg GPUConfig, log *zap.Logger) ([][]gpu.Device, error) {
	devs, discoverErr := gpu.Discover()
	switch cfg.Engine {
	case EngineSim, EngineOpenAI:
		if discoverErr == nil {
			w.startMonitor(ctx, devs, log)
		}
		n := max(cfg.Slots, 1)
		if cfg.Engine == EngineSim {
			log.Warn("engine is the SIMULATOR: no real inference; answers and throughput are simulated",
				zap.Int("simulated_gpus", n), zap.Float64("tokens_per_second_each", cfg.Sim.TokensPerSecond))
		}
		return make([][]gpu.Device, n), nil
	case EngineVLLM, EngineTransformers:
	default:
		return nil, fmt.Errorf("unknown engine %q: use vllm, transformers, sim or openai", cfg.Engine)
	}
	if discoverErr != nil {
		return nil, fmt.Errorf("--engine %s needs NVIDIA GPUs, and none were found: %v. "+
			"Run it on a GPU host with the NVIDIA driver, or try vbatch here with --engine sim (simulated) "+
			"or --engine openai (an OpenAI-compatible server)", cfg.Engine, discoverErr)
	}
	if err := checkPythonModule(ctx, cfg.Python, cfg.Engine); err != nil {
		return nil, err
	}
	if devs, discoverErr = gpu.Select(devs, cfg.DeviceIndexes); discoverErr != nil {
		return nil, discoverErr
	}
	w.devices = devs
	tp := max(cfg.Settings.TensorParallelSize, 1)
	groups, err := gpu.Groups(devs, tp)
	if err != nil {
		return nil, err
	}
	w.startMonitor(ctx, devs, log)
	return groups, nil
}

func (w *GPUWorker) startMonitor(ctx context.Context, devs []gpu.Device, log *zap.Logger) {
	m, err := gpu.StartMonitor(context.WithoutCancel(ctx), devs, time.Second)
	if err != nil {
		log.Warn("GPU telemetry unavailable", zap.Error(err))
		return
	}
	w.monitor = m
}

func (w *GPUWorker) stopMonitor() {
	if w.monitor != nil {
		w.monitor.Stop()
	}
}

// Stop stops polling and tells running chunks (through the SDK's worker stop
// channel) to abort what is in flight, checkpoint what finished and fail
// retryably, waits for them up to the stop timeout, then shuts the engines down.
func (w *GPUWorker) Stop() {
	w.Worker.Stop()
	w.stopObserving()
	w.pool.Close()
	w.stopMonitor()
}

// Engines is the number of engines this worker runs.
func (w *GPUWorker) Engines() int { return len(w.pool.slots) }

// Devices are the GPUs this worker found.
func (w *GPUWorker) Devices() []gpu.Device { return w.devices }

func startEngine(ctx context.Context, cfg GPUConfig, group []gpu.Device, engines int, log *zap.Logger) (engine.Engine, error) {
	if cfg.Engine == EngineOpenAI {
		oc := cfg.OpenAI
		oc.Model, oc.Logger = cfg.Model, log
		return engine.NewOpenAI(ctx, oc)
	}
	var env []string
	if len(group) > 0 {
		env = append(env, "CUDA_VISIBLE_DEVICES="+gpu.VisibleDevices(group))
		if threads, ok := cpuThreadsPerEngine(engines); ok {
			env = append(env, threads)
		}
	}
	return engine.StartProcess(ctx, engine.ProcessConfig{
		Python: cfg.Python, Backend: cfg.Engine, Model: cfg.Model, Settings: cfg.Settings, Sim: cfg.Sim,
		Env: env, Logger: log,
	})
}

// cpuThreadsPerEngine shares the host's cores among its GPU engines: torch's CPU
// thread pools default to every core in every process, and four engines on one host
// then fight over the cores that launch their kernels. vLLM's own workers cap
// OMP_NUM_THREADS the same way. A value the operator set is kept.
func cpuThreadsPerEngine(engines int) (string, bool) {
	if _, set := os.LookupEnv("OMP_NUM_THREADS"); set || engines < 2 {
		return "", false
	}
	return fmt.Sprintf("OMP_NUM_THREADS=%d", max(1, runtime.NumCPU()/engines)), true
}

// checkPythonModule fails early, with what to do, where the engine's Python package
// is missing, rather than after a slow start.
func checkPythonModule(ctx context.Context, python, module string) error {
	if python == "" {
		python = "python3"
	}
	out, err := exec.CommandContext(ctx, python, "-c", "import "+module).CombinedOutput()
	if err == nil {
		return nil
	}
	var execErr *exec.Error
	if errors.As(err, &execErr) {
		return fmt.Errorf("--engine %s needs %s, which was not found: %v", module, python, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return fmt.Errorf("--engine %s: python cannot import %s (%s). Install it (pip install %s) or point --python at an environment that has it",
		module, module, lines[len(lines)-1], module)
}

func uuids(groups [][]gpu.Device) [][]string {
	out := make([][]string, len(groups))
	for i, g := range groups {
		for _, d := range g {
			out[i] = append(out[i], d.UUID)
		}
	}
	return out
}

// VLLMUnavailable says why this host cannot run the vllm engine, or "" when it can.
func VLLMUnavailable(ctx context.Context, python string) string {
	if _, err := gpu.Discover(); err != nil {
		return "no GPU found (" + err.Error() + ")"
	}
	if err := checkPythonModule(ctx, python, EngineVLLM); err != nil {
		return err.Error()
	}
	return ""
}
