package activities

import (
	"context"
	"fmt"
	"maps"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/vbatch/vbatch/internal/report"
)

// Report measures the run from its folder (the manifest, every chunk attempt,
// output.jsonl with the chunks, errors.jsonl) and publishes report.json,
// report.md, report.html and the charts there; it returns report.json's URI.
func (c *Control) Report(ctx context.Context, in ReportInput) (string, error) {
	labels := in.Labels
	if in.RetryOf != "" {
		labels = maps.Clone(labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels["retry_of"] = in.RetryOf
	}
	rep, err := report.Measure(ctx, c.Store, in.Run, report.Inputs{
		RunID: in.Run.RunID, Status: in.Status, Input: in.Input, Model: in.Model, Labels: labels, SeriesPrefix: in.SeriesPrefix, Scheduled: in.Scheduled,
		Lines: in.Plan.Lines, Valid: in.Plan.Valid, FailedChunks: len(in.FailedChunks),
		Started: in.Started, Generation: in.GenerationStarted, MergeStarted: in.MergeStarted, Finished: time.Now(),
		Cache:     in.Merge.Cache,
		Heartbeat: func() { activity.RecordHeartbeat(ctx) },
	})
	if err != nil {
		return "", fmt.Errorf("measure the run: %w", err)
	}
	if _, err := report.Publish(ctx, c.Store, in.Run, rep); err != nil {
		return "", fmt.Errorf("publish the report: %w", err)
	}
	return in.Run.ReportJSON(), nil
}
