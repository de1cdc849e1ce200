package workflows

import (
	"context"
	"errors"
	"sync"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/run"
)

// TestContinueAsNewCarriesTheRun runs 7 chunks with continue-as-new after 3: the
// first execution ends 3 chunks, lets the one still running finish (two in flight),
// and hands the other 3 to the second, which finishes the run. The chunk that failed
// in the first execution is still listed by the second one's Merge, the counts carry
// over, and every chunk is generated exactly once.
func (s *batchSuite) TestContinueAsNewCarriesTheRun() {
	full := plan(7, 10)
	var mu sync.Mutex
	generated := map[int]int{}
	in := BatchInput{Input: "s3://b/in/requests.jsonl", ContinueAsNewEvery: 3, MaxInFlightChunks: 2, MaxAttempts: 1}
	var mergeIn activities.MergeInput
	var res BatchResult
	executions := 0
	for ; ; executions++ {
		s.Require().Less(executions, 2, "the run continues as new once")
		s.SetupTest()
		var control *activities.Control
		var gpu *activities.GPU
		s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(full, nil)
		s.env.OnActivity(control.LoadChunks, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.LoadChunksInput) ([]run.ChunkPlan, error) {
				var chunks []run.ChunkPlan
				for _, r := range in.Chunks {
					chunks = append(chunks, full.Chunks[r.First:r.Last+1]...)
				}
				return chunks, nil
			})
		s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
				mu.Lock()
				generated[in.Chunk.Index]++
				mu.Unlock()
				if in.Chunk.Index == 1 {
					return activities.GenerateResult{}, temporal.NewApplicationError("engine on fire", "EngineError")
				}
				return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10, PromptTokens: 100, CompletionTokens: 50, Simulated: true}, nil
			})
		s.mockMergeAndReport(&mergeIn)
		s.env.SetStartWorkflowOptions(testWorkflowOptions("big-run"))
		s.env.ExecuteWorkflow(BatchInference, in)
		s.Require().True(s.env.IsWorkflowCompleted())
		err := s.env.GetWorkflowError()
		var cont *workflow.ContinueAsNewError
		if !errors.As(err, &cont) {
			s.Require().NoError(err)
			s.Require().NoError(s.env.GetWorkflowResult(&res))
			break
		}
		var next BatchInput
		s.Require().NoError(converter.GetDefaultDataConverter().FromPayloads(cont.Input, &next))
		s.Require().NotNil(next.Continuation)
		s.Equal(executions+1, next.Continuation.Executions)
		s.Equal([]run.IndexRange{{First: 4, Last: 6}}, next.Continuation.Pending)
		s.Equal("s3://b/in/big-run", next.Continuation.Run.Prefix, "the run keeps its folder")
		in = next
	}
	s.Equal(1, executions)
	s.Equal(map[int]int{0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}, generated, "every chunk generated once over all executions")
	s.Equal([]activities.ChunkFailure{{Index: 1, Reason: "engine on fire"}}, mergeIn.Failed)
	s.Empty(mergeIn.Cancelled)
	s.Equal(StatusCompletedWithFailures, res.Status)
	s.Equal(7, res.Chunks)
	s.Equal(70, res.Requests)
	s.True(res.Simulated, "the simulated flag survives continue-as-new")
	s.Equal([]FailedChunk{{Index: 1, Reason: "engine on fire"}}, res.FailedChunks)

	val, err := s.env.QueryWorkflow(ProgressQuery)
	s.Require().NoError(err)
	var p Progress
	s.Require().NoError(val.Get(&p))
	s.Equal(6, p.ChunksDone, "progress counts every execution's chunks")
	s.Equal(1, p.ChunksFailed)
	s.Equal(7, p.ChunksTotal)
}
