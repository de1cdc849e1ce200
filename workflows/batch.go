package workflows

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/answercache"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/uritemplate"
)

// Statuses of a BatchResult.
const (
	StatusCompleted             = "completed"
	StatusCompletedWithFailures = "completed_with_failures"
	StatusCancelled             = "cancelled"
	StatusFailed                = "failed"
)

// BatchResult is what BatchInference returns: counts and where everything is. It
// holds keys and counts, never prompts or answers. A cancelled run ends as
// Temporal's "Canceled" and carries its BatchResult as the cancellation's details.
type BatchResult struct {
	RunID            string         `json:"run_id"`
	Status           string         `json:"status"`
	Requests         int            `json:"requests"` // non-blank input lines
	Answered         int            `json:"answered"` // lines in output.jsonl
	Errors           int            `json:"errors"`   // lines in errors.jsonl
	ErrorsByCode     map[string]int `json:"errors_by_code,omitempty"`
	PromptTokens     int64          `json:"prompt_tokens"`
	CompletionTokens int64          `json:"completion_tokens"`
	Chunks           int            `json:"chunks"`
	FailedChunks     []FailedChunk  `json:"failed_chunks,omitempty"`
	// RetryOf and RetriedChunks: what a retry run retried, in the folder of the
	// run it names (Output, ErrorsURI and Report are there).
	RetryOf       string  `json:"retry_of,omitempty"`
	RetriedChunks int     `json:"retried_chunks,omitempty"`
	Output        string  `json:"output"`
	ErrorsURI     string  `json:"errors_uri"`
	Report        string  `json:"report"`
	Simulated     bool    `json:"simulated"`
	Seconds       float64 `json:"seconds"`
	// CacheHits and CacheMisses count the answers from the answer cache and from
	// an engine, and CacheSavedEngineSeconds what the hits first cost their
	// engines; all zero without cache.
	CacheHits               int     `json:"cache_hits,omitempty"`
	CacheMisses             int     `json:"cache_misses,omitempty"`
	CacheSavedEngineSeconds float64 `json:"cache_saved_engine_seconds,omitempty"`
}

// FailedChunk is a chunk that failed every attempt.
type FailedChunk struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// BatchInference runs one batch: Plan → GenerateChunk for every chunk on the model's
// GPU task queue, at most MaxInFlightChunks at once → Merge → Report. With RetryOf
// it plans nothing: it redoes the earlier run's unfinished chunks in that run's
// folder and merges the whole run again. Every ContinueAsNewEvery chunks it lets
// its running chunks finish and continues as new with a Continuation, so a run of
// any number of chunks stays inside Temporal's history limits.
func BatchInference(ctx workflow.Context, in BatchInput) (BatchResult, error) {
	b := &batch{in: in.withDefaults()}
	if err := b.setup(ctx); err != nil {
		return BatchResult{}, err
	}
	return b.run(ctx)
}

// Continuation is what one execution of a run hands to the next when it continues
// as new: where the run is, the chunks it has left (as index ranges, not their
// plans, which LoadChunks reads back from the manifest), and what it has counted.
type Continuation struct {
	Run     run.Layout             `json:"run"`
	Plan    activities.PlanSummary `json:"plan"`
	Pending []run.IndexRange       `json:"pending"`
	// AttemptBase holds the nonzero attempt bases of a retry run's pending chunks.
	AttemptBase       map[int]int               `json:"attempt_base,omitempty"`
	Failed            []activities.ChunkFailure `json:"failed,omitempty"`
	WorkTotal         int                       `json:"work_total"`
	Simulated         bool                      `json:"simulated,omitempty"`
	Progress          Progress                  `json:"progress"`
	Started           time.Time                 `json:"started"`
	GenerationStarted time.Time                 `json:"generation_started"`
	Executions        int                       `json:"executions"`
	// SeriesPrefix: the templated output's series index, which the resolved
	// output no longer shows.
	SeriesPrefix string `json:"series_prefix,omitempty"`
	// Scheduled is the time a scheduled run stands for, which the continued
	// execution's search attributes may no longer say.
	Scheduled time.Time `json:"scheduled,omitzero"`
}

// batch is one BatchInference execution's state.
type batch struct {
	in     BatchInput
	layout run.Layout
	// seriesPrefix is where the report keeps the series index when the output
	// is templated; empty: beside the run's folder.
	seriesPrefix string
	// scheduled is the time a scheduled run stands for; zero for other runs.
	scheduled time.Time
	started   time.Time
	plan      activities.PlanSummary // the run's whole plan, without its chunk list
	work      []chunkWork            // the chunks this execution generates
	workTotal int                    // the chunks the run generates over all its executions
	progress  Progress
	chunks    map[int]activities.GenerateResult // this execution's finished chunks
	failed    []activities.ChunkFailure         // the run's chunks that failed every attempt
	simulated bool
	// executions counts the executions before this one (continue-as-new).
	executions int
	// configErr is a chunk's non-retryable configuration error: the run ends
	// with it, since every other chunk would meet it too.
	configErr error
}

// chunkWork is one chunk to generate; attemptBase counts the attempts earlier runs
// made on it.
type chunkWork struct {
	chunk       run.ChunkPlan
	attemptBase int
}

func (b *batch) setup(ctx workflow.Context) error {
	if b.in.Input == "" && b.in.RetryOf == "" {
		return temporal.NewNonRetryableApplicationError(
			`"input" is required: the s3:// or file:// URI of a JSONL file of requests (or "retry_of": a run to retry)`, ErrTypeBadInput, nil)
	}
	if c := b.in.Continuation; c != nil {
		b.layout, b.plan, b.workTotal, b.simulated, b.executions = c.Run, c.Plan, c.WorkTotal, c.Simulated, c.Executions
		b.seriesPrefix, b.scheduled = c.SeriesPrefix, c.Scheduled
		b.failed = c.Failed
		b.started = c.Started
		b.progress = c.Progress
		b.progress.generationStarted = c.GenerationStarted
		b.chunks = map[int]activities.GenerateResult{}
		return workflow.SetQueryHandler(ctx, ProgressQuery, func() (Progress, error) { return b.progress, nil })
	}
	if b.in.RetryOf == "" {
		if err := b.resolveTemplates(ctx); err != nil {
			return err
		}
		output := b.in.Output
		if output == "" {
			output = run.DefaultOutput(b.in.Input)
		}
		b.layout = run.NewLayout(output, run.ID(workflow.GetInfo(ctx).WorkflowExecution.ID))
	}
	b.started = workflow.Now(ctx)
	b.chunks = map[int]activities.GenerateResult{}
	b.progress = Progress{Phase: PhasePlanning, Model: b.in.Model, Started: b.started}
	return workflow.SetQueryHandler(ctx, ProgressQuery, func() (Progress, error) { return b.progress, nil })
}

// cachePrefix is the answer cache of the run, or "" without one.
func (b *batch) cachePrefix() string {
	switch {
	case !b.in.Cache:
		return ""
	case b.in.CachePrefix != "":
		return strings.TrimRight(b.in.CachePrefix, "/")
	}
	// The run folder's parent is the output prefix, for retries too.
	return answercache.DefaultPrefix(run.DefaultOutput(b.layout.Prefix))
}

// Search attributes that Temporal sets on the runs a schedule starts.
var (
	// scheduledStartTime is the time the schedule meant the run to start: also
	// that of a run started late, caught up or backfilled.
	scheduledStartTime = temporal.NewSearchAttributeKeyTime("TemporalScheduledStartTime")
	scheduledByID      = temporal.NewSearchAttributeKeyKeyword("TemporalScheduledById")
)

// resolveTemplates fills the template fields of Input and Output from the time
// the run stands for — its schedule's time, else its own start — so that a run
// caught up days late still reads its own night's file. A scheduled run gets the
// label schedule=<schedule id> and its scheduled time, which make its report
// compare it with the schedule's night before it. Nothing here is a command:
// runs recorded before templates existed replay unchanged.
func (b *batch) resolveTemplates(ctx workflow.Context) error {
	attrs := workflow.GetTypedSearchAttributes(ctx)
	schedule, _ := attrs.GetKeyword(scheduledByID)
	b.scheduled, _ = attrs.GetTime(scheduledStartTime)
	if schedule != "" && b.in.Labels["schedule"] == "" {
		b.in.Labels = maps.Clone(b.in.Labels)
		if b.in.Labels == nil {
			b.in.Labels = map[string]string{}
		}
		b.in.Labels["schedule"] = schedule
	}
	output := b.in.Output
	if output == "" {
		output = run.DefaultOutput(b.in.Input)
	}
	if !uritemplate.IsTemplate(b.in.Input) && !uritemplate.IsTemplate(output) {
		return nil
	}
	when := b.scheduled
	if when.IsZero() {
		when = workflow.GetInfo(ctx).WorkflowStartTime
	}
	fields, err := uritemplate.NewFields(when, b.in.Timezone, schedule)
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, nil)
	}
	if uritemplate.IsTemplate(output) {
		// Every night has its own folder; the series index stays where the
		// nights can find each other.
		b.seriesPrefix = uritemplate.FixedPrefix(output)
	}
	if b.in.Input, err = uritemplate.Resolve(b.in.Input, fields); err != nil {
		return temporal.NewNonRetryableApplicationError("input: "+err.Error(), ErrTypeBadInput, nil)
	}
	if b.in.Output, err = uritemplate.Resolve(output, fields); err != nil {
		return temporal.NewNonRetryableApplicationError("output: "+err.Error(), ErrTypeBadInput, nil)
	}
	return nil
}

// ErrTypeBadInput marks errors in the run's own input that no retry can mend.
const ErrTypeBadInput = "BadInput"

// retryPolicy retries what can mend (an engine, object storage, a worker) with
// backoff — 2, 4, 8, 16 s… — so that max_attempts spans an outage of half a minute
// and more, and never what cannot (a configuration error).
func (b *batch) retryPolicy() *temporal.RetryPolicy {
	return &temporal.RetryPolicy{
		InitialInterval:        2 * time.Second,
		BackoffCoefficient:     2,
		MaximumInterval:        time.Minute,
		MaximumAttempts:        int32(b.in.MaxAttempts),
		NonRetryableErrorTypes: []string{activities.ErrTypeConfig},
	}
}

func (b *batch) controlOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		TaskQueue:           ControlTaskQueue,
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         b.retryPolicy(),
	}
}

func (b *batch) run(ctx workflow.Context) (BatchResult, error) {
	var control *activities.Control
	b.publish(ctx)

	planCtx := workflow.WithActivityOptions(ctx, b.controlOptions())
	switch {
	case b.in.Continuation != nil:
		if err := b.resume(planCtx); err != nil {
			return BatchResult{}, err
		}
	case b.in.RetryOf != "":
		if err := b.planRetry(planCtx); err != nil {
			return BatchResult{}, err
		}
	default:
		if err := b.planRun(planCtx); err != nil {
			return BatchResult{}, err
		}
	}
	if b.in.Continuation == nil {
		b.workTotal = len(b.work)
		b.progress.Phase = PhaseGenerating
		b.progress.Model = b.in.Model
		b.progress.ChunksTotal = b.workTotal
		b.progress.generationStarted = workflow.Now(ctx)
	}
	b.publish(ctx)

	cancelled, left := b.generate(ctx)
	if len(left) > 0 && !cancelled && b.configErr == nil {
		return BatchResult{}, b.continueAsNew(ctx, left)
	}
	if b.configErr != nil {
		b.progress.Phase, b.progress.Status = PhaseDone, StatusFailed
		b.publish(ctx)
		return BatchResult{}, temporal.NewNonRetryableApplicationError(b.configErr.Error(), activities.ErrTypeConfig, nil)
	}

	// Merge and report run even when the run was cancelled: what finished is kept.
	finishCtx, _ := workflow.NewDisconnectedContext(ctx)
	mergeStarted := workflow.Now(ctx)
	b.progress.Phase = PhaseMerging
	b.publish(ctx)
	mergeCtx := workflow.WithActivityOptions(finishCtx, b.controlOptions())
	mergeIn := activities.MergeInput{Run: b.layout, Failed: slices.Clone(b.failed), Cache: b.in.Cache, CachePrefix: b.cachePrefix()}
	slices.SortFunc(mergeIn.Failed, func(x, y activities.ChunkFailure) int { return x.Index - y.Index })
	for _, w := range b.work {
		_, done := b.chunks[w.chunk.Index]
		failed := slices.ContainsFunc(b.failed, func(f activities.ChunkFailure) bool { return f.Index == w.chunk.Index })
		if !done && !failed {
			mergeIn.Cancelled = append(mergeIn.Cancelled, w.chunk.Index)
		}
	}
	var merged activities.MergeResult
	if err := workflow.ExecuteActivity(mergeCtx, control.Merge, mergeIn).Get(finishCtx, &merged); err != nil {
		return BatchResult{}, fmt.Errorf("merge: %w", err)
	}

	res := BatchResult{
		RunID:            run.ID(workflow.GetInfo(ctx).WorkflowExecution.ID),
		Status:           StatusCompleted,
		Requests:         b.plan.Lines,
		Answered:         merged.Answered,
		Errors:           merged.Errors,
		ErrorsByCode:     merged.ErrorsByCode,
		PromptTokens:     merged.PromptTokens,
		CompletionTokens: merged.CompletionTokens,
		Chunks:           b.plan.Chunks,
		Output:           merged.Output,
		ErrorsURI:        merged.ErrorsURI,
	}
	if c := merged.Cache; c != nil {
		res.CacheHits, res.CacheMisses, res.CacheSavedEngineSeconds = c.Hits, c.Misses, c.SavedEngineSeconds
	}
	if b.in.RetryOf != "" {
		res.RetryOf, res.RetriedChunks = b.in.RetryOf, b.workTotal
	}
	for _, f := range mergeIn.Failed {
		res.FailedChunks = append(res.FailedChunks, FailedChunk(f))
	}
	switch {
	case cancelled:
		res.Status = StatusCancelled
	case len(res.FailedChunks) > 0:
		res.Status = StatusCompletedWithFailures
	}
	res.Simulated = b.simulated

	b.progress.Phase = PhaseReporting
	b.publish(ctx)
	res.Seconds = workflow.Now(ctx).Sub(b.started).Seconds()
	reportIn := activities.ReportInput{
		Run:               b.layout,
		Input:             b.in.Input,
		Model:             b.in.Model,
		Status:            res.Status,
		Labels:            b.in.Labels,
		SeriesPrefix:      b.seriesPrefix,
		Scheduled:         b.scheduled,
		RetryOf:           b.in.RetryOf,
		Plan:              b.plan,
		Merge:             merged,
		FailedChunks:      mergeIn.Failed,
		Started:           b.started,
		GenerationStarted: b.progress.generationStarted,
		MergeStarted:      mergeStarted,
	}
	if err := workflow.ExecuteActivity(mergeCtx, control.Report, reportIn).Get(finishCtx, &res.Report); err != nil {
		return BatchResult{}, fmt.Errorf("report: %w", err)
	}

	b.progress.Phase = PhaseDone
	b.progress.Status = res.Status
	b.publish(ctx)
	if cancelled {
		// The run ends as Temporal's "Canceled", as the UI and `temporal workflow
		// list` expect of a cancelled run, and still hands over its result.
		return res, temporal.NewCanceledError(res)
	}
	return res, nil
}

// planRun splits the input into chunks; every chunk is to be generated.
func (b *batch) planRun(ctx workflow.Context) error {
	var control *activities.Control
	var plan activities.PlanResult
	err := workflow.ExecuteActivity(ctx, control.Plan, activities.PlanInput{
		Run:                      b.layout,
		Input:                    b.in.Input,
		Model:                    b.in.Model,
		Sampling:                 b.in.Sampling,
		ChunkSize:                b.in.ChunkSize,
		MaxLineBytes:             b.in.MaxLineBytes,
		ChunkTokens:              b.in.ChunkTokens,
		Engines:                  b.in.Engines,
		GPUTaskQueue:             GPUTaskQueue(b.in.Model),
		MaxInFlightChunks:        b.in.MaxInFlightChunks,
		ExpectedCompletionTokens: b.in.ExpectedCompletionTokens,
	}).Get(ctx, &plan)
	if err != nil {
		return fmt.Errorf("plan %s: %w", b.in.Input, err)
	}
	b.plan = plan.Summary()
	for _, c := range plan.Chunks {
		b.work = append(b.work, chunkWork{chunk: c})
	}
	b.progress.Requests = b.plan.Lines
	b.progress.RequestsFailed = b.plan.Invalid
	return nil
}

// planRetry finds the earlier run's folder and the chunks it left unfinished. The
// retry works in that folder with that run's model; its own input and model fields
// are not used for that.
func (b *batch) planRetry(ctx workflow.Context) error {
	var control *activities.Control
	var rp activities.RetryPlan
	err := workflow.ExecuteActivity(ctx, control.PlanRetry, activities.RetryInput{
		RetryOf: b.in.RetryOf, Input: b.in.Input, Output: b.in.Output, RetryEngineErrors: b.in.RetryEngineErrors,
	}).Get(ctx, &rp)
	if err != nil {
		return fmt.Errorf("retry of run %s: %w", b.in.RetryOf, err)
	}
	b.layout, b.plan = rp.Run, rp.Plan.Summary()
	b.in.Input, b.in.Model = rp.Input, rp.Model
	chunks := make(map[int]run.ChunkPlan, len(rp.Plan.Chunks))
	for _, c := range rp.Plan.Chunks {
		chunks[c.Index] = c
	}
	for _, r := range rp.Redo {
		c, ok := chunks[r.Index]
		if !ok {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("retry of run %s: chunk %d is not in its plan", b.in.RetryOf, r.Index), ErrTypeBadInput, nil)
		}
		b.work = append(b.work, chunkWork{chunk: c, attemptBase: r.AttemptBase})
		b.progress.Requests += c.Requests
	}
	return nil
}

// resume reads back the plans of the chunks a continued run has left.
func (b *batch) resume(ctx workflow.Context) error {
	c := b.in.Continuation
	var control *activities.Control
	var chunks []run.ChunkPlan
	err := workflow.ExecuteActivity(ctx, control.LoadChunks, activities.LoadChunksInput{Run: c.Run, Chunks: c.Pending}).Get(ctx, &chunks)
	if err != nil {
		return fmt.Errorf("continue run %s: %w", c.Run.RunID, err)
	}
	for _, chunk := range chunks {
		b.work = append(b.work, chunkWork{chunk: chunk, attemptBase: c.AttemptBase[chunk.Index]})
	}
	return nil
}

// continueAsNew hands the chunks left to a new execution of the run.
func (b *batch) continueAsNew(ctx workflow.Context, left []chunkWork) error {
	next := b.in
	c := &Continuation{
		Run: b.layout, Plan: b.plan, Failed: b.failed, WorkTotal: b.workTotal, Simulated: b.simulated,
		Progress: b.progress, Started: b.started, GenerationStarted: b.progress.generationStarted,
		Executions: b.executions + 1, SeriesPrefix: b.seriesPrefix, Scheduled: b.scheduled,
	}
	indexes := make([]int, 0, len(left))
	for _, w := range left {
		indexes = append(indexes, w.chunk.Index)
		if w.attemptBase != 0 {
			if c.AttemptBase == nil {
				c.AttemptBase = map[int]int{}
			}
			c.AttemptBase[w.chunk.Index] = w.attemptBase
		}
	}
	slices.Sort(indexes)
	c.Pending = run.RangesOf(indexes)
	next.Continuation = c
	workflow.GetLogger(ctx).Info("continuing as new", "execution", c.Executions, "chunks_left", len(left))
	return workflow.NewContinueAsNewError(ctx, BatchInference, next)
}

// generate runs every chunk of b.work through GenerateChunk with a sliding window
// and reports whether the run was cancelled meanwhile, and the chunks it left for
// the next execution when this one has finished ContinueAsNewEvery chunks. A chunk
// that fails all its attempts is recorded in b.failed; the others go on. A chunk's
// configuration error stops the run: b.configErr.
func (b *batch) generate(ctx workflow.Context) (cancelled bool, left []chunkWork) {
	var gpu *activities.GPU
	actCtx, cancelChunks := workflow.WithCancel(ctx)
	defer cancelChunks()
	genCtx := workflow.WithActivityOptions(actCtx, workflow.ActivityOptions{
		TaskQueue: GPUTaskQueue(b.in.Model),
		// A chunk waits for a free engine in the queue; it only has to finish once started.
		StartToCloseTimeout: 12 * time.Hour,
		HeartbeatTimeout:    time.Duration(b.in.HeartbeatTimeoutSeconds) * time.Second,
		WaitForCancellation: true,
		RetryPolicy:         b.retryPolicy(),
	})
	sel := workflow.NewSelector(ctx)
	next, running, ended := 0, 0, 0
	// draining: this execution starts no more chunks and continues as new once its
	// running ones end.
	draining := false
	for next < len(b.work) || running > 0 {
		for running < b.in.MaxInFlightChunks && next < len(b.work) && ctx.Err() == nil && b.configErr == nil && !draining {
			w := b.work[next]
			next++
			running++
			f := workflow.ExecuteActivity(genCtx, gpu.GenerateChunk, activities.GenerateInput{
				Run:               b.layout,
				Chunk:             w.chunk,
				Model:             b.in.Model,
				CheckpointEvery:   b.in.CheckpointEvery,
				CheckpointSeconds: b.in.CheckpointSeconds,
				AttemptBase:       w.attemptBase,
				RetryEngineErrors: b.in.RetryEngineErrors && b.in.RetryOf != "",
				Cache:             b.cachePrefix(),
				KeepInputOrder:    b.in.KeepInputOrder,
			})
			sel.AddFuture(f, func(f workflow.Future) {
				running--
				ended++
				var r activities.GenerateResult
				err := f.Get(ctx, &r)
				var canceled *temporal.CanceledError
				switch {
				case err == nil:
					b.chunks[w.chunk.Index] = r
					b.simulated = b.simulated || r.Simulated
					b.progress.ChunksDone++
					b.progress.RequestsDone += r.Answered + r.Failed
					b.progress.RequestsFailed += r.Failed
					b.progress.CacheHits += r.CacheHits
					b.progress.Tokens += r.PromptTokens + r.CompletionTokens
				case errors.As(err, &canceled):
					// Left for Merge to list as cancelled.
				case isConfigError(err):
					if b.configErr == nil {
						b.configErr = fmt.Errorf("chunk %d: %s", w.chunk.Index, failureReason(err))
						cancelChunks()
					}
				default:
					b.failed = append(b.failed, activities.ChunkFailure{Index: w.chunk.Index, Reason: failureReason(err)})
					b.progress.ChunksFailed++
					b.progress.RequestsFailed += w.chunk.Requests
				}
			})
		}
		if running == 0 {
			break
		}
		b.progress.ChunksRunning = running
		b.publish(ctx)
		sel.Select(ctx)
		if !draining && next < len(b.work) && b.historyFull(ctx, ended) {
			draining = true
		}
	}
	b.progress.ChunksRunning = 0
	if ctx.Err() != nil {
		return true, nil
	}
	if b.configErr == nil {
		left = b.work[next:]
	}
	return false, left
}

// historyFull says whether this execution, having ended this many chunks, should
// hand the rest of the run to a new one. Runs whose history began before
// continue-as-new existed never do, so their replay stays as recorded.
func (b *batch) historyFull(ctx workflow.Context, ended int) bool {
	if ended < b.in.ContinueAsNewEvery && !workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
		return false
	}
	return workflow.GetVersion(ctx, "continue-as-new", workflow.DefaultVersion, 1) >= 1
}

func isConfigError(err error) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeConfig
}

// failureReason is what a chunk's last attempt said, without the activity
// envelope's ids.
func failureReason(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) {
		return timeout.Error()
	}
	return err.Error()
}
