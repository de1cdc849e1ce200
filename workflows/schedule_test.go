package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/activities"
)

// A scheduled run resolves its templated input and output from the time its
// schedule meant it to start, in its own time zone; a run without a schedule from
// its own start.
func TestTemplatesResolveFromTheScheduledTime(t *testing.T) {
	const (
		input  = "s3://b/candidates/{{.Date}}/requests.jsonl"
		output = "s3://b/scores/{{.Date}}/"
	)
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	cases := []struct {
		name      string
		in        BatchInput
		started   time.Time
		scheduled time.Time // zero: not started by a schedule
		wantInput string
		wantRun   string // the run's folder
	}{{
		name:      "on time",
		in:        BatchInput{Input: input, Output: output},
		started:   at("2026-11-27T02:00:03Z"),
		scheduled: at("2026-11-27T02:00:00Z"),
		wantInput: "s3://b/candidates/2026-11-27/requests.jsonl",
		wantRun:   "s3://b/scores/2026-11-27/nightly-2026-11-27T02-00-00Z",
	}, {
		name:      "caught up a week late scores its own night",
		in:        BatchInput{Input: input, Output: output},
		started:   at("2026-11-27T09:41:00Z"),
		scheduled: at("2026-11-20T02:00:00Z"),
		wantInput: "s3://b/candidates/2026-11-20/requests.jsonl",
		wantRun:   "s3://b/scores/2026-11-20/nightly-2026-11-27T02-00-00Z",
	}, {
		name:      "23:30 UTC is the next day in Berlin",
		in:        BatchInput{Input: input, Output: output, Timezone: "Europe/Berlin"},
		started:   at("2026-11-26T23:30:01Z"),
		scheduled: at("2026-11-26T23:30:00Z"),
		wantInput: "s3://b/candidates/2026-11-27/requests.jsonl",
		wantRun:   "s3://b/scores/2026-11-27/nightly-2026-11-27T02-00-00Z",
	}, {
		name:      "23:30 UTC is still that day in UTC",
		in:        BatchInput{Input: input, Output: output},
		started:   at("2026-11-26T23:30:01Z"),
		scheduled: at("2026-11-26T23:30:00Z"),
		wantInput: "s3://b/candidates/2026-11-26/requests.jsonl",
		wantRun:   "s3://b/scores/2026-11-26/nightly-2026-11-27T02-00-00Z",
	}, {
		name:      "Time and Schedule fields",
		in:        BatchInput{Input: `s3://b/{{.Schedule}}/{{.Time.Format "2006/01/02"}}/in.jsonl`, Timezone: "America/New_York"},
		started:   at("2026-11-27T03:00:00Z"),
		scheduled: at("2026-11-27T03:00:00Z"),
		wantInput: "s3://b/nightly/2026/11/26/in.jsonl",
		wantRun:   "s3://b/nightly/2026/11/26/nightly-2026-11-27T02-00-00Z",
	}, {
		name:      "no schedule: the run's own start",
		in:        BatchInput{Input: input, Output: output},
		started:   at("2026-11-25T23:59:00Z"),
		wantInput: "s3://b/candidates/2026-11-25/requests.jsonl",
		wantRun:   "s3://b/scores/2026-11-25/nightly-2026-11-27T02-00-00Z",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterActivity(&activities.Control{})
			env.RegisterActivity(&activities.GPU{})
			env.SetStartTime(tc.started)
			if !tc.scheduled.IsZero() {
				require.NoError(t, env.SetTypedSearchAttributesOnStart(temporal.NewSearchAttributes(
					scheduledStartTime.ValueSet(tc.scheduled), scheduledByID.ValueSet("nightly"))))
			}
			var control *activities.Control
			var planIn activities.PlanInput
			var reportIn activities.ReportInput
			env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(
				func(_ context.Context, in activities.PlanInput) (activities.PlanResult, error) {
					planIn = in
					return activities.PlanResult{}, nil
				})
			env.OnActivity(control.Merge, mock.Anything, mock.Anything).Return(activities.MergeResult{}, nil)
			env.OnActivity(control.Report, mock.Anything, mock.Anything).Return(
				func(_ context.Context, in activities.ReportInput) (string, error) {
					reportIn = in
					return in.Run.ReportJSON(), nil
				})
			env.SetStartWorkflowOptions(testWorkflowOptions("nightly-2026-11-27T02:00:00Z"))
			env.ExecuteWorkflow(BatchInference, tc.in)
			require.True(t, env.IsWorkflowCompleted())
			require.NoError(t, env.GetWorkflowError())

			require.Equal(t, tc.wantInput, planIn.Input)
			require.Equal(t, tc.wantRun, planIn.Run.Prefix)
			require.Equal(t, tc.wantInput, reportIn.Input, "the report names the file the run read")
			require.True(t, reportIn.Scheduled.Equal(tc.scheduled), "the report is placed in its series by the night it stands for")
			if tc.scheduled.IsZero() {
				require.Empty(t, reportIn.Labels["schedule"])
			} else {
				require.Equal(t, "nightly", reportIn.Labels["schedule"], "a scheduled run is in its schedule's series")
			}
			if tc.in.Output == output {
				require.Equal(t, "s3://b/scores", reportIn.SeriesPrefix, "every night must find the series index of the night before")
			}
		})
	}
}

// A template the workflow cannot resolve fails the run at once, without
// retries, saying what is wrong; nothing is planned.
func TestBadTemplateFailsTheRunClearly(t *testing.T) {
	cases := []struct {
		name string
		in   BatchInput
		want string
	}{
		{"unknown field", BatchInput{Input: "s3://b/{{.Day}}/in.jsonl"}, "can't evaluate field Day"},
		{"unclosed action", BatchInput{Input: "s3://b/in.jsonl", Output: "s3://b/{{.Date/"}, "output: template"},
		{"unknown zone", BatchInput{Input: "s3://b/{{.Date}}/in.jsonl", Timezone: "Mars/Olympus"}, `timezone "Mars/Olympus"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterActivity(&activities.Control{})
			var control *activities.Control
			planned := false
			env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(
				func(context.Context, activities.PlanInput) (activities.PlanResult, error) {
					planned = true
					return activities.PlanResult{}, nil
				}).Maybe()
			env.ExecuteWorkflow(BatchInference, tc.in)
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			var appErr *temporal.ApplicationError
			require.True(t, errors.As(err, &appErr), "want an application error, got %v", err)
			require.Equal(t, ErrTypeBadInput, appErr.Type())
			require.True(t, appErr.NonRetryable())
			require.Contains(t, appErr.Message(), tc.want)
			require.False(t, planned, "a run whose template cannot resolve must plan nothing")
		})
	}
}
