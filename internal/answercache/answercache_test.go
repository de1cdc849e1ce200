package answercache

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
)

func ptr[T any](v T) *T { return &v }

func baseEngine() Engine {
	return EngineOf("google/gemma-3-4b-it", engine.Settings{GPUMemoryUtilization: 0.9, MaxModelLen: 8192},
		engine.SimConfig{TokensPerSecond: 25000, BatchSize: 64},
		engine.Ready{Backend: "sim", Simulated: true, MaxModelLen: 8192,
			Versions: map[string]string{"python": "3.12.1", "runner": "1"}})
}

func baseRequest() batchfile.Request {
	return batchfile.Request{CustomID: "cand-1", Line: 1, Kind: batchfile.KindChat,
		Messages: json.RawMessage(`[{"role":"user","content":"Rate this candidate."}]`),
		Sampling: batchfile.Sampling{Temperature: ptr(0.7), TopP: ptr(0.9), MaxTokens: ptr(2000),
			ResponseFormat: json.RawMessage(`{"type":"json_object"}`)}}
}

func key(t *testing.T, e Engine, r batchfile.Request) string {
	t.Helper()
	k, err := Key(e, r)
	require.NoError(t, err)
	require.Len(t, k, 64, "a hex SHA-256")
	return k
}

func TestKeyChangesWithModelEngineSettingsAndRequestBody(t *testing.T) {
	base := key(t, baseEngine(), baseRequest())
	engineChange := map[string]func(*Engine){
		"model":                  func(e *Engine) { e.Model = "google/gemma-3-12b-it" },
		"backend":                func(e *Engine) { e.Backend = "vllm" },
		"max_model_len setting":  func(e *Engine) { e.Settings.MaxModelLen = 4096 },
		"kv_cache_dtype":         func(e *Engine) { e.Settings.KVCacheDtype = "fp8" },
		"load_format":            func(e *Engine) { e.Settings.LoadFormat = "dummy" },
		"tensor_parallel_size":   func(e *Engine) { e.Settings.TensorParallelSize = 2 },
		"loaded max_model_len":   func(e *Engine) { e.MaxModelLen = 32768 },
		"engine library version": func(e *Engine) { e.Versions["vllm"] = "0.11.0" },
		"sim settings":           func(e *Engine) { e.Sim.PrefillFactor = 2 },
	}
	for name, change := range engineChange {
		e := baseEngine()
		change(&e)
		assert.NotEqual(t, base, key(t, e, baseRequest()), "a change of %s must miss", name)
	}
	requestChange := map[string]func(*batchfile.Request){
		"message text": func(r *batchfile.Request) {
			r.Messages = json.RawMessage(`[{"role":"user","content":"Rate this candidate!"}]`)
		},
		"kind":            func(r *batchfile.Request) { r.Kind = batchfile.KindCompletion },
		"prompt":          func(r *batchfile.Request) { r.Prompt = "x" },
		"temperature":     func(r *batchfile.Request) { r.Sampling.Temperature = ptr(0.0) },
		"max_tokens":      func(r *batchfile.Request) { r.Sampling.MaxTokens = ptr(1999) },
		"seed":            func(r *batchfile.Request) { r.Sampling.Seed = ptr(int64(7)) },
		"stop":            func(r *batchfile.Request) { r.Sampling.Stop = []string{"\n"} },
		"response_format": func(r *batchfile.Request) { r.Sampling.ResponseFormat = nil },
	}
	for name, change := range requestChange {
		r := baseRequest()
		change(&r)
		assert.NotEqual(t, base, key(t, baseEngine(), r), "a change of %s must miss", name)
	}
}

func TestKeyIgnoresWhatCannotChangeAnAnswer(t *testing.T) {
	base := key(t, baseEngine(), baseRequest())
	r := baseRequest()
	r.CustomID, r.Line = "another-id", 912
	r.Messages = json.RawMessage(`[ {"content": "Rate this candidate.", "role": "user"} ]`)
	assert.Equal(t, base, key(t, baseEngine(), r), "custom_id, line and JSON spelling are not part of the key")
	e := EngineOf("google/gemma-3-4b-it", engine.Settings{GPUMemoryUtilization: 0.9, MaxModelLen: 8192},
		engine.SimConfig{TokensPerSecond: 25000, BatchSize: 64},
		engine.Ready{Backend: "sim", Simulated: true, MaxModelLen: 8192,
			Versions: map[string]string{"python": "3.13.0", "runner": "1"}})
	assert.Equal(t, base, key(t, e, baseRequest()), "Python's own version is not part of the key")
	ready := engine.Ready{Backend: "vllm", MaxModelLen: 8192, Devices: "GPU-1", KVCacheTokens: 99}
	a := EngineOf("m", engine.Settings{}, engine.SimConfig{TokensPerSecond: 1}, ready)
	ready.Devices, ready.KVCacheTokens = "GPU-2", 12
	b := EngineOf("m", engine.Settings{}, engine.SimConfig{TokensPerSecond: 2}, ready)
	assert.Equal(t, key(t, a, baseRequest()), key(t, b, baseRequest()),
		"the GPU a real engine runs on, and sim settings of a real engine, are not part of the key")
}

func TestPutThenLookup(t *testing.T) {
	ctx := context.Background()
	store, err := blob.New(ctx, blob.Config{})
	require.NoError(t, err)
	c := Cache{Store: store, Prefix: "file://" + filepath.ToSlash(t.TempDir()) + "/vbatch-cache"}
	model := "google/gemma-3-4b-it"
	var keys []string
	for i := range 40 {
		r := baseRequest()
		r.Prompt = strings.Repeat("x", i)
		keys = append(keys, key(t, baseEngine(), r))
	}
	w := c.NewWriter(ctx, 4, func(Entry, error) { t.Error("no write fails here") })
	for i, k := range keys[:30] {
		w.Put(Entry{Key: k, Model: model, Kind: batchfile.KindChat, Text: strings.Repeat("a", i), EngineSeconds: 0.5})
	}
	written, failed := w.Wait()
	assert.Equal(t, [2]int{30, 0}, [2]int{written, failed})
	assert.Contains(t, c.URI(model, keys[0]), "/vbatch-cache/google-gemma-3-4b-it/"+keys[0][:2]+"/"+keys[0]+".json")

	hits, errs := c.Lookup(ctx, model, keys, 8)
	assert.Empty(t, errs)
	for i, h := range hits {
		if i < 30 {
			require.NotNil(t, h, i)
			assert.Equal(t, strings.Repeat("a", i), h.Text)
			assert.Equal(t, 0.5, h.EngineSeconds)
		} else {
			assert.Nil(t, h, "key %d was never stored", i)
		}
	}
	// An entry that does not hold its own key is a miss, and said so.
	require.NoError(t, blob.WriteJSON(ctx, store, c.URI(model, keys[31]), Entry{Key: keys[0], Model: model}))
	hits, errs = c.Lookup(ctx, model, keys[31:32], 8)
	assert.Nil(t, hits[0])
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), "holds key")
}

func TestWriterReportsFailures(t *testing.T) {
	ctx := context.Background()
	c := Cache{Store: failingStore{}, Prefix: "s3://b/vbatch-cache"}
	var failures []string
	w := c.NewWriter(ctx, 2, func(e Entry, err error) { failures = append(failures, e.Key) })
	w.Put(Entry{Key: strings.Repeat("ab", 32), Model: "m"})
	written, failed := w.Wait()
	assert.Equal(t, [2]int{0, 1}, [2]int{written, failed})
	assert.Len(t, failures, 1)
}

func TestDefaultPrefixIsOutsideTheRunFolders(t *testing.T) {
	assert.Equal(t, "s3://bucket/vbatch-cache", DefaultPrefix("s3://bucket/candidates/2026-11-27"))
	assert.Equal(t, "s3://bucket/vbatch-cache", DefaultPrefix("s3://bucket"))
	assert.Equal(t, "file:///data/out/vbatch-cache", DefaultPrefix("file:///data/out/"))
}

// failingStore refuses every write.
type failingStore struct{ blob.Store }

func (failingStore) Create(context.Context, string) (blob.Writer, error) {
	return nil, errors.New("storage is down")
}

func (failingStore) Put(context.Context, string, []byte) error {
	return errors.New("storage is down")
}
