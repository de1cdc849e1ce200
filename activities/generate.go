package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/answercache"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/metrics"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
)

// GPU holds the activity of a GPU worker: GenerateChunk, fed to the worker's warm
// engines.
type GPU struct {
	Store   blob.Store
	Engines Engines
	Model   string       // the model the worker's engines loaded
	Worker  string       // this worker's name, for the report
	Monitor *gpu.Monitor // nil where the host has no GPUs
	Logger  *zap.Logger
	// CacheEngine is what of the worker's loaded engine goes into answer cache
	// keys (its settings, as internal/answercache describes); the worker sets it
	// from its configuration and its engines' ready event.
	CacheEngine answercache.Engine
	// FaultFailChunks is a test-only fault: GenerateChunk fails these chunk
	// indexes on every attempt, so that tests can make a shard fail for good. Only
	// the hidden worker flag --fault-fail-chunk sets it.
	FaultFailChunks []int
	// Metrics counts requests, tokens and chunk attempts; nil counts nothing.
	Metrics *metrics.Worker
}

// Engines hands chunks to warm engines.
type Engines interface {
	// Acquire blocks until an engine can take one more chunk, and returns it.
	Acquire(ctx context.Context) (Lease, error)
}

// Lease is one chunk's use of one engine.
type Lease struct {
	Slot int
	// Engine is the slot's engine, shared with the other chunks on the slot.
	Engine  engine.Engine
	GPUs    []string // UUIDs of the engine's GPUs
	Release func()
	// Exclusive waits until no other chunk has requests in the slot's engine,
	// keeps them out until release is called, and returns the engine to feed
	// meanwhile. It is how a chunk narrows down a request that crashes the engine
	// (see suspects.go). Nil where the engine cannot be had alone.
	Exclusive func(ctx context.Context) (e engine.Engine, release func(), err error)
	// WorkerStats reads every engine of the worker, by slot; nil where unknown.
	WorkerStats func() []engine.Stats
}

// EngineDiedError is an engine's death as a shared engine (Lease.Engine) saw it. A
// chunk's requests run on whichever engine of the worker has room, so the engine
// that died may be another slot's, and only the requests handed to an engine were
// in one: InFlight lists those left unanswered by the failed calls, which is what
// the chunk's death record must hold (suspects.go), not every request it had left.
type EngineDiedError struct {
	Slot     int      // the slot whose engine died
	InFlight []string // custom_ids
	Err      error    // wraps engine.ErrEngineDied
}

func (e *EngineDiedError) Error() string { return e.Err.Error() }
func (e *EngineDiedError) Unwrap() error { return e.Err }

// Timing of a chunk attempt.
const (
	// maxHeartbeatEvery bounds the time between heartbeats, whatever the heartbeat
	// timeout: cancellation reaches a chunk through a heartbeat's answer.
	maxHeartbeatEvery = 5 * time.Second
	// checkpointOutageLimit is how long answers may wait in memory while object
	// storage refuses them before the attempt gives up; shorter outages are ridden
	// out without losing the attempt.
	checkpointOutageLimit = 2 * time.Minute
	// finalFlushTimeout bounds the last checkpoint of an attempt, which retries
	// while storage is unavailable.
	finalFlushTimeout = 2 * time.Minute
)

// errWorkerStopping is the cause of an attempt cut short by the worker's graceful stop.
var errWorkerStopping = errors.New("worker is stopping")

// GenerateChunk answers one chunk. It skips the requests that earlier attempts
// checkpointed, streams the rest to an engine, writes answers to S3 in parts every
// CheckpointEvery answers or CheckpointSeconds, and heartbeats its progress from a
// ticker, also while the engine is busy. When its engine dies it records which of
// its requests were in flight, so that later attempts can find a request that
// crashes the engine (suspects.go). When its worker stops gracefully it aborts what
// is in flight, checkpoints what finished and fails retryably, for another worker
// to resume.
func (g *GPU) GenerateChunk(ctx context.Context, in GenerateInput) (GenerateResult, error) {
	info := activity.GetInfo(ctx)
	attempt := in.AttemptBase + int(info.Attempt)
	started := time.Now()
	if in.Model != g.Model {
		return GenerateResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("worker %s serves model %q, not %q", g.Worker, g.Model, in.Model), ErrTypeConfig, nil)
	}
	// Heartbeats run from the first moment to the last: reading a chunk while
	// storage is slow, or the final checkpoint while it is down, must not look like
	// a dead attempt, or Temporal would start a second one beside it.
	var cpRef atomic.Pointer[checkpointer]
	var resumed atomic.Int64
	progress := func() GenerateProgress {
		if cp := cpRef.Load(); cp != nil {
			return cp.progress(int(resumed.Load()))
		}
		return GenerateProgress{}
	}
	defer heartbeat(ctx, info.HeartbeatTimeout, progress)()

	reqs, err := readChunk(ctx, g.Store, in.Run, in.Chunk.Index)
	if err != nil {
		return GenerateResult{}, err
	}
	state, err := run.LoadChunk(ctx, g.Store, in.Run, in.Chunk.Index)
	if err != nil {
		return GenerateResult{}, err
	}
	res := GenerateResult{Chunk: in.Chunk.Index, Attempt: attempt, Worker: g.Worker}
	var todo []batchfile.Request
	for _, r := range reqs {
		if a, ok := state.Answers[r.CustomID]; ok && !(in.RetryEngineErrors && a.Attempt <= in.AttemptBase && isEngineError(a)) {
			res.Resumed++
			res.count(a)
			continue
		}
		todo = append(todo, r)
	}
	var deaths []run.EngineDeath
	for _, d := range state.Deaths {
		// An earlier run's deaths are not held against a retry's requests: the
		// retry may run on a mended engine.
		if d.Attempt > in.AttemptBase {
			deaths = append(deaths, d)
		}
	}
	log := g.logger()
	cp := &checkpointer{store: g.Store, layout: in.Run, chunk: in.Chunk.Index, attempt: attempt,
		every: max(in.CheckpointEvery, 1), parts: state.Parts, log: log}
	resumed.Store(int64(res.Resumed))
	cpRef.Store(cp)

	// The answer cache answers what it holds before anything reaches the engine;
	// its answers are checkpointed like the engine's, so resume and exactly-once
	// hold for them too.
	cache := g.openCache(ctx, in, log)
	if cache != nil {
		defer cache.close(in.Chunk.Index)
		var hits []run.Answer
		hits, todo = cache.lookup(ctx, g.Model, attempt, todo)
		for _, a := range hits {
			cp.add(ctx, a)
		}
		res.CacheHits, res.CacheMisses = len(hits), len(todo)
	}
	if !in.KeepInputOrder {
		todo = groupByPrefix(todo)
	}
	plan := planFeed(todo, deaths)
	genCtx, cancelGen := context.WithCancelCause(ctx)
	defer cancelGen(nil)
	var stopping atomic.Bool
	done := make(chan struct{})
	var loops sync.WaitGroup
	loops.Go(func() {
		select {
		case <-activity.GetWorkerStopChannel(ctx):
			stopping.Store(true)
			cancelGen(errWorkerStopping)
		case <-done:
		}
	})
	// Time-based checkpoints run on their own ticker, so a slow checkpoint write
	// never delays a heartbeat.
	loops.Go(func() {
		t := time.NewTicker(max(time.Duration(in.CheckpointSeconds)*time.Second, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = cp.flushDue(ctx)
				if d, err := cp.outage(); d > checkpointOutageLimit {
					cancelGen(fmt.Errorf("object storage refused checkpoints for %s: %w", d.Round(time.Second), err))
				}
			}
		}
	})
	for _, r := range plan.blamed {
		cp.add(ctx, run.Answer{CustomID: r.CustomID, Line: r.Line, Kind: r.Kind, Created: time.Now().Unix(), Attempt: attempt,
			Error: &engine.RequestError{Code: batchfile.CodeEngineError, Message: blameMessage(plan.strikes[r.CustomID])}})
		g.Metrics.RequestDone(ctx, batchfile.CodeEngineError, 0, 0)
	}
	res.Blamed = len(plan.blamed)

	f := &feeder{inFlight: map[string]batchfile.Request{}, onOutcome: func(o engine.Outcome) {
		a := run.Answer{CustomID: o.Request.CustomID, Line: o.Request.Line, Kind: o.Request.Kind,
			Created: time.Now().Unix(), Attempt: attempt, Error: o.Err}
		if o.Result != nil {
			a.Text, a.FinishReason = o.Result.Text, o.Result.FinishReason
			a.PromptTokens, a.CompletionTokens, a.CachedTokens = o.Result.PromptTokens, o.Result.CompletionTokens, o.Result.CachedTokens
			a.EngineSeconds = o.Result.EngineSeconds
		}
		// One line per answer at debug level: what the fault tests count to
		// measure how many requests were generated more than once.
		log.Debug("answer", zap.Int("chunk", in.Chunk.Index), zap.Int("attempt", attempt), zap.String("custom_id", a.CustomID))
		cp.add(ctx, a)
		if cache != nil {
			cache.store(g.Model, a)
		}
		g.Metrics.RequestDone(ctx, a.ErrorCode(), a.PromptTokens, a.CompletionTokens)
	}}
	lease, genErr := g.Engines.Acquire(genCtx)
	var busy [2]run.BusySample
	var workerEngines []run.BusySample
	var ready engine.Ready
	if genErr != nil {
		genErr = fmt.Errorf("acquire engine: %w", genErr)
	} else {
		busy[0] = run.SampleEngine(lease.Engine.Stats())
		ready = lease.Engine.Ready()
		res.Backend, res.Simulated = ready.Backend, ready.Simulated
		activity.GetLogger(ctx).Info("generating chunk", "chunk", in.Chunk.Index, "attempt", attempt, "requests", len(reqs),
			"resumed", res.Resumed, "cache_hits", res.CacheHits, "suspects", len(plan.group)+len(plan.solo), "blamed", len(plan.blamed),
			"slot", lease.Slot, "backend", ready.Backend, "simulated", ready.Simulated)
		if slices.Contains(g.FaultFailChunks, in.Chunk.Index) {
			genErr = temporal.NewApplicationError(fmt.Sprintf(
				"injected fault: worker %s fails chunk %d on every attempt (--fault-fail-chunk)", g.Worker, in.Chunk.Index),
				ErrTypeInjectedFault)
		} else {
			genErr = f.run(genCtx, lease, plan)
		}
		busy[1] = run.SampleEngine(lease.Engine.Stats())
		if lease.WorkerStats != nil {
			for _, s := range lease.WorkerStats() {
				workerEngines = append(workerEngines, run.SampleEngine(s))
			}
		}
		lease.Release()
	}
	close(done)
	loops.Wait()

	// Whatever finished is kept, also when the attempt fails, is cancelled or its
	// worker stops; the checkpoint uses a fresh context because ctx may be
	// cancelled already, and retries while storage is unavailable.
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
	defer cancelFlush()
	flushErr := cp.flushAll(flushCtx)

	for _, a := range cp.written() {
		res.count(a)
	}
	res.Seconds = time.Since(started).Seconds()
	result := run.AttemptResult{Chunk: in.Chunk.Index, Attempt: attempt, Worker: g.Worker,
		Engine: ready, EngineSlot: lease.Slot, Started: started, Finished: time.Now(), Requests: len(reqs),
		Resumed: res.Resumed, Answered: res.Answered, Failed: res.Failed, PromptTokens: res.PromptTokens,
		CompletionTokens: res.CompletionTokens, Parts: cp.own, Outcome: "completed", EngineBusy: busy, WorkerEngines: workerEngines,
		Suspects: len(plan.group) + len(plan.solo), Blamed: len(plan.blamed)}
	if g.Monitor != nil {
		result.GPUs = g.Monitor.Summary(lease.GPUs, started, result.Finished)
		result.GPUSeries = report.DownsampleGPU(g.Monitor.Series(lease.GPUs, started, result.Finished), 120)
	}

	var retErr error
	switch cause := context.Cause(genCtx); {
	case stopping.Load():
		result.Outcome = "stopped"
		retErr = temporal.NewApplicationError(fmt.Sprintf("worker %s is stopping: chunk %d checkpointed %d answers in this attempt; the next attempt resumes it",
			g.Worker, in.Chunk.Index, len(cp.written())), ErrTypeWorkerStopping)
	case ctx.Err() != nil:
		result.Outcome, retErr = "cancelled", ctx.Err()
	case flushErr != nil:
		result.Outcome = "failed"
		retErr = temporal.NewApplicationErrorWithCause(fmt.Sprintf("checkpoint chunk %d: %v", in.Chunk.Index, flushErr), ErrTypeCheckpoint, flushErr)
	case genErr != nil && cause != nil && !errors.Is(cause, context.Canceled):
		result.Outcome = "failed"
		retErr = temporal.NewApplicationErrorWithCause(fmt.Sprintf("checkpoint chunk %d: %v", in.Chunk.Index, cause), ErrTypeCheckpoint, cause)
	case errors.Is(genErr, engine.ErrEngineDied):
		result.Outcome = "failed"
		death := f.death(in.Chunk.Index, attempt, g.Worker, lease.Slot, genErr)
		if err := blob.WriteJSON(flushCtx, g.Store, in.Run.Death(in.Chunk.Index, attempt), death); err != nil {
			log.Error("cannot record the engine's death", zap.Int("chunk", in.Chunk.Index), zap.Error(err))
		}
		retErr = temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("engine slot %d died during chunk %d with %d of its requests in flight", death.Slot, in.Chunk.Index, len(death.InFlight)),
			ErrTypeEngineDied, genErr)
	case errors.As(genErr, new(*temporal.ApplicationError)):
		result.Outcome, retErr = "failed", genErr
	case genErr != nil:
		result.Outcome, retErr = "failed", fmt.Errorf("generate chunk %d: %w", in.Chunk.Index, genErr)
	}
	if retErr != nil {
		result.Error = retErr.Error()
	}
	if err := blob.WriteJSON(flushCtx, g.Store, in.Run.AttemptResult(in.Chunk.Index, attempt), result); err != nil && retErr == nil {
		retErr = fmt.Errorf("write attempt result: %w", err)
	}
	g.Metrics.ChunkAttemptDone(ctx, result.Outcome, info.Attempt > 1, time.Since(started))
	return res, retErr
}

// heartbeat records progress() at once and then at least every third of the
// heartbeat timeout (and every maxHeartbeatEvery), until the returned stop is called.
func heartbeat(ctx context.Context, timeout time.Duration, progress func() GenerateProgress) (stop func()) {
	every := min(timeout/3, maxHeartbeatEvery)
	if every <= 0 {
		every = maxHeartbeatEvery
	}
	activity.RecordHeartbeat(ctx, progress())
	done := make(chan struct{})
	var loop sync.WaitGroup
	loop.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, progress())
			}
		}
	})
	return func() {
		close(done)
		loop.Wait()
	}
}

func (g *GPU) logger() *zap.Logger {
	if g.Logger == nil {
		return zap.NewNop()
	}
	return g.Logger
}

func isEngineError(a run.Answer) bool {
	return a.Error != nil && a.Error.Code == batchfile.CodeEngineError
}

func (r *GenerateResult) count(a run.Answer) {
	if a.Error != nil {
		r.Failed++
		return
	}
	r.Answered++
	r.PromptTokens += int64(a.PromptTokens)
	r.CompletionTokens += int64(a.CompletionTokens)
}

// feeder feeds one attempt's requests to its engine in the order planFeed chose,
// and knows which of them are in flight should the engine die.
type feeder struct {
	onOutcome func(engine.Outcome)

	mu       sync.Mutex
	inFlight map[string]batchfile.Request // submitted, no outcome yet
	alone    bool                         // the requests in flight have the engine to themselves
}

func (f *feeder) run(ctx context.Context, lease Lease, plan feed) error {
	if err := f.generate(ctx, lease.Engine, plan.normal, false); err != nil {
		return err
	}
	if len(plan.group)+len(plan.solo) == 0 {
		return nil
	}
	e, alone := lease.Engine, false
	if lease.Exclusive != nil {
		var release func()
		var err error
		if e, release, err = lease.Exclusive(ctx); err != nil {
			return fmt.Errorf("wait for the engine alone: %w", err)
		}
		defer release()
		alone = true
	}
	if err := f.generate(ctx, e, plan.group, alone); err != nil {
		return err
	}
	for _, r := range plan.solo {
		if err := f.generate(ctx, e, []batchfile.Request{r}, alone); err != nil {
			return err
		}
	}
	return nil
}

func (f *feeder) generate(ctx context.Context, e engine.Engine, reqs []batchfile.Request, alone bool) error {
	if len(reqs) == 0 {
		return nil
	}
	f.mu.Lock()
	f.alone = alone
	for _, r := range reqs {
		f.inFlight[r.CustomID] = r
	}
	f.mu.Unlock()
	return e.Generate(ctx, reqs, func(o engine.Outcome) {
		f.mu.Lock()
		delete(f.inFlight, o.Request.CustomID)
		f.mu.Unlock()
		f.onOutcome(o)
	})
}

// death describes the engine's death as this attempt saw it: the requests of its
// call that had no outcome, or, where a shared engine says which of them were in
// an engine (EngineDiedError), those.
func (f *feeder) death(chunk, attempt int, worker string, slot int, cause error) run.EngineDeath {
	f.mu.Lock()
	defer f.mu.Unlock()
	inEngine := func(string) bool { return true }
	if died, ok := errors.AsType[*EngineDiedError](cause); ok {
		slot = died.Slot
		ids := make(map[string]bool, len(died.InFlight))
		for _, id := range died.InFlight {
			ids[id] = true
		}
		inEngine = func(id string) bool { return ids[id] }
	}
	reqs := make([]batchfile.Request, 0, len(f.inFlight))
	for id, r := range f.inFlight {
		if inEngine(id) {
			reqs = append(reqs, r)
		}
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].Line < reqs[j].Line })
	d := run.EngineDeath{Chunk: chunk, Attempt: attempt, Worker: worker, Slot: slot, Time: time.Now().UTC(),
		InFlight: make([]string, len(reqs)), Alone: f.alone, Error: cause.Error()}
	for i, r := range reqs {
		d.InFlight[i] = r.CustomID
	}
	return d
}

// readChunk reads a chunk's requests. A chunk is bounded by the run's chunk size, so
// holding it is bounded too.
func readChunk(ctx context.Context, store blob.Store, layout run.Layout, chunk int) ([]batchfile.Request, error) {
	var reqs []batchfile.Request
	err := run.EachRequest(ctx, store, layout, chunk, func(r batchfile.Request) error {
		reqs = append(reqs, r)
		return nil
	})
	if errors.Is(err, blob.ErrNotFound) {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("chunk %d of run %s is missing: was the run's folder deleted?", chunk, layout.RunID), ErrTypeConfig, err)
	}
	return reqs, err
}
