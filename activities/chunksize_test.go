package activities

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// planLines runs Plan over the given chat lines (the user message of each) and
// returns its chunks, after checking that they hold every line once, in order.
func planLines(t *testing.T, contents []string, maxTokens int, in PlanInput) []run.ChunkPlan {
	t.Helper()
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	dir := "file://" + filepath.ToSlash(t.TempDir())
	var b strings.Builder
	for i, c := range contents {
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":%q}],"max_tokens":%d}}`+"\n",
			i+1, c, maxTokens)
	}
	in.Input = dir + "/in.jsonl"
	in.Run = run.NewLayout(dir, "run1")
	in.Model = "m"
	writeObject(t, store, in.Input, []byte(b.String()))

	env, c := controlActivities(store)
	val, err := env.ExecuteActivity(c.Plan, in)
	require.NoError(t, err)
	var res PlanResult
	require.NoError(t, val.Get(&res))

	next, total := 1, 0
	for i, ch := range res.Chunks {
		require.Equal(t, i, ch.Index)
		require.Equal(t, next, ch.FirstLine, "chunk %d starts where the last ended", i)
		require.Equal(t, ch.LastLine-ch.FirstLine+1, ch.Requests)
		next = ch.LastLine + 1
		total += ch.Requests
	}
	require.Equal(t, len(contents), total, "every request in exactly one chunk")
	var m run.Manifest
	require.NoError(t, blob.ReadJSON(context.Background(), store, in.Run.Manifest(), &m))
	require.Equal(t, res.Chunks, m.Chunks, "the manifest records the same chunks")
	return res.Chunks
}

func repeat(n int, content string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = content
	}
	return out
}

func TestChunksAreBalancedByEstimatedTokensNotLines(t *testing.T) {
	// 200 short prompts, then 200 prompts ten times longer: the long ones cost more
	// engine time each, so their chunks hold fewer of them.
	short, long := strings.Repeat("s", 400), strings.Repeat("l", 4000)
	contents := append(repeat(200, short), repeat(200, long)...)
	chunks := planLines(t, contents, 100, PlanInput{ChunkSize: 1000, ChunkTokens: 20_000})

	first, last := chunks[0], chunks[len(chunks)-2] // the very last chunk holds what is left
	assert.Greater(t, first.Requests, 3*last.Requests, "short-prompt chunks hold more requests than long-prompt ones")
	for _, c := range chunks[:len(chunks)-1] {
		// A chunk ends with the request that reaches its target: at most one
		// request (≈ 1,100 tokens here) over it.
		assert.GreaterOrEqual(t, c.EstimatedTokens, int64(20_000), "chunk %d", c.Index)
		assert.Less(t, c.EstimatedTokens, int64(21_200), "chunk %d", c.Index)
	}
}

func TestChunkSizeCapsTheLinesOfAChunk(t *testing.T) {
	chunks := planLines(t, repeat(95, "hello"), 10, PlanInput{ChunkSize: 10, ChunkTokens: 1 << 40})
	require.Len(t, chunks, 10)
	for _, c := range chunks[:9] {
		assert.Equal(t, 10, c.Requests)
	}
	assert.Equal(t, 5, chunks[9].Requests)
}

func TestDefaultChunkTokensAreChunkSizeRequestsOfTheMeanSize(t *testing.T) {
	// Without a token target and without tail cutting, uniform requests make
	// chunks of exactly chunk_size lines, as before tokens counted.
	chunks := planLines(t, repeat(1000, strings.Repeat("x", 1000)), 300, PlanInput{ChunkSize: 100})
	require.Len(t, chunks, 10)
	for _, c := range chunks {
		assert.Equal(t, 100, c.Requests, "chunk %d", c.Index)
	}
}

func TestTheTailIsCutFinerDownToTheMinimum(t *testing.T) {
	const n, size, engines = 4000, 100, 4
	chunks := planLines(t, repeat(n, strings.Repeat("x", 1000)), 300, PlanInput{ChunkSize: size, Engines: engines})
	full := chunks[0].EstimatedTokens
	perRequest := full / size
	minimum := full / minChunkDivisor

	assert.Equal(t, size, chunks[0].Requests, "while much work is left, chunks are full")
	assert.Greater(t, len(chunks), n/size, "the tail adds chunks")
	left := int64(n) * perRequest
	for i, c := range chunks {
		// Each chunk is a share of the work left at its start, between the
		// minimum and a full chunk, give or take the request that crossed it.
		want := chunkTarget(left, full, engines)
		if i < len(chunks)-1 {
			assert.InDelta(t, want, c.EstimatedTokens, float64(perRequest), "chunk %d of %d", i, len(chunks))
		}
		if i > 0 {
			assert.LessOrEqual(t, c.EstimatedTokens, chunks[i-1].EstimatedTokens, "chunk %d is no larger than the one before", i)
		}
		left -= c.EstimatedTokens
	}
	last := chunks[len(chunks)-2]
	assert.InDelta(t, minimum, last.EstimatedTokens, float64(perRequest), "the last chunks are at the minimum")
	// The last chunk each engine takes is a minimum one: what engines can finish
	// apart by.
	for _, c := range chunks[len(chunks)-engines:] {
		assert.LessOrEqual(t, c.EstimatedTokens, minimum+perRequest, "chunk %d", c.Index)
	}
}

func TestChunkTarget(t *testing.T) {
	for _, c := range []struct {
		name             string
		left, full, want int64
		engines          int
	}{
		{"much work left: a full chunk", 1_000_000, 10_000, 10_000, 4},
		{"near the end: a share of what is left", 80_000, 10_000, 5_000, 4},
		{"at the very end: the minimum", 1_000, 10_000, 625, 4},
		{"more engines cut finer", 80_000, 10_000, 2_500, 8},
		{"a tiny full chunk still has a minimum of one token", 0, 3, 1, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, chunkTarget(c.left, c.full, c.engines))
		})
	}
}
