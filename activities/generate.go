package activities

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
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
}

// Engines hands chunks to warm engines.
type Engines interface {
	// Acquire blocks until an engine can take one more chunk, and returns it.
	Acquire(ctx context.Context) (Lease, error)
}

// Lease is one chunk's use of one engine.
type Lease struct {
	Slot    int
	Engine  engine.Engine
	GPUs    []string // UUIDs of the engine's GPUs
	Release func()
}

// GenerateChunk answers one chunk. It skips the requests that earlier attempts
// checkpointed, streams the rest to an engine, writes answers to S3 in parts every
// CheckpointEvery answers or CheckpointSeconds, and heartbeats its progress from a
// ticker, also while the engine is busy.
func (g *GPU) GenerateChunk(ctx context.Context, in GenerateInput) (GenerateResult, error) {
	info := activity.GetInfo(ctx)
	started := time.Now()
	if in.Model != g.Model {
		return GenerateResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("worker %s serves model %q, not %q", g.Worker, g.Model, in.Model), ErrTypeConfig, nil)
	}
	reqs, err := readChunk(ctx, g.Store, in.Run, in.Chunk.Index)
	if err != nil {
		return GenerateResult{}, err
	}
	done, donePartCount, err := run.LoadAnswers(ctx, g.Store, in.Run, in.Chunk.Index)
	if err != nil {
		return GenerateResult{}, err
	}
	res := GenerateResult{Chunk: in.Chunk.Index, Attempt: int(info.Attempt), Worker: g.Worker}
	todo := reqs[:0:0]
	for _, r := range reqs {
		if a, ok := done[r.CustomID]; ok {
			res.Resumed++
			res.count(a)
			continue
		}
		todo = append(todo, r)
	}

	lease, err := g.Engines.Acquire(ctx)
	if err != nil {
		return GenerateResult{}, fmt.Errorf("acquire engine: %w", err)
	}
	defer lease.Release()
	busyStart := run.BusySample{Time: time.Now(), BusySeconds: lease.Engine.Stats().BusySeconds}
	ready := lease.Engine.Ready()
	res.Backend, res.Simulated = ready.Backend, ready.Simulated
	log := activity.GetLogger(ctx)
	log.Info("generating chunk", "chunk", in.Chunk.Index, "attempt", info.Attempt, "requests", len(reqs),
		"resumed", res.Resumed, "slot", lease.Slot, "backend", ready.Backend, "simulated", ready.Simulated)

	cp := &checkpointer{store: g.Store, layout: in.Run, chunk: in.Chunk.Index, attempt: int(info.Attempt),
		every: in.CheckpointEvery, parts: donePartCount}
	genCtx, cancelGen := context.WithCancel(ctx)
	defer cancelGen()

	// The ticker heartbeats and checkpoints on time; answers checkpoint on count.
	hbEvery := info.HeartbeatTimeout / 3
	if hbEvery <= 0 || hbEvery > 10*time.Second {
		hbEvery = 10 * time.Second
	}
	cpEvery := time.Duration(in.CheckpointSeconds) * time.Second
	tickerDone := make(chan struct{})
	var tickerWG sync.WaitGroup
	tickerWG.Add(1)
	go func() {
		defer tickerWG.Done()
		hb, cpt := time.NewTicker(hbEvery), time.NewTicker(cpEvery)
		defer hb.Stop()
		defer cpt.Stop()
		for {
			select {
			case <-tickerDone:
				return
			case <-hb.C:
				activity.RecordHeartbeat(ctx, cp.progress(res.Resumed))
			case <-cpt.C:
				if err := cp.flush(ctx); err != nil {
					cancelGen()
				}
			}
		}
	}()
	activity.RecordHeartbeat(ctx, cp.progress(res.Resumed))

	genErr := lease.Engine.Generate(genCtx, todo, func(o engine.Outcome) {
		a := run.Answer{CustomID: o.Request.CustomID, Line: o.Request.Line, Kind: o.Request.Kind,
			Created: time.Now().Unix(), Attempt: int(info.Attempt), Error: o.Err}
		if o.Result != nil {
			a.Text, a.FinishReason = o.Result.Text, o.Result.FinishReason
			a.PromptTokens, a.CompletionTokens, a.CachedTokens = o.Result.PromptTokens, o.Result.CompletionTokens, o.Result.CachedTokens
		}
		if err := cp.add(ctx, a); err != nil {
			cancelGen()
		}
	})
	busyEnd := run.BusySample{Time: time.Now(), BusySeconds: lease.Engine.Stats().BusySeconds}
	close(tickerDone)
	tickerWG.Wait()

	// Whatever finished is kept, also when the attempt fails or is cancelled; the
	// checkpoint uses a fresh context because ctx may be cancelled already.
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancelFlush()
	flushErr := cp.flush(flushCtx)
	if flushErr == nil {
		flushErr = cp.firstErr()
	}

	for _, a := range cp.written() {
		res.count(a)
	}
	res.Seconds = time.Since(started).Seconds()
	attempt := run.AttemptResult{Chunk: in.Chunk.Index, Attempt: int(info.Attempt), Worker: g.Worker,
		Engine: ready, EngineSlot: lease.Slot, Started: started, Finished: time.Now(), Requests: len(reqs),
		Resumed: res.Resumed, Answered: res.Answered, Failed: res.Failed, PromptTokens: res.PromptTokens,
		CompletionTokens: res.CompletionTokens, Parts: cp.parts, Outcome: "completed",
		EngineBusy: [2]run.BusySample{busyStart, busyEnd}}
	if g.Monitor != nil {
		attempt.GPUs = g.Monitor.Summary(lease.GPUs, started, attempt.Finished)
	}

	var retErr error
	switch {
	case ctx.Err() != nil:
		attempt.Outcome, retErr = "cancelled", ctx.Err()
	case flushErr != nil:
		attempt.Outcome, retErr = "failed", fmt.Errorf("checkpoint chunk %d: %w", in.Chunk.Index, flushErr)
	case errors.Is(genErr, engine.ErrEngineDied):
		attempt.Outcome = "failed"
		retErr = temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("engine slot %d died during chunk %d", lease.Slot, in.Chunk.Index), ErrTypeEngineDied, genErr)
	case genErr != nil:
		attempt.Outcome, retErr = "failed", fmt.Errorf("generate chunk %d: %w", in.Chunk.Index, genErr)
	}
	if retErr != nil {
		attempt.Error = retErr.Error()
	}
	if err := blob.WriteJSON(flushCtx, g.Store, in.Run.AttemptResult(in.Chunk.Index, int(info.Attempt)), attempt); err != nil && retErr == nil {
		retErr = fmt.Errorf("write attempt result: %w", err)
	}
	return res, retErr
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

// readChunk reads a chunk's requests. A chunk is bounded by the run's chunk size, so
// holding it is bounded too.
func readChunk(ctx context.Context, store blob.Store, layout run.Layout, chunk int) ([]batchfile.Request, error) {
	src, err := store.Open(ctx, layout.Chunk(chunk))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("chunk %d of run %s is missing: was the run's folder deleted?", chunk, layout.RunID), ErrTypeConfig, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open chunk %d: %w", chunk, err)
	}
	defer src.Close()
	var reqs []batchfile.Request
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		var r batchfile.Request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", chunk, err)
		}
		reqs = append(reqs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read chunk %d: %w", chunk, err)
	}
	return reqs, nil
}

// checkpointer collects a chunk attempt's answers and writes them as numbered parts.
type checkpointer struct {
	store   blob.Store
	layout  run.Layout
	chunk   int
	attempt int
	every   int

	mu       sync.Mutex
	pending  []run.Answer
	flushed  []run.Answer
	parts    int // parts of every attempt so far; this attempt numbers its own from 1
	own      int
	tokens   int64
	err      error
	flushing sync.Mutex // one part write at a time keeps part numbers in answer order
}

func (c *checkpointer) add(ctx context.Context, a run.Answer) error {
	c.mu.Lock()
	c.pending = append(c.pending, a)
	c.tokens += int64(a.PromptTokens + a.CompletionTokens)
	full := len(c.pending) >= c.every
	c.mu.Unlock()
	if full {
		return c.flush(ctx)
	}
	return nil
}

// flush writes the pending answers as the attempt's next part.
func (c *checkpointer) flush(ctx context.Context) error {
	c.flushing.Lock()
	defer c.flushing.Unlock()
	c.mu.Lock()
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := c.writePart(ctx, c.own+1, batch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Keep the answers for the final flush; the attempt fails if that fails too.
		c.pending = append(batch, c.pending...)
		if c.err == nil {
			c.err = err
		}
		return err
	}
	c.own++
	c.parts++
	c.flushed = append(c.flushed, batch...)
	return nil
}

func (c *checkpointer) writePart(ctx context.Context, part int, answers []run.Answer) error {
	w, err := c.store.Create(ctx, c.layout.Part(c.chunk, c.attempt, part))
	if err != nil {
		return err
	}
	buf := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(buf)
	for _, a := range answers {
		if err := enc.Encode(a); err != nil {
			_ = w.Abort()
			return err
		}
	}
	if err := buf.Flush(); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Close()
}

func (c *checkpointer) progress(resumed int) GenerateProgress {
	c.mu.Lock()
	defer c.mu.Unlock()
	return GenerateProgress{Done: resumed + len(c.flushed) + len(c.pending), Tokens: c.tokens, Parts: c.parts}
}

func (c *checkpointer) written() []run.Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushed
}

// firstErr is the first checkpoint failure, once a later flush has succeeded it no
// longer matters: every answer is written.
func (c *checkpointer) firstErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return nil
	}
	return c.err
}
