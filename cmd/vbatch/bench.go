package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/bench"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// benchModel is the model name the bench's simulated engines serve.
const benchModel = "bench/sim"

// Workload profiles of the bench.
const (
	// profileSeed is the seed benchmark's token profile, as `vbatch sample
	// candidates` writes it: ≈ 790 prompt and ≈ 310 completion tokens a request,
	// with a JSON schema on every line.
	profileSeed = "seed"
	// profileSeedNoSchema is the same requests without the schema: shorter lines,
	// the same tokens.
	profileSeedNoSchema = "seed-no-schema"
	// profileTiny is `vbatch sample tiny`: short chat requests with max_tokens 8,
	// for runs of a million requests that measure orchestration alone.
	profileTiny = "tiny"
)

type benchOptions struct {
	requests, gpus, batchSize, chunkSize, maxInFlight, chunksPerEngine, continueAsNewEvery int
	tokensPerSecond                                                                        float64
	profile, jsonPath, markdownPath                                                        string
	keep                                                                                   bool
}

// benchResult is what `vbatch bench --json` writes.
type benchResult struct {
	Date    time.Time `json:"date"`
	Command string    `json:"command"`
	// Simulated is always true: the engines are the sim engine, modelled as GPUs.
	Simulated       bool    `json:"simulated"`
	Requests        int     `json:"requests"`
	Answered        int     `json:"answered"`
	GPUs            int     `json:"gpus"`
	TokensPerSecond float64 `json:"tokens_per_second_per_gpu"`
	BatchSize       int     `json:"batch_size"`
	ChunkSize       int     `json:"chunk_size"`
	Chunks          int     `json:"chunks"`
	MaxInFlight     int     `json:"max_in_flight"`
	ChunksPerEngine int     `json:"chunks_per_engine"`
	Profile         string  `json:"profile"`
	AvgPrompt       float64 `json:"avg_prompt_tokens"`
	AvgCompletion   float64 `json:"avg_completion_tokens"`
	bench.Figures
	// EngineIdleFraction is the report's: the engines' time with nothing in flight
	// while they still had chunks to run, over their active time.
	EngineIdleFraction float64     `json:"engine_idle_fraction"`
	RSS                bench.Peaks `json:"rss"`
	RunID              string      `json:"run_id"`
	Report             string      `json:"report"`
	Dir                string      `json:"dir,omitempty"` // the stack's folder, with --keep
}

func (a *app) benchCmd() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the pipeline's overhead: a synthetic run on K SIMULATED GPUs on a local stack",
		Long: `Starts a local stack (Temporal dev server and versitygw, state under .vbatch/bench),
a control worker and a GPU worker as separate processes (the GPU worker runs the SIMULATED
engine, sim, modelled as --gpus GPUs of --tokens-per-second each), writes --requests
synthetic requests, runs them once and measures:

  ideal makespan   the engines' total busy time (≥ 1 request in flight) / K
  efficiency       ideal / generation phase (first chunk dispatched → last chunk closed);
                   run_efficiency: ideal / whole run (submit → result);
                   full_batch_efficiency: tokens / (K × tokens/s) / generation phase
  finish spread    first to last simulated GPU to finish, % of the generation phase
  chunk overhead   per chunk, its activity's time in Temporal's history less its time on
                   the engine (S3 reads and writes, Temporal round trips, the worker)
  engine idle      the engines' idle time while they still had chunks (report.json)
  Plan / Merge     input bytes / Plan activity, output bytes / Merge activity, in MB/s,
                   against a plain download + upload of the same bytes on the same server
  peak RSS         control worker, GPU worker, and the largest engine process (VmHWM);
                   for the control worker also the phase that reached it (Plan, generation,
                   Merge), to the watcher's 250 ms

Writes the figures as JSON (--json) and appends a Markdown row (--markdown).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.bench(cmd.Context(), cmd.OutOrStdout(), o, "vbatch "+strings.Join(os.Args[1:], " "))
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.requests, "requests", 5000, "synthetic requests in the run")
	f.IntVar(&o.gpus, "gpus", 4, "simulated GPUs (sim engine slots)")
	f.Float64Var(&o.tokensPerSecond, "tokens-per-second", 25000, "tokens/s of each simulated GPU at a full batch")
	f.IntVar(&o.batchSize, "batch-size", 64, "requests each simulated GPU batches at once")
	f.IntVar(&o.chunkSize, "chunk-size", 0, fmt.Sprintf("requests per chunk (default %d)", workflows.DefaultChunkSize))
	f.IntVar(&o.maxInFlight, "max-in-flight", 0, fmt.Sprintf("chunks scheduled at once (default %d)", workflows.DefaultMaxInFlightChunks))
	f.IntVar(&o.chunksPerEngine, "chunks-per-engine", 2, "chunks each engine works on at once")
	f.IntVar(&o.continueAsNewEvery, "continue-as-new-every", 0, fmt.Sprintf("chunks per workflow execution (default %d)", workflows.DefaultContinueAsNewEvery))
	f.StringVar(&o.profile, "profile", profileSeed, "workload: seed (≈790 prompt / ≈310 completion tokens, JSON schema), seed-no-schema, or tiny (max_tokens 8)")
	f.StringVar(&o.jsonPath, "json", "", "write the figures as JSON to this file")
	f.StringVar(&o.markdownPath, "markdown", "", "append the figures as one Markdown table row to this file")
	f.BoolVar(&o.keep, "keep", false, "keep the stack's folder (logs, S3 objects, Temporal's database)")
	return cmd
}

func (a *app) bench(ctx context.Context, out io.Writer, o benchOptions, command string) (err error) {
	synthOpts := synth.Options{N: o.requests, Seed: 1}
	switch o.profile {
	case profileSeed, profileTiny:
	case profileSeedNoSchema:
		synthOpts.NoSchema = true
	default:
		return fmt.Errorf("--profile %q: use %s, %s or %s", o.profile, profileSeed, profileSeedNoSchema, profileTiny)
	}
	if o.requests < 1 || o.gpus < 1 || o.tokensPerSecond <= 0 || o.batchSize < 1 {
		return errors.New("--requests, --gpus, --tokens-per-second and --batch-size must be positive")
	}
	started := time.Now().UTC()
	runID := "bench-" + started.Format("20060102-150405")
	dir := filepath.Join(stateDir, "bench", runID)
	stack, err := devstack.Start(ctx, devstack.Options{Dir: dir, Bucket: a.cfg.Bucket, Headless: true, Logger: a.log.Named("devstack")})
	if err != nil {
		return err
	}
	defer func() {
		_ = stack.Stop()
		if !o.keep {
			_ = os.RemoveAll(dir)
		}
	}()
	a.cfg.Temporal = client.Options{HostPort: stack.TemporalAddress, Namespace: stack.Namespace}
	a.cfg.Blob = localBlob(stack, a.cfg.Blob)
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	output := fmt.Sprintf("s3://%s/bench", stack.Bucket)
	layout := run.NewLayout(output, runID)
	input := blob.Join(layout.Prefix, "requests.jsonl")
	fmt.Fprintf(out, "writing %d synthetic requests (%s profile) to %s ...\n", o.requests, o.profile, input)
	if err := writeSynthetic(ctx, store, input, o.profile, synthOpts); err != nil {
		return err
	}

	// The workers are separate processes, as in production, so that each one's
	// memory is its own.
	control, err := startWorkerProcess(stack, dir, "control", "worker", "--role", "control")
	if err != nil {
		return err
	}
	defer control.stop()
	gpuWorker, err := startWorkerProcess(stack, dir, "gpu", "worker", "--role", "gpu", "--engine", "sim",
		"--model", benchModel, "--gpus", fmt.Sprint(o.gpus), "--sim-tokens-per-second", fmt.Sprint(o.tokensPerSecond),
		"--sim-batch-size", fmt.Sprint(o.batchSize), "--chunks-per-engine", fmt.Sprint(o.chunksPerEngine))
	if err != nil {
		return err
	}
	defer gpuWorker.stop()
	if err := control.waitFor(ctx, "control worker polling", 2*time.Minute); err != nil {
		return err
	}
	if err := gpuWorker.waitFor(ctx, "GPU worker ready", 2*time.Minute); err != nil {
		return err
	}
	watcher := bench.Watch(control.cmd.Process.Pid, gpuWorker.cmd.Process.Pid, 250*time.Millisecond)

	fmt.Fprintf(out, "running %s on %d SIMULATED GPUs at %.0f tokens/s each ...\n", runID, o.gpus, o.tokensPerSecond)
	in := workflows.BatchInput{Input: input, Output: output, Model: benchModel, ChunkSize: o.chunkSize, MaxInFlightChunks: o.maxInFlight,
		ContinueAsNewEvery: o.continueAsNewEvery, Engines: o.gpus}
	submitted := time.Now()
	wf, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: runID, TaskQueue: workflows.ControlTaskQueue}, workflows.WorkflowType, in)
	if err != nil {
		watcher.Stop()
		return err
	}
	// Get follows the run through continue-as-new, and GetRunID with it: the
	// first execution, where Plan ran, is the one to remember.
	firstExecution := wf.GetRunID()
	var res workflows.BatchResult
	err = wf.Get(ctx, &res)
	done := time.Now()
	peaks := watcher.Stop()
	if err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}

	var rep report.Report
	if err := blob.ReadJSON(ctx, store, res.Report, &rep); err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	measured := bench.Inputs{GPUs: o.gpus, Tokens: rep.Tokens.Total, TokensPerSecond: o.tokensPerSecond, Submitted: submitted, Done: done, InputBytes: rep.Config.InputBytes, OutputBytes: rep.Files.OutputBytes}
	for _, e := range rep.Engines {
		measured.Engines = append(measured.Engines, bench.Engine{Name: e.Name(), BusySeconds: e.BusySeconds})
	}
	measured.EngineLastBusy = rep.Timing.EngineLastBusy
	measured.ControlPeakRose = peaks.ControlRose
	if err := readActivities(ctx, c, runID, firstExecution, &measured); err != nil {
		return err
	}
	if err := readChunkAttempts(ctx, store, layout, res.Chunks, &measured); err != nil {
		return err
	}
	// The plain copies run after the run, alone on the same server.
	if measured.CopyInputSeconds, err = timedCopy(ctx, store, input, blob.Join(layout.Prefix, "copy-of-input.jsonl")); err != nil {
		return err
	}
	if measured.CopyOutputSeconds, err = timedCopy(ctx, store, res.Output, blob.Join(layout.Prefix, "copy-of-output.jsonl")); err != nil {
		return err
	}

	result := benchResult{Date: started, Command: command, Simulated: true, Requests: o.requests, Answered: res.Answered,
		GPUs: o.gpus, TokensPerSecond: o.tokensPerSecond, BatchSize: o.batchSize, ChunkSize: rep.Config.ChunkSize,
		Chunks: res.Chunks, MaxInFlight: o.maxInFlight, ChunksPerEngine: o.chunksPerEngine, Profile: o.profile,
		AvgPrompt: rep.Tokens.AvgPrompt, AvgCompletion: rep.Tokens.AvgCompletion,
		Figures: bench.Compute(measured), EngineIdleFraction: rep.EngineIdleFraction, RSS: peaks,
		RunID: runID, Report: res.Report}
	if result.MaxInFlight == 0 {
		result.MaxInFlight = workflows.DefaultMaxInFlightChunks
	}
	if o.keep {
		result.Dir = dir
	}
	if res.Answered != o.requests {
		return fmt.Errorf("run %s answered %d of %d requests (%d errors): not a benchmark", runID, res.Answered, o.requests, res.Errors)
	}
	id := synth.CustomID
	if o.profile == profileTiny {
		id = synth.TinyID
	}
	if err := checkOutputIDs(ctx, store, res.Output, o.requests, id); err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	fmt.Fprintf(out, "output checked: custom_ids 1..%d each exactly once, in input order\n", o.requests)
	printBench(out, result)
	if o.jsonPath != "" {
		if err := writeSummary(o.jsonPath, result); err != nil {
			return err
		}
	}
	if o.markdownPath != "" {
		if err := appendBenchRow(o.markdownPath, result); err != nil {
			return err
		}
	}
	return nil
}

func writeSynthetic(ctx context.Context, store blob.Store, uri, profile string, opts synth.Options) error {
	w, err := store.Create(ctx, uri)
	if err != nil {
		return err
	}
	write := func() error { return synth.WriteCandidates(w, opts) }
	if profile == profileTiny {
		write = func() error { return synth.WriteTiny(w, opts.N) }
	}
	if err := write(); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Close()
}

// workerProcess is a `vbatch worker` the bench started, its output in a log file.
type workerProcess struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startWorkerProcess(stack *devstack.Stack, dir, name string, args ...string) (*workerProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &workerProcess{cmd: exec.Command(exe, args...), log: filepath.Join(dir, name+"-worker.log"), done: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd.Env = append(os.Environ(), stack.Env()...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = workerSysProcAttr()
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s worker: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); logFile.Close(); close(p.done) }()
	return p, nil
}

// waitFor waits until the worker logs substr.
func (p *workerProcess) waitFor(ctx context.Context, substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(p.log); strings.Contains(string(b), substr) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before logging %q; its log: %s", strings.Join(p.cmd.Args, " "), substr, p.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not log %q in %s; its log: %s", strings.Join(p.cmd.Args, " "), substr, timeout, p.log)
}

func (p *workerProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// activityTimes are one activity's events in the run's history.
type activityTimes struct {
	kind                       string
	chunk                      int // GenerateChunk only
	scheduled, started, closed time.Time
}

// readActivities reads the run's history for the Plan and Merge activities'
// durations, the generation phase (first GenerateChunk scheduled → last closed) and
// each chunk's activity start and close.
func readActivities(ctx context.Context, c client.Client, runID, firstExecution string, m *bench.Inputs) error {
	var all []*activityTimes
	executions := 0
	// A run that continued as new has one history per execution; event ids count
	// within each.
	for execution := firstExecution; execution != ""; executions++ {
		byScheduled, next, err := readExecution(ctx, c, runID, execution)
		if err != nil {
			return err
		}
		for _, a := range byScheduled {
			all = append(all, a)
		}
		execution = next
	}
	chunks := map[int]*activityTimes{}
	for _, a := range all {
		switch a.kind {
		case "Plan":
			m.Plan = bench.Window{Start: a.started, End: a.closed}
		case "Merge":
			m.Merge = bench.Window{Start: a.started, End: a.closed}
		case "GenerateChunk":
			if m.GenerationStart.IsZero() || a.scheduled.Before(m.GenerationStart) {
				m.GenerationStart = a.scheduled
			}
			if a.closed.After(m.GenerationEnd) {
				m.GenerationEnd = a.closed
			}
			chunks[a.chunk] = a
		}
	}
	if m.Plan.Seconds() <= 0 || m.Merge.Seconds() <= 0 || len(chunks) == 0 {
		return fmt.Errorf("history of %s (%d executions from %s): Plan %.3f s, Merge %.3f s, %d chunks: a Plan, Merge or GenerateChunk activity is missing",
			runID, executions, firstExecution, m.Plan.Seconds(), m.Merge.Seconds(), len(chunks))
	}
	// readChunkAttempts adds each chunk's engine and times.
	for idx, a := range chunks {
		m.Chunks = append(m.Chunks, bench.Chunk{Index: idx, ActivityStarted: a.started, ActivityClosed: a.closed})
	}
	return nil
}

// readExecution reads one execution's activities by the id of their scheduled
// event, and the execution it continued as, if any.
func readExecution(ctx context.Context, c client.Client, runID, execution string) (byScheduled map[int64]*activityTimes, next string, err error) {
	byScheduled = map[int64]*activityTimes{}
	it := c.GetWorkflowHistory(ctx, runID, execution, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, "", fmt.Errorf("read history of %s: %w", runID, err)
		}
		if can := ev.GetWorkflowExecutionContinuedAsNewEventAttributes(); can != nil {
			next = can.GetNewExecutionRunId()
			continue
		}
		at := ev.GetEventTime().AsTime()
		if s := ev.GetActivityTaskScheduledEventAttributes(); s != nil {
			a := &activityTimes{kind: s.GetActivityType().GetName(), scheduled: at, chunk: -1}
			if a.kind == "GenerateChunk" {
				var in activities.GenerateInput
				if err := converter.GetDefaultDataConverter().FromPayloads(s.GetInput(), &in); err == nil {
					a.chunk = in.Chunk.Index
				}
			}
			byScheduled[ev.GetEventId()] = a
			continue
		}
		var scheduledID int64
		var started bool
		switch {
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			scheduledID, started = ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId(), true
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			scheduledID = ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()
		case ev.GetActivityTaskFailedEventAttributes() != nil:
			scheduledID = ev.GetActivityTaskFailedEventAttributes().GetScheduledEventId()
		case ev.GetActivityTaskTimedOutEventAttributes() != nil:
			scheduledID = ev.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId()
		default:
			continue
		}
		if a := byScheduled[scheduledID]; a != nil {
			if started {
				a.started = at
			} else {
				a.closed = at
			}
		}
	}
	return byScheduled, next, nil
}

// readChunkAttempts fills each chunk with its completed attempt's engine and times.
func readChunkAttempts(ctx context.Context, store blob.Store, layout run.Layout, chunks int, m *bench.Inputs) error {
	byIndex := map[int]*bench.Chunk{}
	for i := range m.Chunks {
		byIndex[m.Chunks[i].Index] = &m.Chunks[i]
	}
	for i := range chunks {
		objects, err := store.List(ctx, layout.ChunkDir(i))
		if err != nil {
			return fmt.Errorf("list chunk %d: %w", i, err)
		}
		for _, o := range objects {
			if !run.IsAttemptResult(o.URI) {
				continue
			}
			var a run.AttemptResult
			if err := blob.ReadJSON(ctx, store, o.URI, &a); err != nil {
				return fmt.Errorf("read %s: %w", o.URI, err)
			}
			c := byIndex[i]
			if a.Outcome != "completed" || c == nil {
				continue
			}
			c.Engine = fmt.Sprintf("%s/%d", a.Worker, a.EngineSlot)
			c.Started, c.EngineStart, c.EngineEnd, c.Finished = a.Started, a.EngineBusy[0].Time, a.EngineBusy[1].Time, a.Finished
		}
	}
	return nil
}

// timedCopy downloads src and uploads it to dst through the same client the
// workers use, and returns the seconds it took.
func timedCopy(ctx context.Context, store blob.Store, src, dst string) (float64, error) {
	start := time.Now()
	r, err := store.Open(ctx, src)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := store.Create(ctx, dst)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(w, r); err != nil {
		_ = w.Abort()
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	return time.Since(start).Seconds(), nil
}

func printBench(out io.Writer, r benchResult) {
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	fmt.Fprintf(out, "\n%d requests on %d SIMULATED GPUs at %.0f tokens/s (%.0f prompt + %.0f completion tokens a request), %d chunks of ≤ %d\n",
		r.Answered, r.GPUs, r.TokensPerSecond, r.AvgPrompt, r.AvgCompletion, r.Chunks, r.ChunkSize)
	fmt.Fprintf(out, "ideal makespan     %.2f s (engine busy %.1f s / %d)\n", r.IdealSeconds, r.BusySeconds, r.GPUs)
	fmt.Fprintf(out, "generation phase   %.2f s → efficiency %.3f\n", r.GenerationSeconds, r.Efficiency)
	fmt.Fprintf(out, "whole run          %.2f s → efficiency %.3f\n", r.RunSeconds, r.RunEfficiency)
	fmt.Fprintf(out, "full batches       %.2f s (tokens / (%d × %.0f tokens/s)) → efficiency %.3f\n",
		r.FullBatchIdealSeconds, r.GPUs, r.TokensPerSecond, r.FullBatchEfficiency)
	fmt.Fprintf(out, "finish spread      %.2f s = %.1f %% of the generation phase\n", r.SpreadSeconds, r.SpreadPct)
	o := r.ChunkOverheadMs
	fmt.Fprintf(out, "chunk overhead     mean %.0f ms, median %.0f ms, max %.0f ms over %d chunks\n", o.Mean, o.Median, o.Max, o.Chunks)
	fmt.Fprintf(out, "  of the mean      %.0f ms to the worker, %.0f ms before the engine, %.0f ms after it, %.0f ms back to Temporal\n",
		o.ToWorker, o.BeforeEngine, o.AfterEngine, o.ToServer)
	fmt.Fprintf(out, "engine idle        %.3f %% while chunks remained\n", 100*r.EngineIdleFraction)
	fmt.Fprintf(out, "Plan               %.1f MB/s (%.1f MB in %.2f s) = %.2f × plain copy %.1f MB/s\n",
		r.Plan.MBPerSecond, mb(r.Plan.Bytes), r.Plan.Seconds, r.PlanVsCopy, r.CopyInput.MBPerSecond)
	fmt.Fprintf(out, "Merge              %.1f MB/s (%.1f MB in %.2f s) = %.2f × plain copy %.1f MB/s\n",
		r.Merge.MBPerSecond, mb(r.Merge.Bytes), r.Merge.Seconds, r.MergeVsCopy, r.CopyOutput.MBPerSecond)
	reached := ""
	if r.ControlPeakPhase != "" {
		reached = " (reached in " + r.ControlPeakPhase + ")"
	}
	fmt.Fprintf(out, "peak RSS           control worker %.0f MB%s, GPU worker %.0f MB, engine process %.0f MB (largest of %d)\n",
		mb(r.RSS.ControlBytes), reached, mb(r.RSS.GPUBytes), mb(r.RSS.RunnerBytes), r.RSS.Runners)
}

// benchHeader is the Markdown table that appendBenchRow starts a new file with.
const benchHeader = `| date | requests | sim GPUs × tok/s | chunks | ideal s | generation s | efficiency | full-batch efficiency | run s | run efficiency | finish spread | chunk overhead (mean) | engine idle | Plan MB/s (× copy) | Merge MB/s (× copy) | peak RSS control / GPU worker / engine |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
`

func appendBenchRow(path string, r benchResult) error {
	var prefix string
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		prefix = benchHeader
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	_, err = fmt.Fprintf(f, "%s| %s | %d | %d × %.0f | %d | %.2f | %.2f | %.3f | %.3f | %.2f | %.3f | %.1f %% | %.0f ms | %.3f %% | %.1f (%.2f×) | %.1f (%.2f×) | %.0f / %.0f / %.0f MB |\n",
		prefix, r.Date.Format("2006-01-02"), r.Requests, r.GPUs, r.TokensPerSecond, r.Chunks, r.IdealSeconds, r.GenerationSeconds,
		r.Efficiency, r.FullBatchEfficiency, r.RunSeconds, r.RunEfficiency, r.SpreadPct, r.ChunkOverheadMs.Mean, 100*r.EngineIdleFraction,
		r.Plan.MBPerSecond, r.PlanVsCopy, r.Merge.MBPerSecond, r.MergeVsCopy,
		mb(r.RSS.ControlBytes), mb(r.RSS.GPUBytes), mb(r.RSS.RunnerBytes))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkOutputIDs reads output.jsonl once and checks that line i answers request i
// (id(i)): with the input's ids all distinct, every custom_id is then in the output
// exactly once. Memory stays at one line, whatever the run's size.
func checkOutputIDs(ctx context.Context, store blob.Store, uri string, n int, id func(int) string) error {
	src, err := store.Open(ctx, uri)
	if err != nil {
		return err
	}
	defer src.Close()
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	var line struct {
		CustomID string `json:"custom_id"`
	}
	i := 0
	for sc.Scan() {
		i++
		line.CustomID = ""
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("output line %d: %w", i, err)
		}
		if i > n || line.CustomID != id(i) {
			return fmt.Errorf("output line %d is %q, want %q", i, line.CustomID, id(i))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read output: %w", err)
	}
	if i != n {
		return fmt.Errorf("output has %d lines, want %d", i, n)
	}
	return nil
}
