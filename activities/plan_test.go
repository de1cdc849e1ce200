package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
)

// BenchmarkPlan plans 20,000 synthetic candidate lines from a file:// store: the
// CPU one Plan takes per input, to compare with a plain copy of the same bytes.
func BenchmarkPlan(b *testing.B) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(b, err)
	dir := "file://" + filepath.ToSlash(b.TempDir())
	var data bytes.Buffer
	require.NoError(b, synth.WriteCandidates(&data, synth.Options{N: 20_000, Seed: 1, Model: "m"}))
	input := dir + "/in.jsonl"
	writeObject(b, store, input, data.Bytes())
	env, c := controlActivities(store)
	b.SetBytes(int64(data.Len()))
	b.ResetTimer()
	for i := range b.N {
		in := PlanInput{Run: run.NewLayout(dir, fmt.Sprintf("run%d", i)), Input: input, Model: "m", ChunkSize: 250}
		val, err := env.ExecuteActivity(c.Plan, in)
		require.NoError(b, err)
		var res PlanResult
		require.NoError(b, val.Get(&res))
		require.Equal(b, 20_000, res.Valid)
	}
}

// slowPutStore makes storing an object whole slow, as an S3 PutObject is, fails
// the put of one object, and counts the puts still under way when the manifest
// is stored.
type slowPutStore struct {
	blob.Store
	delay    time.Duration
	fail     string // the URI whose Put fails
	manifest string
	puts     *atOnce
	// puttingAtManifest: puts under way when the manifest was stored.
	puttingAtManifest *atomic.Int32
}

func (s slowPutStore) Put(ctx context.Context, uri string, body []byte) error {
	if uri == s.manifest {
		s.puttingAtManifest.Store(s.puts.now.Load())
		return s.Store.Put(ctx, uri, body)
	}
	defer s.puts.enter()()
	// Longer the larger the body, as an upload is: a 1 MB chunk's put outlasts
	// building the next one even under the race detector on a busy machine.
	time.Sleep(s.delay + time.Duration(len(body))*50*time.Nanosecond)
	if uri == s.fail {
		return errors.New("connection reset")
	}
	return s.Store.Put(ctx, uri, body)
}

// planSlowStore plans n short lines in chunks of at most 10 through a
// slowPutStore whose put of chunk failChunk fails (none when negative).
func planSlowStore(t *testing.T, n int, failChunk int) (slowPutStore, run.Layout, PlanResult, error) {
	return planSlowStoreOf(t, n, 1, failChunk)
}

// planSlowStoreOf is planSlowStore with prompts of promptBytes.
func planSlowStoreOf(t *testing.T, n, promptBytes int, failChunk int) (slowPutStore, run.Layout, PlanResult, error) {
	t.Helper()
	files, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	dir := "file://" + filepath.ToSlash(t.TempDir())
	layout := run.NewLayout(dir, "run1")
	store := slowPutStore{Store: files, delay: 5 * time.Millisecond, manifest: layout.Manifest(),
		puts: new(atOnce), puttingAtManifest: new(atomic.Int32)}
	if failChunk >= 0 {
		store.fail = layout.Chunk(failChunk)
	}
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"r%d","prompt":"%s"}`+"\n", i+1, strings.Repeat("p", promptBytes))
	}
	writeObject(t, files, dir+"/in.jsonl", in.Bytes())
	env, c := controlActivities(store)
	val, err := env.ExecuteActivity(c.Plan, PlanInput{Run: layout, Input: dir + "/in.jsonl", Model: "m", ChunkSize: 10})
	var res PlanResult
	if err == nil {
		require.NoError(t, val.Get(&res))
	}
	return store, layout, res, err
}

// Chunk objects are stored in the background while the next ones are built:
// the manifest is written once every one is stored, and each holds exactly its
// lines.
func TestPlanChunksAreCompleteWhenStoredInTheBackground(t *testing.T) {
	store, layout, res, err := planSlowStore(t, 200, -1)
	require.NoError(t, err)
	require.Greater(t, len(res.Chunks), 2*chunkUploads)
	require.Zero(t, store.puttingAtManifest.Load(), "chunks still being stored when the manifest was written")
	next := 1
	for _, ch := range res.Chunks {
		r, err := store.Open(context.Background(), layout.Chunk(ch.Index))
		require.NoError(t, err)
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		require.Len(t, lines, ch.Requests, "chunk %d", ch.Index)
		for _, l := range lines {
			require.Contains(t, l, fmt.Sprintf(`"custom_id":"r%d"`, next), "chunk %d", ch.Index)
			next++
		}
	}
	require.Equal(t, 201, next)
}

// Small chunks are stored many at once, as their round trips rather than their
// bytes are what takes the time; large ones only as many as fit
// chunkUploadBytes, since each upload holds its chunk's buffer.
func TestPlanStoresChunksAtOnceWithinTheirBytes(t *testing.T) {
	for _, tc := range []struct {
		name         string
		lines, bytes int // lines in chunks of at most 10, and each one's prompt
		atLeast      int32
		atMost       int32
	}{
		{"small chunks", 400, 1, chunkUploads / 2, chunkUploads},
		// 10 lines of 100 KB: 1 MB a chunk, two at once within 2.5 MiB.
		{"large chunks", 100, 100_000, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, _, res, err := planSlowStoreOf(t, tc.lines, tc.bytes, -1)
			require.NoError(t, err)
			require.Equal(t, tc.lines, res.Valid)
			most := store.puts.most.Load()
			require.True(t, most >= tc.atLeast && most <= tc.atMost,
				"%d chunks stored at once at most; want %d to %d", most, tc.atLeast, tc.atMost)
		})
	}
}

// A chunk that fails to be stored fails Plan, naming the chunk, and no manifest
// is written: the run never starts on a plan with a chunk missing. The last
// chunk fails while nothing is left to write.
func TestPlanFailsWhenAChunkFailsToStore(t *testing.T) {
	_, _, ok, err := planSlowStore(t, 200, -1)
	require.NoError(t, err)
	last := len(ok.Chunks) - 1
	for _, chunk := range []int{3, last} {
		store, layout, _, err := planSlowStore(t, 200, chunk)
		require.Error(t, err)
		require.Contains(t, err.Error(), fmt.Sprintf("store chunk %d: connection reset", chunk))
		_, err = store.Stat(context.Background(), layout.Manifest())
		require.ErrorIs(t, err, blob.ErrNotFound)
	}
}

// writeObject stores data at uri.
func writeObject(tb testing.TB, store blob.Store, uri string, data []byte) {
	tb.Helper()
	require.NoError(tb, store.Put(context.Background(), uri, data))
}

// controlActivities is a test environment with the control worker's activities on store.
func controlActivities(store blob.Store) (*testsuite.TestActivityEnvironment, *Control) {
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	c := &Control{Store: store}
	env.RegisterActivity(c)
	return env, c
}
