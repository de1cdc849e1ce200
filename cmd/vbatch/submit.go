package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/uritemplate"
	"github.com/vbatch/vbatch/workflows"
)

type submitOptions struct {
	in             workflows.BatchInput
	id             string
	wait           bool
	json           bool
	allowNoWorkers bool
	maxTokens      int
}

func (a *app) submitCmd() *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		Use:   "submit --input s3://bucket/requests.jsonl",
		Short: "Start a batch run",
		Long: `Starts a BatchInference run on the input file. The run's folder is <output>/<run id>/,
with output.jsonl, errors.jsonl and report.json once it ends. The same --id twice
returns the existing run instead of starting a second one.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.maxTokens > 0 {
				o.in.Sampling.MaxTokens = &o.maxTokens
			}
			return a.submit(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.in.Input, "input", "", "JSONL file of requests: s3://bucket/key or file:///path (required)")
	f.StringVar(&o.in.Output, "output", "", "prefix for the run's folder (default: the input's folder)")
	f.StringVar(&o.in.Timezone, "timezone", "", "IANA zone of template fields such as {{.Date}} in --input and --output (default UTC)")
	f.StringVar(&o.in.Model, "model", workflows.DefaultModel, "model; picks the GPU workers that serve it")
	f.IntVar(&o.in.ChunkSize, "chunk-size", 0, fmt.Sprintf("most requests per chunk (default %d)", workflows.DefaultChunkSize))
	f.Int64Var(&o.in.ChunkTokens, "chunk-tokens", 0, "estimated tokens per chunk (default: chunk-size requests of the input's mean size)")
	f.IntVar(&o.in.Engines, "engines", 0, fmt.Sprintf("engines (GPUs) expected to serve the run; the last chunks are cut finer so they finish together (default: the engines of the GPU workers polling when the run is planned, at most %d)", workflows.DefaultMaxInFlightChunks/2))
	f.IntVar(&o.in.ExpectedCompletionTokens, "expected-completion-tokens", 0, "typical completion length, where well below max_tokens: a better token estimate for chunks")
	f.BoolVar(&o.in.KeepInputOrder, "keep-input-order", false, "feed each chunk in input order, not grouped by prompt prefix")
	f.IntVar(&o.maxTokens, "max-tokens", 0, fmt.Sprintf("max_tokens for lines that leave it out (default %d)", workflows.DefaultMaxTokens))
	f.BoolVar(&o.in.Cache, "cache", false, "answer requests answered before (same model, engine settings and request) from the answer cache, and store new answers there")
	f.StringVar(&o.in.CachePrefix, "cache-prefix", "", "where the answer cache lies (default: s3://<output bucket>/vbatch-cache)")
	f.StringVar(&o.id, "id", "", "run id (the workflow id); default: vb-<time>")
	f.BoolVar(&o.wait, "wait", false, "wait for the run to end and print its result")
	f.BoolVar(&o.json, "json", false, "print JSON")
	f.BoolVar(&o.allowNoWorkers, "allow-no-workers", false, "start even if no GPU worker serves the model yet")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func (a *app) submit(ctx context.Context, out io.Writer, o submitOptions) error {
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	// A templated input resolves in the run from its start: about now.
	fields, err := uritemplate.NewFields(time.Now(), o.in.Timezone, "")
	if err != nil {
		return err
	}
	input, err := uritemplate.Resolve(o.in.Input, fields)
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	if _, err := store.Stat(ctx, input); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("input %s does not exist", input)
		}
		return fmt.Errorf("cannot read input %s: %w", input, err)
	}
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if !o.allowNoWorkers {
		if err := checkWorkers(ctx, c, o.in.Model); err != nil {
			return err
		}
	}
	if o.id == "" {
		o.id = "vb-" + time.Now().UTC().Format("20060102-150405.000")
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       o.id,
		TaskQueue:                workflows.ControlTaskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		StaticSummary:            a.runSummary(ctx, store, o.in),
	}, workflows.WorkflowType, o.in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		// The id was used by a run that has ended: that run is the answer.
		run = c.GetWorkflow(ctx, o.id, "")
	} else if err != nil {
		return fmt.Errorf("start run: %w", err)
	}
	if !o.wait {
		if o.json {
			return json.NewEncoder(out).Encode(map[string]string{"run_id": run.GetID(), "workflow_run_id": run.GetRunID()})
		}
		fmt.Fprintf(out, "run %s started; follow it with: vbatch status %s\n", run.GetID(), run.GetID())
		return nil
	}
	res, err := runResult(ctx, run)
	if err != nil {
		return err
	}
	return printResult(out, res, o.json)
}

// countTimeout bounds how long submit reads the input to count its requests: an
// input too large or too slow to count in that time starts without the count.
const countTimeout = time.Minute

// runSummary is the run's one line in the Temporal UI and `temporal workflow list`:
// input, model and the number of requests, counted by streaming the input once.
// A count that fails is left out, and the run starts all the same.
func (a *app) runSummary(ctx context.Context, store blob.Store, in workflows.BatchInput) string {
	summary := fmt.Sprintf("vbatch %s · %s", in.Input, in.Model)
	n, err := countRequests(ctx, store, in.Input)
	if err != nil {
		a.log.Warn("the run's summary leaves out the request count", zap.String("input", in.Input), zap.Error(err))
		return summary
	}
	noun := "requests"
	if n == 1 {
		noun = "request"
	}
	return fmt.Sprintf("%s · %s %s", summary, groupDigits(n), noun)
}

// countRequests counts the lines of the input that the run will answer for, one
// each: its non-blank lines.
func countRequests(ctx context.Context, store blob.Store, uri string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, countTimeout)
	defer cancel()
	r, err := store.Open(ctx, uri)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n, err := batchfile.CountLines(r)
	if err != nil {
		return 0, fmt.Errorf("count the requests of %s: %w", uri, err)
	}
	return n, nil
}

// groupDigits writes a count with thousands separators: 5000 → "5,000".
func groupDigits(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// runResult waits for a run to end and returns its result, also when it was
// cancelled: a cancelled run ends as Temporal's Canceled with its BatchResult as
// the details.
func runResult(ctx context.Context, run client.WorkflowRun) (workflows.BatchResult, error) {
	var res workflows.BatchResult
	err := run.Get(ctx, &res)
	var canceled *sdktemporal.CanceledError
	if errors.As(err, &canceled) && canceled.HasDetails() {
		if derr := canceled.Details(&res); derr == nil {
			return res, nil
		}
	}
	if err != nil {
		return res, fmt.Errorf("run %s: %w", run.GetID(), err)
	}
	return res, nil
}

// checkWorkers refuses to start a run that no GPU worker would ever pick up.
func checkWorkers(ctx context.Context, c client.Client, model string) error {
	queue := workflows.GPUTaskQueue(model)
	resp, err := c.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
	if err != nil {
		return fmt.Errorf("describe task queue %s: %w", queue, err)
	}
	if len(resp.GetPollers()) == 0 {
		return fmt.Errorf("no GPU worker serves model %q (task queue %s has no pollers). Start one with "+
			"`vbatch worker --model %s`, or pass --allow-no-workers to start anyway", model, queue, model)
	}
	return nil
}

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status RUN",
		Short: "Show a run's progress, or its result once it has ended",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			return runStatus(cmd.Context(), c, cmd.OutOrStdout(), args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func runStatus(ctx context.Context, c client.Client, out io.Writer, id string, asJSON bool) error {
	desc, err := c.DescribeWorkflow(ctx, id, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return fmt.Errorf("no run %q", id)
	}
	if err != nil {
		return fmt.Errorf("describe run %s: %w", id, err)
	}
	state := desc.Status
	if state == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		val, err := c.QueryWorkflow(ctx, id, "", workflows.ProgressQuery)
		if err != nil {
			return fmt.Errorf("query progress of %s: %w", id, err)
		}
		var p workflows.Progress
		if err := val.Get(&p); err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(out).Encode(map[string]any{"run_id": id, "state": "running", "progress": p})
		}
		_, err = io.WriteString(out, p.Markdown())
		return err
	}
	res, err := runResult(ctx, c.GetWorkflow(ctx, id, ""))
	if err != nil {
		return fmt.Errorf("run %s ended %s: %w", id, state, err)
	}
	return printResult(out, res, asJSON)
}

func printResult(out io.Writer, res workflows.BatchResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	sim := ""
	if res.Simulated {
		sim = " (SIMULATED engine)"
	}
	fmt.Fprintf(tw, "run\t%s\nstatus\t%s%s\n", res.RunID, res.Status, sim)
	if res.RetryOf != "" {
		fmt.Fprintf(tw, "retry of\t%s (%d chunks redone)\n", res.RetryOf, res.RetriedChunks)
	}
	fmt.Fprintf(tw, "requests\t%d\nanswered\t%d\nerrors\t%d\n", res.Requests, res.Answered, res.Errors)
	codes := make([]string, 0, len(res.ErrorsByCode))
	for code := range res.ErrorsByCode {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		fmt.Fprintf(tw, "  %s\t%d\n", code, res.ErrorsByCode[code])
	}
	fmt.Fprintf(tw, "tokens\t%d prompt + %d completion\n", res.PromptTokens, res.CompletionTokens)
	if res.CacheHits+res.CacheMisses > 0 {
		fmt.Fprintf(tw, "answer cache\t%d hits, %d misses, %.1f engine seconds saved\n", res.CacheHits, res.CacheMisses, res.CacheSavedEngineSeconds)
	}
	fmt.Fprintf(tw, "chunks\t%d (%d failed)\ntime\t%.1f s\n", res.Chunks, len(res.FailedChunks), res.Seconds)
	fmt.Fprintf(tw, "output\t%s\nerrors\t%s\nreport\t%s\n", res.Output, res.ErrorsURI, res.Report)
	return tw.Flush()
}
