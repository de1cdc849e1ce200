// Package answercache owns vbatch's answer cache: answers of earlier runs kept in
// object storage, keyed by everything an answer depends on, so that a run of
// requests answered before (the same candidates tomorrow night) is answered from
// storage instead of a GPU.
//
// The key is the SHA-256 of a canonical JSON encoding of three things: the cache's
// format version, the engine that answers (model, backend, the worker's engine
// settings, the loaded engine's max_model_len and library versions, the sim's
// settings) and the request as the engine receives it (kind, messages or prompt,
// and its sampling fields after the run's defaults filled them; never custom_id or
// line). Objects lie at <prefix>/<model slug>/<first 2 hex of key>/<key>.json.
//
// With temperature > 0 an engine would give a different sample on every run; the
// cache gives back the one sample it stored.
package answercache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
)

// FormatVersion is part of every key: a change of what an entry holds, or of how a
// key is encoded, starts a fresh cache instead of misreading the old one.
const FormatVersion = 1

// DefaultFolder is the cache's folder at the root of the output's bucket.
const DefaultFolder = "vbatch-cache"

// Engine is what of the answering engine goes into a key: every setting that can
// change an answer. A field it does not hold (GPU count, memory readings,
// CUDA_VISIBLE_DEVICES) must not change answers.
type Engine struct {
	Model    string          `json:"model"`
	Backend  string          `json:"backend"`
	Settings engine.Settings `json:"settings"`
	// MaxModelLen is the loaded engine's context, which a zero setting leaves to
	// the model's config.
	MaxModelLen int `json:"max_model_len"`
	// Versions are the engine's library versions (vllm, torch, the runner's);
	// Python's own is left out.
	Versions map[string]string `json:"versions,omitempty"`
	// Sim is the simulator's configuration, for the sim backend only.
	Sim *engine.SimConfig `json:"sim,omitempty"`
}

// EngineOf describes a loaded engine for keys: the worker's settings and what
// the engine's ready event said.
func EngineOf(model string, settings engine.Settings, sim engine.SimConfig, ready engine.Ready) Engine {
	e := Engine{Model: model, Backend: ready.Backend, Settings: settings, MaxModelLen: ready.MaxModelLen,
		Versions: maps.Clone(ready.Versions)}
	delete(e.Versions, "python")
	if ready.Simulated {
		e.Sim = &sim
	}
	return e
}

// Entry is one cached answer: what Merge needs to rebuild its output line for any
// custom_id, and what the original answer cost the engine.
type Entry struct {
	Key              string         `json:"key"`
	Model            string         `json:"model"`
	Kind             batchfile.Kind `json:"kind"`
	Created          int64          `json:"created"` // the original answer's, so its body is rebuilt byte for byte
	Text             string         `json:"text"`
	FinishReason     string         `json:"finish_reason"`
	PromptTokens     int            `json:"prompt_tokens"`
	CompletionTokens int            `json:"completion_tokens"`
	CachedTokens     int            `json:"cached_tokens,omitempty"`
	// EngineSeconds is the original answer's share of its engine's busy time
	// (engine.Result.EngineSeconds): the GPU time a hit saves.
	EngineSeconds float64   `json:"engine_seconds"`
	Stored        time.Time `json:"stored"`
	StoredBy      string    `json:"stored_by,omitempty"` // run id of the run that answered it
}

// Key is the content hash that names req's answer from e.
func Key(e Engine, req batchfile.Request) (string, error) {
	messages, err := canonical(req.Messages)
	if err != nil {
		return "", fmt.Errorf("cache key of %s: messages: %w", req.CustomID, err)
	}
	sampling := req.Sampling
	if sampling.ResponseFormat, err = canonical(sampling.ResponseFormat); err != nil {
		return "", fmt.Errorf("cache key of %s: response_format: %w", req.CustomID, err)
	}
	data, err := json.Marshal(struct {
		Version  int                `json:"version"`
		Engine   Engine             `json:"engine"`
		Kind     batchfile.Kind     `json:"kind"`
		Messages json.RawMessage    `json:"messages,omitempty"`
		Prompt   string             `json:"prompt,omitempty"`
		Sampling batchfile.Sampling `json:"sampling"`
	}{FormatVersion, e, req.Kind, messages, req.Prompt, sampling})
	if err != nil {
		return "", fmt.Errorf("cache key of %s: %w", req.CustomID, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// canonical re-encodes JSON with sorted object keys and no spaces, numbers as
// written, so two spellings of the same messages give the same key.
func canonical(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// Cache is the answer cache under one prefix.
type Cache struct {
	Store  blob.Store
	Prefix string // s3://bucket/vbatch-cache, without a trailing slash
}

var unsafeSlug = regexp.MustCompile(`[^a-z0-9._-]+`)

// URI is where the answer of key from model lies.
func (c Cache) URI(model, key string) string {
	slug := strings.Trim(unsafeSlug.ReplaceAllString(strings.ToLower(model), "-"), "-.")
	if slug == "" {
		slug = "model"
	}
	return blob.Join(c.Prefix, slug, key[:2], key+".json")
}

// Get reads the entry of key; found is false where there is none.
func (c Cache) Get(ctx context.Context, model, key string) (e Entry, found bool, err error) {
	err = blob.ReadJSON(ctx, c.Store, c.URI(model, key), &e)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return Entry{}, false, nil
	case err != nil:
		return Entry{}, false, err
	case e.Key != key || e.Model != model:
		return Entry{}, false, fmt.Errorf("cache entry %s holds key %s of model %q", c.URI(model, key), e.Key, e.Model)
	}
	return e, true, nil
}

// Put stores an entry under its key. Entries of one key hold the same answer but
// for a sample at temperature > 0, so a concurrent writer of the same key is
// harmless: the last one stays.
func (c Cache) Put(ctx context.Context, e Entry) error {
	return blob.WriteJSON(ctx, c.Store, c.URI(e.Model, e.Key), e)
}

// Lookup reads the entries of keys with at most parallel reads at once; hits[i]
// is nil where keys[i] has none. A read that fails counts as a miss and is
// returned in errs (one per failed read), for the caller to log: a cache that
// cannot be read never stops an answer.
func (c Cache) Lookup(ctx context.Context, model string, keys []string, parallel int) (hits []*Entry, errs []error) {
	hits = make([]*Entry, len(keys))
	sem := make(chan struct{}, max(parallel, 1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, key := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return hits, append(errs, ctx.Err())
		}
		wg.Go(func() {
			defer func() { <-sem }()
			e, found, err := c.Get(ctx, model, key)
			switch {
			case err != nil:
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			case found:
				hits[i] = &e
			}
		})
	}
	wg.Wait()
	return hits, errs
}

// Writer stores entries in the background, at most parallel at once, so a slow
// cache never holds up the answers that feed it.
type Writer struct {
	cache   Cache
	ctx     context.Context
	onError func(Entry, error)
	sem     chan struct{}
	wg      sync.WaitGroup

	mu      sync.Mutex
	written int
	failed  int
}

// NewWriter starts a writer whose writes run under ctx; onError hears of each
// failed write.
func (c Cache) NewWriter(ctx context.Context, parallel int, onError func(Entry, error)) *Writer {
	return &Writer{cache: c, ctx: ctx, onError: onError, sem: make(chan struct{}, max(parallel, 1))}
}

// Put queues an entry and returns at once.
func (w *Writer) Put(e Entry) {
	w.wg.Go(func() {
		w.sem <- struct{}{}
		defer func() { <-w.sem }()
		err := w.cache.Put(w.ctx, e)
		w.mu.Lock()
		if err != nil {
			w.failed++
		} else {
			w.written++
		}
		w.mu.Unlock()
		if err != nil && w.onError != nil {
			w.onError(e, err)
		}
	})
}

// Wait waits for every queued write and says how many were stored and failed.
func (w *Writer) Wait() (written, failed int) {
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written, w.failed
}

// DefaultPrefix is the cache of a run whose output prefix is output: the
// vbatch-cache folder at the root of an S3 output's bucket, outside every dated run
// folder, so that tomorrow's run finds today's answers. A file:// output has no
// bucket; its cache is the vbatch-cache folder beside the run folders.
func DefaultPrefix(output string) string {
	scheme, bucket, _, err := blob.ParseURI(output)
	if err == nil && scheme == blob.SchemeS3 {
		return "s3://" + bucket + "/" + DefaultFolder
	}
	return blob.Join(strings.TrimRight(output, "/"), DefaultFolder)
}
