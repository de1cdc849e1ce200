package workflows

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/run"
)

type batchSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env *testsuite.TestWorkflowEnvironment
}

func TestBatchInference(t *testing.T) { suite.Run(t, new(batchSuite)) }

func (s *batchSuite) SetupTest() {
	s.env = s.NewTestWorkflowEnvironment()
	s.env.RegisterActivity(&activities.Control{})
	s.env.RegisterActivity(&activities.GPU{})
}

// plan returns a PlanResult of n chunks of size requests each.
func plan(n, size int) activities.PlanResult {
	p := activities.PlanResult{Lines: n * size, Valid: n * size}
	for i := range n {
		p.Chunks = append(p.Chunks, run.ChunkPlan{Index: i, Requests: size, FirstLine: i*size + 1, LastLine: (i + 1) * size})
	}
	return p
}

func (s *batchSuite) mockMergeAndReport(capture *activities.MergeInput) {
	var control *activities.Control
	s.env.OnActivity(control.Merge, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.MergeInput) (activities.MergeResult, error) {
			*capture = in
			return activities.MergeResult{Output: in.Run.Output(), ErrorsURI: in.Run.Errors(), Answered: 30}, nil
		})
	s.env.OnActivity(control.Report, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.ReportInput) (string, error) { return in.Run.ReportJSON(), nil })
}

func (s *batchSuite) TestInputAloneGetsEveryDefault() {
	var control *activities.Control
	var gpu *activities.GPU
	var planIn activities.PlanInput
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.PlanInput) (activities.PlanResult, error) {
			planIn = in
			return plan(3, 10), nil
		})
	var queues sync.Map
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			queues.Store(activity.GetInfo(ctx).TaskQueue, true)
			return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10, PromptTokens: 100, CompletionTokens: 50}, nil
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)

	s.env.SetStartWorkflowOptions(testWorkflowOptions("nightly/2026-11-27"))
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/in/requests.jsonl"})
	s.Require().True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var res BatchResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))

	s.Equal(DefaultModel, planIn.Model)
	s.Equal(DefaultChunkSize, planIn.ChunkSize)
	s.Equal(DefaultMaxLineBytes, planIn.MaxLineBytes)
	s.Equal(DefaultTemperature, *planIn.Sampling.Temperature)
	s.Equal(DefaultTopP, *planIn.Sampling.TopP)
	s.Equal(DefaultMaxTokens, *planIn.Sampling.MaxTokens)
	s.Equal("s3://b/in/nightly-2026-11-27", planIn.Run.Prefix, "the run's folder sits beside the input, named by the workflow id")
	_, onGPUQueue := queues.Load(GPUTaskQueue(DefaultModel))
	s.True(onGPUQueue, "chunks run on the model's GPU task queue")
	s.Equal(StatusCompleted, res.Status)
	s.Equal(3, res.Chunks)
	s.Empty(mergeIn.Failed)
	s.Empty(mergeIn.Cancelled)
	s.Equal("s3://b/in/nightly-2026-11-27/report.json", res.Report)

	val, err := s.env.QueryWorkflow(ProgressQuery)
	s.Require().NoError(err)
	var p Progress
	s.Require().NoError(val.Get(&p))
	s.Equal(PhaseDone, p.Phase)
	s.Equal(3, p.ChunksDone)
	s.Equal(30, p.RequestsDone)
	s.Equal(int64(450), p.Tokens)
}

func (s *batchSuite) TestWindowBoundsChunksInFlight() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(plan(20, 5), nil)
	var inFlight, peak atomic.Int32
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			n := inFlight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			inFlight.Add(-1)
			return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 5}, nil
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/x.jsonl", MaxInFlightChunks: 3})
	s.Require().NoError(s.env.GetWorkflowError())
	s.LessOrEqual(peak.Load(), int32(3))
	s.GreaterOrEqual(peak.Load(), int32(2), "the window keeps more than one chunk in flight")
}

func (s *batchSuite) TestChunkFailingEveryAttemptIsRecordedAndOthersFinish() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(plan(4, 10), nil)
	var attempts atomic.Int32
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			if in.Chunk.Index == 2 {
				attempts.Add(1)
				return activities.GenerateResult{}, errors.New("CUDA out of memory")
			}
			return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10}, nil
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/x.jsonl", MaxAttempts: 3})
	s.Require().NoError(s.env.GetWorkflowError())
	var res BatchResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(StatusCompletedWithFailures, res.Status)
	s.Equal(int32(3), attempts.Load(), "max_attempts bounds the attempts")
	s.Require().Len(mergeIn.Failed, 1)
	s.Equal(2, mergeIn.Failed[0].Index)
	s.Contains(mergeIn.Failed[0].Reason, "CUDA out of memory")
	s.Require().Len(res.FailedChunks, 1)
}

func (s *batchSuite) TestMissingInputFailsWithoutRetry() {
	s.env.ExecuteWorkflow(BatchInference, BatchInput{})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Contains(err.Error(), `"input" is required`)
}

func (s *batchSuite) TestPlanConfigErrorEndsTheRun() {
	var control *activities.Control
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(activities.PlanResult{},
		temporal.NewNonRetryableApplicationError("input s3://b/none.jsonl does not exist", activities.ErrTypeConfig, nil))
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/none.jsonl"})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Contains(err.Error(), "does not exist")
}

func (s *batchSuite) TestCancelMergesWhatFinished() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(plan(6, 10), nil)
	var finished atomic.Int32
	var cancelOnce sync.Once
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			if in.Chunk.Index < 2 {
				finished.Add(1)
				return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10}, nil
			}
			for finished.Load() < 2 {
				time.Sleep(time.Millisecond)
			}
			cancelOnce.Do(func() { s.env.CancelWorkflow() })
			<-ctx.Done()
			return activities.GenerateResult{}, ctx.Err()
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/x.jsonl", MaxInFlightChunks: 4})
	s.Require().NoError(s.env.GetWorkflowError())
	var res BatchResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(StatusCancelled, res.Status)
	s.ElementsMatch([]int{2, 3, 4, 5}, mergeIn.Cancelled, "chunks running or never started are listed as cancelled")
}

func TestGPUTaskQueueNamesAreSafe(t *testing.T) {
	require.Equal(t, "vbatch-gpu-google-gemma-3-4b-it", GPUTaskQueue("google/gemma-3-4b-it"))
	require.Equal(t, "vbatch-gpu-meta-llama-llama-3.1-8b", GPUTaskQueue("meta-llama/Llama-3.1-8B"))
}
