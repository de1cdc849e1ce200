package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/answercache"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/run"
)

// cachedRun is one run's chunk 0 of n distinct requests, in its own run folder
// under root.
func cachedRun(t *testing.T, store blob.Store, root, runID string, n int) GenerateInput {
	t.Helper()
	layout := run.NewLayout(root, runID)
	var lines []string
	for i := 1; i <= n; i++ {
		r := batchfile.Request{CustomID: fmt.Sprintf("%s-r%02d", runID, i), Line: i, Kind: batchfile.KindChat,
			Messages: json.RawMessage(fmt.Sprintf(`[{"role":"user","content":"candidate %d"}]`, i))}
		b, err := json.Marshal(r)
		require.NoError(t, err)
		lines = append(lines, string(b))
	}
	require.NoError(t, store.Put(context.Background(), layout.Chunk(0), []byte(strings.Join(lines, "\n")+"\n")))
	return GenerateInput{Run: layout, Chunk: run.ChunkPlan{Index: 0, Requests: n, FirstLine: 1, LastLine: n},
		Model: "m", CheckpointEvery: 4, CheckpointSeconds: 1, Cache: blob.Join(root, "vbatch-cache")}
}

var simEngine = answercache.Engine{Model: "m", Backend: "sim", Sim: &engine.SimConfig{TokensPerSecond: 100}}

func TestCacheAnswersASecondRunWithoutTheEngine(t *testing.T) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	root := "file://" + filepath.ToSlash(t.TempDir())

	first := &fakeEngine{}
	in1 := cachedRun(t, store, root, "night1", 10)
	res, err := runWithRetries(t, &GPU{Store: store, Engines: first, Model: "m", Worker: "w", CacheEngine: simEngine}, in1, 1)
	require.NoError(t, err)
	assert.Equal(t, [2]int{0, 10}, [2]int{res.CacheHits, res.CacheMisses})
	require.Len(t, first.Calls(), 1)
	assert.Len(t, first.Calls()[0], 10)

	second := &fakeEngine{}
	in2 := cachedRun(t, store, root, "night2", 12) // two new candidates
	res, err = runWithRetries(t, &GPU{Store: store, Engines: second, Model: "m", Worker: "w", CacheEngine: simEngine}, in2, 1)
	require.NoError(t, err)
	assert.Equal(t, [2]int{10, 2}, [2]int{res.CacheHits, res.CacheMisses})
	assert.Equal(t, [][]string{{"night2-r11", "night2-r12"}}, second.Calls(), "only the new requests reach the engine")
	assert.Equal(t, 12, res.Answered)

	one, err := run.LoadChunk(context.Background(), store, in1.Run, 0)
	require.NoError(t, err)
	two, err := run.LoadChunk(context.Background(), store, in2.Run, 0)
	require.NoError(t, err)
	for i := 1; i <= 10; i++ {
		a, b := one.Answers[fmt.Sprintf("night1-r%02d", i)], two.Answers[fmt.Sprintf("night2-r%02d", i)]
		assert.True(t, b.Cached)
		assert.Equal(t, [3]any{a.Text, a.Created, a.PromptTokens}, [3]any{b.Text, b.Created, b.PromptTokens},
			"a hit rebuilds the first run's answer")
	}
	assert.False(t, two.Answers["night2-r11"].Cached)

	// Another engine setting shares nothing with these answers.
	other := simEngine
	other.Settings.MaxModelLen = 1024
	third := &fakeEngine{}
	res, err = runWithRetries(t, &GPU{Store: store, Engines: third, Model: "m", Worker: "w", CacheEngine: other},
		cachedRun(t, store, root, "night3", 10), 1)
	require.NoError(t, err)
	assert.Equal(t, [2]int{0, 10}, [2]int{res.CacheHits, res.CacheMisses})
}

func TestCacheErrorsAreNotStoredAndABrokenCacheLosesNoAnswer(t *testing.T) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	root := "file://" + filepath.ToSlash(t.TempDir())
	in := cachedRun(t, store, root, "run", 6)

	// The cache's store refuses every read and write: the chunk is answered all the same.
	broken := cacheBrokenStore{Store: store, cache: in.Cache}
	res, err := runWithRetries(t, &GPU{Store: broken, Engines: &fakeEngine{}, Model: "m", Worker: "w", CacheEngine: simEngine}, in, 1)
	require.NoError(t, err)
	assert.Equal(t, 6, res.Answered)
	assert.Equal(t, [2]int{0, 6}, [2]int{res.CacheHits, res.CacheMisses})
	objects, err := store.List(context.Background(), in.Cache+"/")
	require.NoError(t, err)
	assert.Empty(t, objects)

	// An engine's per-request error is never cached: the next run asks again.
	in = cachedRun(t, store, root, "errs", 3)
	_, err = runWithRetries(t, &GPU{Store: store, Engines: &failingEngine{}, Model: "m", Worker: "w", CacheEngine: simEngine}, in, 1)
	require.NoError(t, err)
	objects, err = store.List(context.Background(), in.Cache+"/")
	require.NoError(t, err)
	assert.Empty(t, objects, "no error reaches the cache")
}

// cacheBrokenStore fails every read and write under the cache's prefix.
type cacheBrokenStore struct {
	blob.Store
	cache string
}

func (s cacheBrokenStore) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	if strings.HasPrefix(uri, s.cache) {
		return nil, errCacheDown
	}
	return s.Store.Open(ctx, uri)
}

func (s cacheBrokenStore) Create(ctx context.Context, uri string) (blob.Writer, error) {
	if strings.HasPrefix(uri, s.cache) {
		return nil, errCacheDown
	}
	return s.Store.Create(ctx, uri)
}

func (s cacheBrokenStore) Put(ctx context.Context, uri string, body []byte) error {
	if strings.HasPrefix(uri, s.cache) {
		return errCacheDown
	}
	return s.Store.Put(ctx, uri, body)
}

// failingEngine fails every request alone.
type failingEngine struct{ fakeEngine }

func (e *failingEngine) Generate(ctx context.Context, reqs []batchfile.Request, on func(engine.Outcome)) error {
	for _, r := range reqs {
		on(engine.Outcome{Request: r, Err: &engine.RequestError{Code: batchfile.CodePromptTooLong, Message: "too long"}})
	}
	return nil
}

func (e *failingEngine) Acquire(context.Context) (Lease, error) {
	return Lease{Engine: e, Release: func() {}}, nil
}

var errCacheDown = errors.New("the cache's storage is down")
