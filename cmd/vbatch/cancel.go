package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
)

func (a *app) cancelCmd() *cobra.Command {
	var wait, asJSON bool
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: running chunks stop, what finished is merged",
		Long: `Asks a run to stop, as the Temporal UI's Cancel does. Running chunks stop within a
heartbeat (about 5 s) and checkpoint what they finished; the run then merges: finished
answers go to output.jsonl, every other request to errors.jsonl as cancelled, and the
report and result say cancelled. 'vbatch retry RUN' finishes it later.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.cancel(cmd.Context(), cmd.OutOrStdout(), args[0], wait, asJSON)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run to end and print its result")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --wait)")
	return cmd
}

func (a *app) cancel(ctx context.Context, out io.Writer, id string, wait, asJSON bool) error {
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	desc, err := c.DescribeWorkflow(ctx, id, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return fmt.Errorf("no run %q", id)
	}
	if err != nil {
		return fmt.Errorf("describe run %s: %w", id, err)
	}
	if state := desc.Status; state != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return fmt.Errorf("run %s has already ended (%s); nothing to cancel", id, state)
	}
	if err := c.CancelWorkflow(ctx, id, ""); err != nil {
		return fmt.Errorf("cancel run %s: %w", id, err)
	}
	if !wait {
		fmt.Fprintf(out, "run %s is cancelling; follow it with: vbatch status %s\n", id, id)
		return nil
	}
	res, err := runResult(ctx, c.GetWorkflow(ctx, id, ""))
	if err != nil {
		return err
	}
	return printResult(out, res, asJSON)
}
