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
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/report"
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
	// Finished counts the results the workflow has been handed, not the activities
	// that returned: the cancel must come after the workflow saw chunks 0 and 1 end.
	var finished atomic.Int32
	s.env.SetOnActivityCompletedListener(func(info *activity.Info, _ converter.EncodedValue, err error) {
		if info.ActivityType.Name == "GenerateChunk" && err == nil {
			finished.Add(1)
		}
	})
	var cancelOnce sync.Once
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			if in.Chunk.Index < 2 {
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
	// The run ends as Temporal's Canceled, with its result as the details.
	err := s.env.GetWorkflowError()
	var canceled *temporal.CanceledError
	s.Require().ErrorAs(err, &canceled)
	var res BatchResult
	s.Require().NoError(canceled.Details(&res))
	s.Equal(StatusCancelled, res.Status)
	s.Equal(30, res.Answered)
	s.Equal("s3://b/default-test-workflow-id/report.json", res.Report, "a cancelled run is still reported")
	s.ElementsMatch([]int{2, 3, 4, 5}, mergeIn.Cancelled, "chunks running or never started are listed as cancelled")
}

// retryPlan is PlanRetry's answer for a run "nightly" of 5 chunks of 10 requests
// whose chunks 1 and 3 are unfinished.
func retryPlan() activities.RetryPlan {
	return activities.RetryPlan{
		Run:   run.NewLayout("s3://b/in", "nightly"),
		Input: "s3://b/in/requests.jsonl",
		Model: "org/model-7b",
		Plan:  plan(5, 10),
		Redo:  []activities.RetryChunk{{Index: 1, AttemptBase: 5, Missing: 10}, {Index: 3, AttemptBase: 2, Missing: 4}},
	}
}

func (s *batchSuite) TestRetryOfRedoesOnlyTheUnfinishedChunksInTheEarlierRunsFolder() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.PlanInput) (activities.PlanResult, error) {
			s.Fail("a retry must not plan the input again")
			return activities.PlanResult{}, nil
		}).Maybe()
	var retryIn activities.RetryInput
	s.env.OnActivity(control.PlanRetry, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.RetryInput) (activities.RetryPlan, error) {
			retryIn = in
			return retryPlan(), nil
		})
	var mu sync.Mutex
	generated := map[int]activities.GenerateInput{}
	var queues sync.Map
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			queues.Store(activity.GetInfo(ctx).TaskQueue, true)
			mu.Lock()
			generated[in.Chunk.Index] = in
			mu.Unlock()
			return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10}, nil
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)

	s.env.SetStartWorkflowOptions(testWorkflowOptions("nightly-retry"))
	s.env.ExecuteWorkflow(BatchInference, BatchInput{RetryOf: "nightly", RetryEngineErrors: true})
	s.Require().NoError(s.env.GetWorkflowError(), "retry_of alone is a complete input")
	var res BatchResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))

	s.Equal(activities.RetryInput{RetryOf: "nightly", RetryEngineErrors: true}, retryIn)
	s.Require().Len(generated, 2, "only the unfinished chunks run again")
	s.Equal(5, generated[1].AttemptBase, "attempts continue after the earlier run's")
	s.Equal(2, generated[3].AttemptBase)
	s.True(generated[1].RetryEngineErrors)
	s.Equal("s3://b/in/nightly", generated[1].Run.Prefix, "the retry works in the earlier run's folder")
	s.Equal("org/model-7b", generated[3].Model, "with the earlier run's model")
	_, onQueue := queues.Load(GPUTaskQueue("org/model-7b"))
	s.True(onQueue, "on the earlier run's model's GPU queue")

	s.Equal("s3://b/in/nightly", mergeIn.Run.Prefix, "the whole earlier run is merged again")
	s.Empty(mergeIn.Failed)
	s.Empty(mergeIn.Cancelled, "chunks the retry did not redo are not cancelled")
	s.Equal(StatusCompleted, res.Status)
	s.Equal("nightly", res.RetryOf)
	s.Equal(2, res.RetriedChunks)
	s.Equal(5, res.Chunks)
	s.Equal(50, res.Requests)
	s.Equal("s3://b/in/nightly/output.jsonl", res.Output)
}

func (s *batchSuite) TestRetryWhoseChunkFailsAgainEndsWithFailures() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.PlanRetry, mock.Anything, mock.Anything).Return(retryPlan(), nil)
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			if in.Chunk.Index == 3 {
				return activities.GenerateResult{}, errors.New("engine slot 0 died")
			}
			return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10}, nil
		})
	var mergeIn activities.MergeInput
	s.mockMergeAndReport(&mergeIn)
	s.env.ExecuteWorkflow(BatchInference, BatchInput{RetryOf: "nightly", MaxAttempts: 2})
	s.Require().NoError(s.env.GetWorkflowError())
	var res BatchResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(StatusCompletedWithFailures, res.Status)
	s.Require().Len(mergeIn.Failed, 1)
	s.Equal(3, mergeIn.Failed[0].Index)
	s.Equal("engine slot 0 died", mergeIn.Failed[0].Reason, "the reason is the chunk's own error, without the activity envelope")
}

func (s *batchSuite) TestRetryOfAnUnknownRunFailsWithItsReason() {
	var control *activities.Control
	s.env.OnActivity(control.PlanRetry, mock.Anything, mock.Anything).Return(activities.RetryPlan{},
		temporal.NewNonRetryableApplicationError(`no run "nope" in Temporal`, activities.ErrTypeConfig, nil))
	s.env.ExecuteWorkflow(BatchInference, BatchInput{RetryOf: "nope"})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Contains(err.Error(), `no run "nope" in Temporal`)
}

func (s *batchSuite) TestChunkConfigErrorEndsTheRunWithoutRetrying() {
	var control *activities.Control
	var gpu *activities.GPU
	s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(plan(10, 10), nil)
	var calls atomic.Int32
	s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
			calls.Add(1)
			return activities.GenerateResult{}, temporal.NewNonRetryableApplicationError(
				`worker w1 serves model "a", not "A"`, activities.ErrTypeConfig, nil)
		})
	s.env.OnActivity(control.Merge, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.MergeInput) (activities.MergeResult, error) {
			s.Fail("a misconfigured run is not merged")
			return activities.MergeResult{}, nil
		}).Maybe()
	s.env.ExecuteWorkflow(BatchInference, BatchInput{Input: "s3://b/x.jsonl", MaxInFlightChunks: 2})
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Regexp(`chunk \d: worker w1 serves model "a", not "A"`, err.Error())
	s.LessOrEqual(calls.Load(), int32(2), "no chunk is retried or started after a configuration error")
}

func TestGPUTaskQueueNamesAreSafe(t *testing.T) {
	require.Equal(t, "vbatch-gpu-google-gemma-3-4b-it", GPUTaskQueue("google/gemma-3-4b-it"))
	require.Equal(t, "vbatch-gpu-meta-llama-llama-3.1-8b", GPUTaskQueue("meta-llama/Llama-3.1-8B"))
}

// With cache on, every chunk and the merge learn the cache's prefix — by default
// at the root of the output's bucket, outside the dated run folders — and the
// result carries the merge's cache counts; without it, nothing mentions a cache.
func (s *batchSuite) TestCacheReachesChunksAndMerge() {
	for _, tc := range []struct {
		in   BatchInput
		want string
	}{
		{BatchInput{Input: "s3://b/candidates/2026-11-27/requests.jsonl", Cache: true}, "s3://b/vbatch-cache"},
		{BatchInput{Input: "s3://b/in/requests.jsonl", Cache: true, CachePrefix: "s3://c/answers/"}, "s3://c/answers"},
		{BatchInput{Input: "s3://b/in/requests.jsonl"}, ""},
	} {
		s.SetupTest()
		var control *activities.Control
		var gpu *activities.GPU
		s.env.OnActivity(control.Plan, mock.Anything, mock.Anything).Return(plan(2, 10), nil)
		var caches sync.Map
		s.env.OnActivity(gpu.GenerateChunk, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.GenerateInput) (activities.GenerateResult, error) {
				caches.Store(in.Cache, true)
				return activities.GenerateResult{Chunk: in.Chunk.Index, Answered: 10, CacheHits: 10}, nil
			})
		var mergeIn activities.MergeInput
		s.env.OnActivity(control.Merge, mock.Anything, mock.Anything).Return(
			func(_ context.Context, in activities.MergeInput) (activities.MergeResult, error) {
				mergeIn = in
				res := activities.MergeResult{Answered: 20}
				if in.Cache {
					res.Cache = &report.CacheUse{Prefix: in.CachePrefix, Hits: 20, SavedEngineSeconds: 3}
				}
				return res, nil
			})
		s.env.OnActivity(control.Report, mock.Anything, mock.Anything).Return("report.json", nil)
		s.env.SetStartWorkflowOptions(testWorkflowOptions("cache"))
		s.env.ExecuteWorkflow(BatchInference, tc.in)
		s.Require().NoError(s.env.GetWorkflowError())
		var res BatchResult
		s.Require().NoError(s.env.GetWorkflowResult(&res))

		var seen []string
		caches.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		s.Equal([]string{tc.want}, seen, "every chunk's cache prefix")
		s.Equal(tc.want != "", mergeIn.Cache)
		s.Equal(tc.want, mergeIn.CachePrefix)
		if tc.want != "" {
			s.Equal([2]any{20, 3.0}, [2]any{res.CacheHits, res.CacheSavedEngineSeconds})
		} else {
			s.Zero(res.CacheHits)
		}
	}
}
