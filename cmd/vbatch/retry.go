package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdktemporal "go.temporal.io/sdk/temporal"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/workflows"
)

// errorMessage is an error's own message, without the "(type: …, retryable: …)"
// that Temporal's application errors add.
func errorMessage(err error) string {
	var appErr *sdktemporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}

type retryOptions struct {
	in             workflows.BatchInput
	id             string
	wait           bool
	json           bool
	allowNoWorkers bool
}

func (a *app) retryCmd() *cobra.Command {
	var o retryOptions
	cmd := &cobra.Command{
		Use:   "retry RUN",
		Short: "Redo what an ended run left unfinished, and merge its output again",
		Long: `Starts a BatchInference run with {"retry_of": RUN}: it redoes the chunks of RUN that
failed every attempt (and those a cancel cut short), in RUN's own folder, then merges
the whole of RUN again, so RUN's output.jsonl, errors.jsonl and report.json are
complete afterwards. With --engine-errors it also redoes the requests that ended with
engine_error. RUN's input, output and model come from RUN's own start in Temporal.

The retry's id is RUN-retry unless --id says otherwise: retrying a run while its
retry runs returns that retry instead of starting a second one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.in.RetryOf = args[0]
			if o.id == "" {
				o.id = args[0] + "-retry"
			}
			return a.retry(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.in.RetryEngineErrors, "engine-errors", false, "also redo the requests that ended with engine_error")
	f.StringVar(&o.in.Input, "input", "", "the run's input, to find the folder of a run whose history Temporal no longer has")
	f.StringVar(&o.in.Output, "output", "", "the run's output prefix, with --input")
	f.StringVar(&o.id, "id", "", "the retry's own id (default RUN-retry)")
	f.BoolVar(&o.wait, "wait", false, "wait for the retry to end and print its result")
	f.BoolVar(&o.json, "json", false, "print JSON")
	f.BoolVar(&o.allowNoWorkers, "allow-no-workers", false, "start even if no GPU worker serves the run's model yet")
	return cmd
}

func (a *app) retry(ctx context.Context, out io.Writer, o retryOptions) error {
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Find the run and its model here, to say what is wrong before a workflow
	// nobody watches fails on it.
	layout, err := activities.LocateRun(ctx, c, activities.RetryInput{RetryOf: o.in.RetryOf, Input: o.in.Input, Output: o.in.Output})
	if err != nil {
		return errors.New(errorMessage(err))
	}
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, store, layout.Manifest(), &manifest); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("run %s has no plan at %s: it ended before its input was split; submit it again", o.in.RetryOf, layout.Manifest())
		}
		return fmt.Errorf("read the plan of run %s: %w", o.in.RetryOf, err)
	}
	if !o.allowNoWorkers {
		if err := checkWorkers(ctx, c, manifest.Model); err != nil {
			return err
		}
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        o.id,
		TaskQueue: workflows.ControlTaskQueue,
		// A retry that runs is returned, not doubled: two retries in one folder
		// would race. Once it has ended, the same id may retry again.
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		StaticSummary:            "vbatch retry of " + o.in.RetryOf,
	}, workflows.WorkflowType, o.in)
	if err != nil {
		return fmt.Errorf("start retry of %s: %w", o.in.RetryOf, err)
	}
	if !o.wait {
		if o.json {
			return json.NewEncoder(out).Encode(map[string]string{"run_id": run.GetID(), "workflow_run_id": run.GetRunID(), "retry_of": o.in.RetryOf})
		}
		fmt.Fprintf(out, "retry %s of run %s started; follow it with: vbatch status %s\n", run.GetID(), o.in.RetryOf, run.GetID())
		return nil
	}
	res, err := runResult(ctx, run)
	if err != nil {
		return err
	}
	return printResult(out, res, o.json)
}
