package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdktemporal "go.temporal.io/sdk/temporal"

	"github.com/vbatch/vbatch/internal/uritemplate"
	"github.com/vbatch/vbatch/workflows"
)

// Defaults of `vbatch schedule create`.
const (
	defaultCatchupWindow   = 24 * time.Hour
	defaultOverlap         = "skip"
	defaultBackfillOverlap = "buffer_all"
)

func (a *app) scheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Nightly runs with Temporal Schedules: create, list, describe, pause, unpause, trigger, backfill, delete",
		Long: `A schedule starts a BatchInference run on a cron. Its --input and --output may hold
template fields that each run resolves from the time its schedule meant it to start,
in the schedule's --timezone: {{.Date}} (YYYY-MM-DD), {{.Time}} (a Go time.Time:
{{.Time.Format "2006/01/02"}}) and {{.Schedule}} (the schedule's name). A run started
late, caught up or backfilled still reads and writes its own date.`,
	}
	cmd.AddCommand(a.scheduleCreateCmd(), a.scheduleListCmd(), a.scheduleDescribeCmd(), a.schedulePauseCmd(),
		a.scheduleUnpauseCmd(), a.scheduleTriggerCmd(), a.scheduleBackfillCmd(), a.scheduleDeleteCmd())
	return cmd
}

type scheduleCreateOptions struct {
	name      string
	cron      string
	in        workflows.BatchInput
	maxTokens int
	catchup   time.Duration
	overlap   string
	paused    bool
	note      string
	json      bool
}

func (a *app) scheduleCreateCmd() *cobra.Command {
	var o scheduleCreateOptions
	cmd := &cobra.Command{
		Use:   "create NAME --cron '0 2 * * *' --input 's3://b/candidates/{{.Date}}/requests.jsonl'",
		Short: "Create a schedule that starts a run on a cron",
		Long: `Creates the Temporal Schedule NAME. Each run it starts is BatchInference on the task
queue vbatch with the given input, whose template fields resolve in the run from its
scheduled time, and carries the label schedule=NAME, so that its report compares it
with the schedule's run before it. --timezone is the zone of both the cron and the
template fields (default UTC).

By default a run whose predecessor still runs is skipped (--overlap skip), and runs
missed while the server was down are caught up within --catchup-window (24h).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			if o.maxTokens > 0 {
				o.in.Sampling.MaxTokens = &o.maxTokens
			}
			return a.scheduleCreate(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cron, "cron", "", `when runs start, a cron expression in --timezone: "0 2 * * *" is 02:00 every day (required)`)
	f.StringVar(&o.in.Input, "input", "", "JSONL file of requests, with template fields: s3://b/candidates/{{.Date}}/requests.jsonl (required)")
	f.StringVar(&o.in.Output, "output", "", "prefix for each run's folder, with template fields (default: the input's folder)")
	f.StringVar(&o.in.Model, "model", workflows.DefaultModel, "model; picks the GPU workers that serve it")
	f.StringVar(&o.in.Timezone, "timezone", "", "IANA zone of the cron and the template fields, e.g. Europe/Berlin (default UTC)")
	f.IntVar(&o.in.ChunkSize, "chunk-size", 0, fmt.Sprintf("requests per chunk (default %d)", workflows.DefaultChunkSize))
	f.IntVar(&o.maxTokens, "max-tokens", 0, fmt.Sprintf("max_tokens for lines that leave it out (default %d)", workflows.DefaultMaxTokens))
	f.DurationVar(&o.catchup, "catchup-window", defaultCatchupWindow, "how late a missed run may still start (after the server was down)")
	f.StringVar(&o.overlap, "overlap", defaultOverlap, "when a run is due while the last one runs: "+overlapNames())
	f.BoolVar(&o.paused, "paused", false, "create the schedule paused")
	f.StringVar(&o.note, "note", "", "a note on the schedule's state")
	f.BoolVar(&o.json, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("cron")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func (a *app) scheduleCreate(ctx context.Context, out io.Writer, o scheduleCreateOptions) error {
	overlap, err := overlapPolicy(o.overlap)
	if err != nil {
		return err
	}
	// Say what is wrong with a template now, not at 02:00 in a failed run.
	fields, err := uritemplate.NewFields(time.Now(), o.in.Timezone, o.name)
	if err != nil {
		return err
	}
	for flag, uri := range map[string]string{"--input": o.in.Input, "--output": o.in.Output} {
		if _, err := uritemplate.Resolve(uri, fields); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	h, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:   o.name,
		Spec: client.ScheduleSpec{CronExpressions: []string{o.cron}, TimeZoneName: o.in.Timezone},
		Action: &client.ScheduleWorkflowAction{
			// Each run's id is NAME-<scheduled time>, so a night has one run.
			ID:            o.name,
			Workflow:      workflows.WorkflowType,
			Args:          []any{o.in},
			TaskQueue:     workflows.ControlTaskQueue,
			StaticSummary: fmt.Sprintf("vbatch schedule %s · %s · %s", o.name, o.in.Input, o.in.Model),
		},
		// The server keeps a cron as calendar specs; the memo keeps it as written.
		Memo:          map[string]any{cronMemo: o.cron},
		Overlap:       overlap,
		CatchupWindow: o.catchup,
		Paused:        o.paused,
		Note:          o.note,
	})
	if errors.Is(err, sdktemporal.ErrScheduleAlreadyRunning) {
		return fmt.Errorf("schedule %q already exists: `vbatch schedule delete %s` first, or pick another name", o.name, o.name)
	}
	if err != nil {
		return fmt.Errorf("create schedule %s: %w", o.name, err)
	}
	view, err := describeSchedule(ctx, h)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(out, view)
	}
	fmt.Fprintf(out, "schedule %s created\n", o.name)
	return printSchedule(out, view)
}

// scheduleView is what describe and create print of a schedule.
type scheduleView struct {
	Schedule      string   `json:"schedule"`
	Cron          []string `json:"cron"`
	Timezone      string   `json:"timezone,omitempty"`
	Paused        bool     `json:"paused"`
	Note          string   `json:"note,omitempty"`
	Overlap       string   `json:"overlap"`
	CatchupWindow string   `json:"catchup_window"`
	// Run is the input every run starts with, its templates unresolved.
	Run            *workflows.BatchInput `json:"run,omitempty"`
	Actions        int                   `json:"actions"`
	SkippedOverlap int                   `json:"skipped_overlap"`
	MissedCatchup  int                   `json:"missed_catchup_window"`
	NextRuns       []time.Time           `json:"next_runs"`
	RecentRuns     []scheduledRun        `json:"recent_runs"`
	Running        []string              `json:"running,omitempty"`
}

// scheduledRun is a run a schedule started: Scheduled is the time it stands for.
type scheduledRun struct {
	Scheduled time.Time `json:"scheduled"`
	Started   time.Time `json:"started"`
	RunID     string    `json:"run_id"`
}

func describeSchedule(ctx context.Context, h client.ScheduleHandle) (scheduleView, error) {
	d, err := h.Describe(ctx)
	if err != nil {
		return scheduleView{}, scheduleError(h.GetID(), "describe", err)
	}
	v := scheduleView{Schedule: h.GetID(), Actions: d.Info.NumActions, SkippedOverlap: d.Info.NumActionsSkippedOverlap,
		MissedCatchup: d.Info.NumActionsMissedCatchupWindow, NextRuns: d.Info.NextActionTimes, RecentRuns: []scheduledRun{}}
	v.Cron, v.Timezone = cronOf(d.Schedule.Spec, d.Memo)
	if p := d.Schedule.Policy; p != nil {
		v.Overlap, v.CatchupWindow = overlapName(p.Overlap), p.CatchupWindow.String()
	}
	if s := d.Schedule.State; s != nil {
		v.Paused, v.Note = s.Paused, s.Note
	}
	if act, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction); ok && len(act.Args) == 1 {
		if p, ok := act.Args[0].(*commonpb.Payload); ok {
			var in workflows.BatchInput
			if err := converter.GetDefaultDataConverter().FromPayload(p, &in); err == nil {
				v.Run = &in
			}
		}
	}
	for _, r := range d.Info.RecentActions {
		if r.StartWorkflowResult != nil {
			v.RecentRuns = append(v.RecentRuns, scheduledRun{Scheduled: r.ScheduleTime, Started: r.ActualTime, RunID: r.StartWorkflowResult.WorkflowID})
		}
	}
	for _, w := range d.Info.RunningWorkflows {
		v.Running = append(v.Running, w.WorkflowID)
	}
	return v, nil
}

// cronMemo is the memo field that keeps a schedule's cron as written.
const cronMemo = "vbatch_cron"

// cronOf is a schedule's cron as created with vbatch, and its time zone.
func cronOf(spec *client.ScheduleSpec, memo *commonpb.Memo) (cron []string, timezone string) {
	if spec != nil {
		cron, timezone = spec.CronExpressions, spec.TimeZoneName
	}
	if p, ok := memo.GetFields()[cronMemo]; ok {
		var c string
		if err := converter.GetDefaultDataConverter().FromPayload(p, &c); err == nil && c != "" {
			cron = []string{c}
		}
	}
	if len(cron) == 0 {
		cron = []string{"(not created by vbatch: see its spec in the Temporal UI)"}
	}
	return cron, timezone
}

func printSchedule(out io.Writer, v scheduleView) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	state := "active"
	if v.Paused {
		state = "paused"
	}
	if v.Note != "" {
		state += " (" + v.Note + ")"
	}
	fmt.Fprintf(tw, "schedule\t%s\nstate\t%s\ncron\t%s (%s)\n", v.Schedule, state, strings.Join(v.Cron, ", "), or(v.Timezone, "UTC"))
	if v.Run != nil {
		fmt.Fprintf(tw, "input\t%s\noutput\t%s\nmodel\t%s\n", v.Run.Input, or(v.Run.Output, "(the input's folder)"), or(v.Run.Model, workflows.DefaultModel))
	}
	fmt.Fprintf(tw, "overlap\t%s\ncatch-up window\t%s\nruns started\t%d (%d skipped: overlap, %d missed: catch-up window)\n",
		v.Overlap, v.CatchupWindow, v.Actions, v.SkippedOverlap, v.MissedCatchup)
	for i, t := range v.NextRuns {
		if i == 3 {
			break
		}
		fmt.Fprintf(tw, "next\t%s\n", t.Format(time.RFC3339))
	}
	for _, r := range v.RecentRuns {
		fmt.Fprintf(tw, "run\t%s for %s (started %s)\n", r.RunID, r.Scheduled.Format(time.RFC3339), r.Started.Format(time.RFC3339))
	}
	for _, id := range v.Running {
		fmt.Fprintf(tw, "running\t%s\n", id)
	}
	return tw.Flush()
}

func or(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func (a *app) scheduleListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the schedules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd.Context(), func(c client.Client) error {
				return listSchedules(cmd.Context(), c, cmd.OutOrStdout(), asJSON)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// scheduleEntry is one line of `schedule list`.
type scheduleEntry struct {
	Schedule string     `json:"schedule"`
	Cron     []string   `json:"cron"`
	Timezone string     `json:"timezone,omitempty"`
	Paused   bool       `json:"paused"`
	Note     string     `json:"note,omitempty"`
	NextRun  *time.Time `json:"next_run,omitempty"`
	LastRun  string     `json:"last_run,omitempty"`
}

func listSchedules(ctx context.Context, c client.Client, out io.Writer, asJSON bool) error {
	it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return fmt.Errorf("list schedules: %w", err)
	}
	entries := []scheduleEntry{}
	for it.HasNext() {
		s, err := it.Next()
		if err != nil {
			return fmt.Errorf("list schedules: %w", err)
		}
		e := scheduleEntry{Schedule: s.ID, Paused: s.Paused, Note: s.Note}
		e.Cron, e.Timezone = cronOf(s.Spec, s.Memo)
		if len(s.NextActionTimes) > 0 {
			e.NextRun = &s.NextActionTimes[0]
		}
		if n := len(s.RecentActions); n > 0 && s.RecentActions[n-1].StartWorkflowResult != nil {
			e.LastRun = s.RecentActions[n-1].StartWorkflowResult.WorkflowID
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(x, y scheduleEntry) int { return strings.Compare(x.Schedule, y.Schedule) })
	if asJSON {
		return writeJSON(out, entries)
	}
	if len(entries) == 0 {
		_, err := fmt.Fprintln(out, "no schedules; create one with: vbatch schedule create NAME --cron '0 2 * * *' --input …")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULE\tSTATE\tCRON\tNEXT\tLAST RUN")
	for _, e := range entries {
		state := "active"
		if e.Paused {
			state = "paused"
		}
		next := "-"
		if e.NextRun != nil {
			next = e.NextRun.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s (%s)\t%s\t%s\n", e.Schedule, state, strings.Join(e.Cron, ", "), or(e.Timezone, "UTC"), next, or(e.LastRun, "-"))
	}
	return tw.Flush()
}

func (a *app) scheduleDescribeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a schedule: its cron, its run's input, its next and recent runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c client.Client) error {
				v, err := describeSchedule(cmd.Context(), c.ScheduleClient().GetHandle(cmd.Context(), args[0]))
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), v)
				}
				return printSchedule(cmd.OutOrStdout(), v)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) schedulePauseCmd() *cobra.Command {
	var note string
	cmd := &cobra.Command{
		Use:   "pause NAME",
		Short: "Pause a schedule: no run starts until it is unpaused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.onSchedule(cmd, args[0], "pause", func(ctx context.Context, h client.ScheduleHandle) error {
				return h.Pause(ctx, client.SchedulePauseOptions{Note: or(note, "paused with vbatch")})
			}, "schedule %[1]s paused; `vbatch schedule unpause %[1]s` resumes it\n")
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "why it is paused (shown by describe and the Temporal UI)")
	return cmd
}

func (a *app) scheduleUnpauseCmd() *cobra.Command {
	var note string
	cmd := &cobra.Command{
		Use:   "unpause NAME",
		Short: "Unpause a schedule; the runs missed while paused are not started",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.onSchedule(cmd, args[0], "unpause", func(ctx context.Context, h client.ScheduleHandle) error {
				return h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: or(note, "unpaused with vbatch")})
			}, "schedule %[1]s unpaused; missed nights can be run with `vbatch schedule backfill %[1]s --from … --to …`\n")
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "a note (shown by describe and the Temporal UI)")
	return cmd
}

func (a *app) scheduleTriggerCmd() *cobra.Command {
	var overlap string
	cmd := &cobra.Command{
		Use:   "trigger NAME",
		Short: "Start a schedule's run now; its templates resolve from now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var policy enumspb.ScheduleOverlapPolicy // unspecified: the schedule's own
			if overlap != "" {
				var err error
				if policy, err = overlapPolicy(overlap); err != nil {
					return err
				}
			}
			return a.onSchedule(cmd, args[0], "trigger", func(ctx context.Context, h client.ScheduleHandle) error {
				return h.Trigger(ctx, client.ScheduleTriggerOptions{Overlap: policy})
			}, "schedule %[1]s triggered: a run starts now (unless the overlap policy skips it); `vbatch schedule describe %[1]s` lists it\n")
		},
	}
	cmd.Flags().StringVar(&overlap, "overlap", "", "overlap policy of this run (default: the schedule's): "+overlapNames())
	return cmd
}

func (a *app) scheduleBackfillCmd() *cobra.Command {
	var from, to, overlap string
	cmd := &cobra.Command{
		Use:   "backfill NAME --from 2026-11-01 --to 2026-11-03",
		Short: "Run the schedule for past times: every time its cron names from --from to --to",
		Long: `Starts the runs that the schedule's cron names between --from and --to, each resolving
its templates from its own scheduled time, so each scores its own date. A date is the
whole day in the schedule's time zone; a time is RFC 3339 (2026-11-01T02:00:00Z). The
runs start one after another (--overlap buffer_all), also while the schedule is paused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			policy, err := overlapPolicy(overlap)
			if err != nil {
				return err
			}
			return a.withClient(cmd.Context(), func(c client.Client) error {
				return backfillSchedule(cmd.Context(), c, cmd.OutOrStdout(), args[0], from, to, policy)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "first date (YYYY-MM-DD) or time (RFC 3339) (required)")
	f.StringVar(&to, "to", "", "last date (YYYY-MM-DD, included) or time (RFC 3339) (required)")
	f.StringVar(&overlap, "overlap", defaultBackfillOverlap, "overlap policy of the backfilled runs: "+overlapNames())
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func backfillSchedule(ctx context.Context, c client.Client, out io.Writer, name, from, to string, policy enumspb.ScheduleOverlapPolicy) error {
	h := c.ScheduleClient().GetHandle(ctx, name)
	d, err := h.Describe(ctx)
	if err != nil {
		return scheduleError(name, "describe", err)
	}
	tz := ""
	if d.Schedule.Spec != nil {
		tz = d.Schedule.Spec.TimeZoneName
	}
	loc, err := uritemplate.Location(tz)
	if err != nil {
		return err
	}
	start, err := parseWhen(from, loc, false)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	end, err := parseWhen(to, loc, true)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if !end.After(start) {
		return fmt.Errorf("--to %s is not after --from %s", to, from)
	}
	if err := h.Backfill(ctx, client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{Start: start, End: end, Overlap: policy}}}); err != nil {
		return scheduleError(name, "backfill", err)
	}
	_, err = fmt.Fprintf(out, "schedule %s: runs for its times from %s to %s requested (overlap %s); `vbatch schedule describe %s` lists them\n",
		name, start.Format(time.RFC3339), end.Format(time.RFC3339), overlapName(policy), name)
	return err
}

// parseWhen reads an RFC 3339 time, or a date in loc: the start of that day, or
// with endOfDay its last second. A backfill finds the cron's times after its
// start, so a date's start is one second before its midnight.
func parseWhen(s string, loc *time.Location, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	day, err := time.ParseInLocation(time.DateOnly, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T02:00:00Z)", s)
	}
	if endOfDay {
		return day.AddDate(0, 0, 1).Add(-time.Second), nil
	}
	return day.Add(-time.Second), nil
}

func (a *app) scheduleDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a schedule; the runs it started are kept",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.onSchedule(cmd, args[0], "delete", func(ctx context.Context, h client.ScheduleHandle) error {
				return h.Delete(ctx)
			}, "schedule %[1]s deleted; the runs it started and their folders are kept\n")
		},
	}
}

// onSchedule runs do on schedule name and prints done, a format of the name (%[1]s).
func (a *app) onSchedule(cmd *cobra.Command, name, op string, do func(context.Context, client.ScheduleHandle) error, done string) error {
	return a.withClient(cmd.Context(), func(c client.Client) error {
		if err := do(cmd.Context(), c.ScheduleClient().GetHandle(cmd.Context(), name)); err != nil {
			return scheduleError(name, op, err)
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), done, name)
		return err
	})
}

func (a *app) withClient(ctx context.Context, fn func(client.Client) error) error {
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func scheduleError(name, op string, err error) error {
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return fmt.Errorf("no schedule %q (`vbatch schedule list` shows them)", name)
	}
	return fmt.Errorf("%s schedule %s: %w", op, name, err)
}

const overlapPrefix = "SCHEDULE_OVERLAP_POLICY_"

// overlapPolicy reads an overlap policy's short name: skip, buffer_one, buffer_all,
// cancel_other, terminate_other, allow_all.
func overlapPolicy(name string) (enumspb.ScheduleOverlapPolicy, error) {
	v, ok := enumspb.ScheduleOverlapPolicy_value[overlapPrefix+strings.ToUpper(name)]
	if !ok || v == int32(enumspb.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED) {
		return 0, fmt.Errorf("overlap policy %q is none of %s", name, overlapNames())
	}
	return enumspb.ScheduleOverlapPolicy(v), nil
}

func overlapName(p enumspb.ScheduleOverlapPolicy) string {
	if p == enumspb.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED {
		return defaultOverlap
	}
	// The enum's String() is CamelCase ("BufferAll"); its proto name is not.
	return strings.ToLower(strings.TrimPrefix(enumspb.ScheduleOverlapPolicy_name[int32(p)], overlapPrefix))
}

func overlapNames() string {
	var names []string
	for v := range enumspb.ScheduleOverlapPolicy_name {
		if p := enumspb.ScheduleOverlapPolicy(v); p != enumspb.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED {
			names = append(names, overlapName(p))
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
