package workflows

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/run"
)

// Statuses of a BatchResult.
const (
	StatusCompleted             = "completed"
	StatusCompletedWithFailures = "completed_with_failures"
	StatusCancelled             = "cancelled"
	StatusFailed                = "failed"
)

// BatchResult is what BatchInference returns: counts and where everything is. It
// holds keys and counts, never prompts or answers.
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
	Output           string         `json:"output"`
	ErrorsURI        string         `json:"errors_uri"`
	Report           string         `json:"report"`
	Simulated        bool           `json:"simulated"`
	Seconds          float64        `json:"seconds"`
}

// FailedChunk is a chunk that failed every attempt.
type FailedChunk struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// BatchInference runs one batch: Plan → GenerateChunk for every chunk on the model's
// GPU task queue, at most MaxInFlightChunks at once → Merge → Report.
func BatchInference(ctx workflow.Context, in BatchInput) (BatchResult, error) {
	b := &batch{in: in.withDefaults()}
	if err := b.setup(ctx); err != nil {
		return BatchResult{}, err
	}
	return b.run(ctx)
}

// batch is one BatchInference execution's state.
type batch struct {
	in       BatchInput
	layout   run.Layout
	started  time.Time
	plan     activities.PlanResult
	progress Progress
	chunks   map[int]activities.GenerateResult
	failed   map[int]string
}

func (b *batch) setup(ctx workflow.Context) error {
	if b.in.Input == "" {
		return temporal.NewNonRetryableApplicationError(
			`"input" is required: the s3:// or file:// URI of a JSONL file of requests`, ErrTypeBadInput, nil)
	}
	output := b.in.Output
	if output == "" {
		output = run.DefaultOutput(b.in.Input)
	}
	info := workflow.GetInfo(ctx)
	b.layout = run.NewLayout(output, run.ID(info.WorkflowExecution.ID))
	b.started = workflow.Now(ctx)
	b.chunks = map[int]activities.GenerateResult{}
	b.failed = map[int]string{}
	b.progress = Progress{Phase: PhasePlanning, Model: b.in.Model, Started: b.started}
	return workflow.SetQueryHandler(ctx, ProgressQuery, func() (Progress, error) { return b.progress, nil })
}

// ErrTypeBadInput marks errors in the run's own input that no retry can mend.
const ErrTypeBadInput = "BadInput"

func (b *batch) run(ctx workflow.Context) (BatchResult, error) {
	var control *activities.Control
	b.publish(ctx)

	planCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           ControlTaskQueue,
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: int32(b.in.MaxAttempts), NonRetryableErrorTypes: []string{activities.ErrTypeConfig}},
	})
	err := workflow.ExecuteActivity(planCtx, control.Plan, activities.PlanInput{
		Run:          b.layout,
		Input:        b.in.Input,
		Model:        b.in.Model,
		Sampling:     b.in.Sampling,
		ChunkSize:    b.in.ChunkSize,
		MaxLineBytes: b.in.MaxLineBytes,
	}).Get(ctx, &b.plan)
	if err != nil {
		return BatchResult{}, fmt.Errorf("plan %s: %w", b.in.Input, err)
	}
	b.progress.Phase = PhaseGenerating
	b.progress.ChunksTotal = len(b.plan.Chunks)
	b.progress.Requests = b.plan.Lines
	b.progress.RequestsFailed = b.plan.Invalid
	b.progress.generationStarted = workflow.Now(ctx)
	b.publish(ctx)

	cancelled := b.generate(ctx)

	// Merge and report run even when the run was cancelled: what finished is kept.
	finishCtx, _ := workflow.NewDisconnectedContext(ctx)
	mergeStarted := workflow.Now(ctx)
	b.progress.Phase = PhaseMerging
	b.publish(ctx)
	mergeCtx := workflow.WithActivityOptions(finishCtx, workflow.ActivityOptions{
		TaskQueue:           ControlTaskQueue,
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: int32(b.in.MaxAttempts)},
	})
	mergeIn := activities.MergeInput{Run: b.layout}
	for _, c := range b.plan.Chunks {
		if reason, ok := b.failed[c.Index]; ok {
			mergeIn.Failed = append(mergeIn.Failed, activities.ChunkFailure{Index: c.Index, Reason: reason})
		} else if _, ok := b.chunks[c.Index]; !ok {
			mergeIn.Cancelled = append(mergeIn.Cancelled, c.Index)
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
		Chunks:           len(b.plan.Chunks),
		Output:           merged.Output,
		ErrorsURI:        merged.ErrorsURI,
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
	chunkResults := b.chunkResults()
	for _, c := range chunkResults {
		res.Simulated = res.Simulated || c.Simulated
	}

	b.progress.Phase = PhaseReporting
	b.publish(ctx)
	finished := workflow.Now(ctx)
	res.Seconds = finished.Sub(b.started).Seconds()
	reportIn := activities.ReportInput{
		Run:               b.layout,
		Input:             b.in.Input,
		Model:             b.in.Model,
		Status:            res.Status,
		Labels:            b.in.Labels,
		Plan:              b.plan.Summary(),
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
	return res, nil
}

// generate runs every chunk through GenerateChunk with a sliding window and reports
// whether the run was cancelled meanwhile. A chunk that fails all its attempts is
// recorded in b.failed; the others go on.
func (b *batch) generate(ctx workflow.Context) (cancelled bool) {
	var gpu *activities.GPU
	heartbeat := time.Duration(b.in.HeartbeatTimeoutSeconds) * time.Second
	genCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: GPUTaskQueue(b.in.Model),
		// A chunk waits for a free engine in the queue; it only has to finish once started.
		StartToCloseTimeout: 12 * time.Hour,
		HeartbeatTimeout:    heartbeat,
		WaitForCancellation: true,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        int32(b.in.MaxAttempts),
			NonRetryableErrorTypes: []string{activities.ErrTypeConfig},
		},
	})
	sel := workflow.NewSelector(ctx)
	next, running := 0, 0
	for next < len(b.plan.Chunks) || running > 0 {
		for running < b.in.MaxInFlightChunks && next < len(b.plan.Chunks) && ctx.Err() == nil {
			chunk := b.plan.Chunks[next]
			next++
			running++
			f := workflow.ExecuteActivity(genCtx, gpu.GenerateChunk, activities.GenerateInput{
				Run:               b.layout,
				Chunk:             chunk,
				Model:             b.in.Model,
				CheckpointEvery:   b.in.CheckpointEvery,
				CheckpointSeconds: b.in.CheckpointSeconds,
			})
			sel.AddFuture(f, func(f workflow.Future) {
				running--
				var r activities.GenerateResult
				err := f.Get(ctx, &r)
				var canceled *temporal.CanceledError
				switch {
				case err == nil:
					b.chunks[chunk.Index] = r
					b.progress.ChunksDone++
					b.progress.RequestsDone += r.Answered + r.Failed
					b.progress.RequestsFailed += r.Failed
					b.progress.Tokens += r.PromptTokens + r.CompletionTokens
				case errors.As(err, &canceled):
					// Left for Merge to list as cancelled.
				default:
					b.failed[chunk.Index] = err.Error()
					b.progress.ChunksFailed++
					b.progress.RequestsFailed += chunk.Requests
				}
			})
		}
		if running == 0 {
			break
		}
		b.progress.ChunksRunning = running
		b.publish(ctx)
		sel.Select(ctx)
	}
	b.progress.ChunksRunning = 0
	return ctx.Err() != nil
}

// chunkResults lists the finished chunks in index order, for the report.
func (b *batch) chunkResults() []activities.GenerateResult {
	out := make([]activities.GenerateResult, 0, len(b.chunks))
	for _, r := range b.chunks {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Chunk < out[j].Chunk })
	return out
}
