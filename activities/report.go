package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
)

// Report measures the run from its folder and writes report.json; it returns the
// report's URI.
func (c *Control) Report(ctx context.Context, in ReportInput) (string, error) {
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, c.Store, in.Run.Manifest(), &manifest); err != nil {
		return "", fmt.Errorf("read manifest: %w", err)
	}
	var attempts []run.AttemptResult
	for _, chunk := range manifest.Chunks {
		objects, err := c.Store.List(ctx, in.Run.ChunkDir(chunk.Index))
		if err != nil {
			return "", fmt.Errorf("list chunk %d: %w", chunk.Index, err)
		}
		for _, o := range objects {
			if !run.IsAttemptResult(o.URI) {
				continue
			}
			var a run.AttemptResult
			if err := blob.ReadJSON(ctx, c.Store, o.URI, &a); err != nil {
				return "", fmt.Errorf("read %s: %w", o.URI, err)
			}
			attempts = append(attempts, a)
		}
	}
	rep := report.Build(report.Inputs{
		RunID: in.Run.RunID, Status: in.Status, Input: in.Input, Model: in.Model, Labels: in.Labels,
		Lines: in.Plan.Lines, Valid: in.Plan.Valid, Answered: in.Merge.Answered, Errors: in.Merge.Errors,
		ErrorsByCode: in.Merge.ErrorsByCode, FailedChunks: len(in.FailedChunks), Chunks: in.Plan.Chunks,
		PromptTokens: in.Merge.PromptTokens, CompletionTokens: in.Merge.CompletionTokens,
		Started: in.Started, Generation: in.GenerationStarted, MergeStarted: in.MergeStarted, Finished: time.Now(),
		Attempts: attempts, Output: in.Merge.Output, ErrorsURI: in.Merge.ErrorsURI, Manifest: in.Run.Manifest(),
		OutputBytes: in.Merge.OutputBytes, ErrorsBytes: in.Merge.ErrorsBytes,
	})
	if err := blob.WriteJSON(ctx, c.Store, in.Run.ReportJSON(), rep); err != nil {
		return "", fmt.Errorf("write report: %w", err)
	}
	return in.Run.ReportJSON(), nil
}
