package activities

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// A retry finds the chunks with unanswered requests (and, when asked, engine
// errors) from the folder alone, and the attempt numbers they reached.
func TestPlanRetryListsUnfinishedChunksFromTheFolder(t *testing.T) {
	f := newChunk(t, 2) // chunk 3 of run1: r01, r02
	ctx := context.Background()
	manifest := run.Manifest{Input: "file:///in/requests.jsonl", Model: "m", Lines: 8, Valid: 8, PlannedAt: time.Now(),
		Chunks: []run.ChunkPlan{{Index: 0, Requests: 2}, {Index: 1, Requests: 2}, {Index: 2, Requests: 2}, {Index: 3, Requests: 2}}}
	require.NoError(t, blob.WriteJSON(ctx, f.store, f.layout.Manifest(), manifest))
	ok := `{"custom_id":"%s","text":"x"}` + "\n"
	// Chunk 0: complete. Chunk 1: one answer after 4 attempts. Chunk 2: complete but one
	// engine error. Chunk 3: nothing, its only attempt failed.
	f.put(t, f.layout.Part(0, 1, 1), fmt.Sprintf(ok, "a")+fmt.Sprintf(ok, "b"))
	f.put(t, f.layout.Part(1, 4, 1), fmt.Sprintf(ok, "c"))
	f.put(t, f.layout.Part(2, 1, 1), fmt.Sprintf(ok, "e")+`{"custom_id":"f","error":{"code":"engine_error","message":"x"}}`+"\n")
	require.NoError(t, blob.WriteJSON(ctx, f.store, f.layout.AttemptResult(3, 1), run.AttemptResult{Outcome: "failed"}))

	c := &Control{Store: f.store}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(c)
	plan := func(in RetryInput) RetryPlan {
		val, err := env.ExecuteActivity(c.PlanRetry, in)
		require.NoError(t, err)
		var p RetryPlan
		require.NoError(t, val.Get(&p))
		return p
	}
	// The folder is <output>/<run id>; the fixture's output is the layout's parent.
	output := f.layout.Prefix[:len(f.layout.Prefix)-len("/run1")]
	p := plan(RetryInput{RetryOf: "run1", Input: "file:///elsewhere/requests.jsonl", Output: output})
	assert.Equal(t, f.layout, p.Run)
	assert.Equal(t, "m", p.Model)
	assert.Equal(t, 8, p.Plan.Lines)
	assert.Len(t, p.Plan.Chunks, 4)
	assert.Equal(t, []RetryChunk{{Index: 1, AttemptBase: 4, Missing: 1}, {Index: 3, AttemptBase: 1, Missing: 2}}, p.Redo)

	p = plan(RetryInput{RetryOf: "run1", Input: "file:///elsewhere/requests.jsonl", Output: output, RetryEngineErrors: true})
	assert.Equal(t, []RetryChunk{{Index: 1, AttemptBase: 4, Missing: 1}, {Index: 2, AttemptBase: 1, EngineErrors: 1}, {Index: 3, AttemptBase: 1, Missing: 2}}, p.Redo)
}

func TestPlanRetryOfARunWithoutPlanSaysSo(t *testing.T) {
	f := newChunk(t, 1)
	c := &Control{Store: f.store}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(c)
	output := f.layout.Prefix[:len(f.layout.Prefix)-len("/run1")]
	_, err := env.ExecuteActivity(c.PlanRetry, RetryInput{RetryOf: "other", Input: "file:///x.jsonl", Output: output})
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, err.Error(), "run other has no plan")

	_, err = env.ExecuteActivity(c.PlanRetry, RetryInput{RetryOf: "other"})
	require.ErrorAs(t, err, &appErr)
	assert.Contains(t, err.Error(), "pass the run's input with retry_of")
	assert.True(t, appErr.NonRetryable())
}
