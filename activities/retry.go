package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/uritemplate"
)

// maxRetryChain bounds how many retry_of links PlanRetry follows to the original run.
const maxRetryChain = 100

// PlanRetry finds an earlier run's folder and lists its chunks that still have
// requests without an answer: the shards that failed every attempt, and those a
// cancel left unfinished. With RetryEngineErrors it lists the chunks with
// engine_error answers too. S3 is the truth: the chunk folders say what is
// answered, whatever the earlier run's result said.
//
// The folder of run R is <output>/<R>/, where output comes from R's own input,
// which PlanRetry reads from R's first history event in Temporal. A retry writes
// into the folder of the run it retries, so when R was itself a retry, PlanRetry
// follows its retry_of to the original. Runs whose history is gone can be retried
// by giving their input (and output) with retry_of.
func (c *Control) PlanRetry(ctx context.Context, in RetryInput) (RetryPlan, error) {
	layout, err := LocateRun(ctx, c.Temporal, in)
	if err != nil {
		return RetryPlan{}, err
	}
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, c.Store, layout.Manifest(), &manifest); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return RetryPlan{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("run %s has no plan at %s: it ended before its input was split, so there is nothing to retry; submit it again",
					in.RetryOf, layout.Manifest()), ErrTypeConfig, err)
		}
		return RetryPlan{}, fmt.Errorf("read manifest: %w", err)
	}
	plan := RetryPlan{Run: layout, Input: manifest.Input, Model: manifest.Model, Plan: PlanResult{
		Manifest: layout.Manifest(), InputBytes: manifest.InputBytes, Lines: manifest.Lines,
		Valid: manifest.Valid, Invalid: manifest.Invalid, Chunks: manifest.Chunks,
	}}
	lastBeat := time.Now()
	for _, chunk := range manifest.Chunks {
		state, err := run.LoadChunk(ctx, c.Store, layout, chunk.Index)
		if err != nil {
			return RetryPlan{}, err
		}
		redo := RetryChunk{Index: chunk.Index, AttemptBase: state.LastAttempt, Missing: chunk.Requests - len(state.Answers)}
		if in.RetryEngineErrors {
			for _, a := range state.Answers {
				if isEngineError(a) {
					redo.EngineErrors++
				}
			}
		}
		if redo.Missing > 0 || redo.EngineErrors > 0 {
			plan.Redo = append(plan.Redo, redo)
		}
		if time.Since(lastBeat) > heartbeatEvery {
			activity.RecordHeartbeat(ctx, chunk.Index)
			lastBeat = time.Now()
		}
	}
	activity.GetLogger(ctx).Info("planned retry", "retry_of", in.RetryOf, "folder", layout.Prefix,
		"chunks", len(manifest.Chunks), "redo", len(plan.Redo))
	return plan, nil
}

// startInput is what PlanRetry needs of a run's BatchInput (the workflows package
// owns the type; activities cannot import it).
type startInput struct {
	Input    string `json:"input"`
	Output   string `json:"output"`
	Timezone string `json:"timezone"`
	RetryOf  string `json:"retry_of"`
}

// LocateRun finds the folder of the ended run that in.RetryOf names: from
// in.Input and in.Output when given, else from the run's start in Temporal (tc),
// following retry_of back to the original run. It refuses a run that still runs.
// Its errors are non-retryable ConfigErrors where no retry can help.
func LocateRun(ctx context.Context, tc client.Client, in RetryInput) (run.Layout, error) {
	if in.RetryOf == "" {
		return run.Layout{}, temporal.NewNonRetryableApplicationError("retry_of names no run", ErrTypeConfig, nil)
	}
	if tc != nil {
		desc, err := tc.DescribeWorkflow(ctx, in.RetryOf, "")
		var notFound *serviceerror.NotFound
		switch {
		case errors.As(err, &notFound):
		case err != nil:
			return run.Layout{}, fmt.Errorf("describe run %s: %w", in.RetryOf, err)
		case desc.Status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
			return run.Layout{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"run %s is still running: wait for it to end, or cancel it (vbatch cancel %s), before retrying it",
				in.RetryOf, in.RetryOf), ErrTypeConfig, nil)
		}
	}
	if in.Input != "" {
		output := in.Output
		if output == "" {
			output = run.DefaultOutput(in.Input)
		}
		return run.NewLayout(output, run.ID(in.RetryOf)), nil
	}
	if tc == nil {
		return run.Layout{}, temporal.NewNonRetryableApplicationError(
			"no Temporal client to look the run up with: pass the run's input with retry_of", ErrTypeConfig, nil)
	}
	id := in.RetryOf
	for range maxRetryChain {
		earlier, err := runInput(ctx, tc, id)
		if err != nil {
			return run.Layout{}, err
		}
		if earlier.RetryOf != "" && earlier.Input != "" {
			// A retry started with the original's input names the folder itself.
			output := earlier.Output
			if output == "" {
				output = run.DefaultOutput(earlier.Input)
			}
			return run.NewLayout(output, run.ID(earlier.RetryOf)), nil
		}
		if earlier.RetryOf == "" {
			if earlier.Input == "" {
				return run.Layout{}, temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("run %s has no input: there is nothing to retry", id), ErrTypeConfig, nil)
			}
			output := earlier.Output
			if output == "" {
				output = run.DefaultOutput(earlier.Input)
			}
			return run.NewLayout(output, run.ID(id)), nil
		}
		id = earlier.RetryOf
	}
	return run.Layout{}, temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("run %s: more than %d retries in a row; retry the original run", in.RetryOf, maxRetryChain), ErrTypeConfig, nil)
}

// runInput reads the input a run was started with from its first history event.
func runInput(ctx context.Context, tc client.Client, id string) (startInput, error) {
	it := tc.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return startInput{}, fmt.Errorf("run %s has an empty history", id)
	}
	ev, err := it.Next()
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return startInput{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"no run %q in Temporal (never started, or past the namespace's retention): pass its input (and output) with retry_of to find its folder",
			id), ErrTypeConfig, err)
	}
	if err != nil {
		return startInput{}, fmt.Errorf("read history of run %s: %w", id, err)
	}
	attrs := ev.GetWorkflowExecutionStartedEventAttributes()
	if attrs == nil {
		return startInput{}, fmt.Errorf("run %s: first history event is %s, not the start", id, ev.GetEventType())
	}
	var in startInput
	if payloads := attrs.GetInput(); payloads != nil && len(payloads.GetPayloads()) > 0 {
		if err := converter.GetDefaultDataConverter().FromPayloads(payloads, &in); err != nil {
			return startInput{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("run %s was not started with a BatchInput: %v", id, err), ErrTypeConfig, err)
		}
	}
	if in.RetryOf == "" && (uritemplate.IsTemplate(in.Input) || uritemplate.IsTemplate(in.Output)) {
		if err := resolveStartTemplates(&in, attrs, ev.GetEventTime().AsTime()); err != nil {
			return startInput{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("run %s: %v", id, err), ErrTypeConfig, err)
		}
	}
	return in, nil
}

// resolveStartTemplates resolves a templated run's input and output as its
// workflow did: from the schedule's time in its start's search attributes, else
// from its start (started).
func resolveStartTemplates(in *startInput, attrs *historypb.WorkflowExecutionStartedEventAttributes, started time.Time) error {
	when, schedule := started, ""
	dc := converter.GetDefaultDataConverter()
	fields := attrs.GetSearchAttributes().GetIndexedFields()
	if p, ok := fields["TemporalScheduledStartTime"]; ok {
		if err := dc.FromPayload(p, &when); err != nil {
			return fmt.Errorf("read TemporalScheduledStartTime: %w", err)
		}
	}
	if p, ok := fields["TemporalScheduledById"]; ok {
		if err := dc.FromPayload(p, &schedule); err != nil {
			return fmt.Errorf("read TemporalScheduledById: %w", err)
		}
	}
	f, err := uritemplate.NewFields(when, in.Timezone, schedule)
	if err != nil {
		return err
	}
	if in.Output == "" {
		in.Output = run.DefaultOutput(in.Input)
	}
	if in.Input, err = uritemplate.Resolve(in.Input, f); err != nil {
		return err
	}
	in.Output, err = uritemplate.Resolve(in.Output, f)
	return err
}
