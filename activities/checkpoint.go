package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// Backoff of checkpoint writes while object storage refuses them.
const (
	checkpointRetryFirst = time.Second
	checkpointRetryMax   = 10 * time.Second
)

// checkpointer collects a chunk attempt's answers and writes them as numbered
// parts: when `every` answers are pending, and on the attempt's checkpoint ticker.
// A failed write keeps the answers pending and is retried with backoff, so a storage
// outage shorter than checkpointOutageLimit costs nothing but memory (a chunk's
// answers at most).
type checkpointer struct {
	store   blob.Store
	layout  run.Layout
	chunk   int
	attempt int
	every   int
	log     *zap.Logger

	mu           sync.Mutex
	pending      []run.Answer
	flushed      []run.Answer
	parts        int // parts of every attempt so far
	own          int // parts of this attempt; numbered from 1
	tokens       int64
	failingSince time.Time // zero while writes succeed
	retryAt      time.Time
	backoff      time.Duration
	lastErr      error
	flushing     sync.Mutex // one part write at a time keeps part numbers in answer order
}

// add queues an answer and writes a part when enough are pending. A failed write
// is not the caller's problem: the answers stay pending for the next try.
func (c *checkpointer) add(ctx context.Context, a run.Answer) {
	c.mu.Lock()
	c.pending = append(c.pending, a)
	c.tokens += int64(a.PromptTokens + a.CompletionTokens)
	full := len(c.pending) >= c.every && !time.Now().Before(c.retryAt)
	c.mu.Unlock()
	if full {
		_ = c.flush(ctx)
	}
}

// flushDue writes what is pending unless a failed write asked to wait.
func (c *checkpointer) flushDue(ctx context.Context) error {
	c.mu.Lock()
	due := !time.Now().Before(c.retryAt)
	c.mu.Unlock()
	if !due {
		return nil
	}
	return c.flush(ctx)
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
		c.pending = append(batch, c.pending...)
		now := time.Now()
		if c.failingSince.IsZero() {
			c.failingSince = now
			c.log.Warn("checkpoint write failed; the answers stay in memory and the write is retried",
				zap.Int("chunk", c.chunk), zap.Int("attempt", c.attempt), zap.Int("pending", len(c.pending)), zap.Error(err))
		}
		c.backoff = min(max(2*c.backoff, checkpointRetryFirst), checkpointRetryMax)
		c.retryAt = now.Add(c.backoff)
		c.lastErr = err
		return err
	}
	c.own++
	c.parts++
	c.flushed = append(c.flushed, batch...)
	if !c.failingSince.IsZero() {
		c.log.Info("checkpoint writes work again", zap.Int("chunk", c.chunk), zap.Int("attempt", c.attempt),
			zap.Duration("after", time.Since(c.failingSince).Round(time.Millisecond)))
	}
	c.failingSince, c.retryAt, c.backoff, c.lastErr = time.Time{}, time.Time{}, 0, nil
	return nil
}

// flushAll writes everything pending, retrying with backoff until it succeeds or
// ctx ends.
func (c *checkpointer) flushAll(ctx context.Context) error {
	for {
		err := c.flush(ctx)
		if err == nil {
			return nil
		}
		c.mu.Lock()
		wait := time.Until(c.retryAt)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (c *checkpointer) writePart(ctx context.Context, part int, answers []run.Answer) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, a := range answers {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	return c.store.Put(ctx, c.layout.Part(c.chunk, c.attempt, part), buf.Bytes())
}

// outage says how long writes have been failing, and the last error; zero while
// they succeed.
func (c *checkpointer) outage() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failingSince.IsZero() {
		return 0, nil
	}
	return time.Since(c.failingSince), c.lastErr
}

func (c *checkpointer) progress(resumed int) GenerateProgress {
	c.mu.Lock()
	defer c.mu.Unlock()
	return GenerateProgress{Done: resumed + len(c.flushed) + len(c.pending), Tokens: c.tokens, Parts: c.parts}
}

// written is every answer this attempt has written.
func (c *checkpointer) written() []run.Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushed
}
