package activities

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/answercache"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/run"
)

// Bounds of a chunk attempt's traffic with the answer cache.
const (
	// cacheLookups is how many cache reads a chunk has in flight: a chunk of 256
	// requests is looked up in 8 round trips.
	cacheLookups = 32
	// cacheWrites is how many new answers a chunk writes to the cache at once.
	cacheWrites = 8
	// cacheWriteWait bounds the wait for the last cache writes when an attempt
	// ends; a write still unfinished then is given up (a later run answers it again).
	cacheWriteWait = time.Minute
)

// chunkCache is one chunk attempt's use of the answer cache: it answers what the
// cache holds before anything reaches the engine, and stores the engine's new
// answers. Nothing it does can fail the chunk or lose an answer: a cache that
// cannot be read is a miss, a write that fails is logged.
type chunkCache struct {
	cache  answercache.Cache
	engine answercache.Engine
	runID  string
	log    *zap.Logger
	keys   map[string]string // custom_id → key, of the requests sent to the engine
	writer *answercache.Writer
	cancel context.CancelFunc
}

// openCache returns the attempt's cache, or nil when the run asked for none.
func (g *GPU) openCache(ctx context.Context, in GenerateInput, log *zap.Logger) *chunkCache {
	if in.Cache == "" {
		return nil
	}
	if g.CacheEngine.Backend == "" {
		log.Warn("the run asked for the answer cache, but this worker does not know its engine's settings: no cache",
			zap.Int("chunk", in.Chunk.Index))
		return nil
	}
	c := &chunkCache{cache: answercache.Cache{Store: g.Store, Prefix: in.Cache}, engine: g.CacheEngine,
		runID: in.Run.RunID, log: log, keys: map[string]string{}}
	// Writes outlive a cancelled attempt: the answers they store are checkpointed.
	writeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.writer = c.cache.NewWriter(writeCtx, cacheWrites, func(e answercache.Entry, err error) {
		log.Warn("cannot store an answer in the answer cache; the answer itself is kept",
			zap.String("key", e.Key), zap.Error(err))
	})
	return c
}

// lookup splits reqs into the answers the cache holds, as this attempt's answers,
// and the requests that must go to the engine.
func (c *chunkCache) lookup(ctx context.Context, model string, attempt int, reqs []batchfile.Request) (hits []run.Answer, misses []batchfile.Request) {
	keys := make([]string, 0, len(reqs))
	keyed := make([]batchfile.Request, 0, len(reqs))
	for _, r := range reqs {
		key, err := answercache.Key(c.engine, r)
		if err != nil {
			c.log.Warn("no answer cache for this request", zap.String("custom_id", r.CustomID), zap.Error(err))
			misses = append(misses, r)
			continue
		}
		keys, keyed = append(keys, key), append(keyed, r)
	}
	entries, errs := c.cache.Lookup(ctx, model, keys, cacheLookups)
	if len(errs) > 0 {
		c.log.Warn("answer cache reads failed; those requests go to the engine",
			zap.Int("failed", len(errs)), zap.Error(errs[0]))
	}
	for i, r := range keyed {
		e := entries[i]
		if e == nil {
			c.keys[r.CustomID] = keys[i]
			misses = append(misses, r)
			continue
		}
		hits = append(hits, run.Answer{CustomID: r.CustomID, Line: r.Line, Kind: r.Kind, Created: e.Created,
			Text: e.Text, FinishReason: e.FinishReason, PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens,
			CachedTokens: e.CachedTokens, EngineSeconds: e.EngineSeconds, Cached: true, Attempt: attempt})
	}
	return hits, misses
}

// store writes an engine's successful answer to the cache, in the background.
// Errors are never stored: the next run asks the engine again.
func (c *chunkCache) store(model string, a run.Answer) {
	key, ok := c.keys[a.CustomID]
	if !ok || a.Error != nil || a.Cached {
		return
	}
	c.writer.Put(answercache.Entry{Key: key, Model: model, Kind: a.Kind, Created: a.Created, Text: a.Text,
		FinishReason: a.FinishReason, PromptTokens: a.PromptTokens, CompletionTokens: a.CompletionTokens,
		CachedTokens: a.CachedTokens, EngineSeconds: a.EngineSeconds, Stored: time.Now().UTC(), StoredBy: c.runID})
}

// close waits up to cacheWriteWait for the writes, then gives the rest up.
func (c *chunkCache) close(chunk int) {
	stop := time.AfterFunc(cacheWriteWait, c.cancel)
	written, failed := c.writer.Wait()
	stop.Stop()
	c.cancel()
	if written+failed > 0 {
		c.log.Debug("answer cache writes", zap.Int("chunk", chunk), zap.Int("written", written), zap.Int("failed", failed))
	}
}
