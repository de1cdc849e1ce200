package run

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
)

// fileRun is a store on the local file system and a run's layout in a temporary
// folder of it.
func fileRun(t *testing.T) (blob.Store, Layout) {
	t.Helper()
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	return store, NewLayout("file://"+filepath.ToSlash(t.TempDir()), "r")
}

func put(t *testing.T, store blob.Store, uri, data string) {
	t.Helper()
	require.NoError(t, store.Put(context.Background(), uri, []byte(data)))
}

func TestLoadChunkKeepsTheFirstAnswerInWriteOrderAndPrefersSuccess(t *testing.T) {
	ctx := context.Background()
	store, l := fileRun(t)
	// Attempt 100 sorts before attempt 99 as text; the answers must not.
	put(t, store, l.Part(0, 99, 1), `{"custom_id":"a","text":"first"}`+"\n"+`{"custom_id":"b","error":{"code":"engine_error","message":"x"}}`+"\n")
	put(t, store, l.Part(0, 100, 1), `{"custom_id":"a","text":"zombie"}`+"\n"+`{"custom_id":"b","text":"retried"}`+"\n"+
		`{"custom_id":"c","error":{"code":"prompt_too_long","message":"x"}}`+"\n")
	put(t, store, l.Part(0, 100, 2), `{"custom_id":"c","error":{"code":"engine_error","message":"later"}}`+"\n")
	require.NoError(t, blob.WriteJSON(ctx, store, l.Death(0, 100), EngineDeath{Attempt: 100, InFlight: []string{"c"}}))
	require.NoError(t, blob.WriteJSON(ctx, store, l.Death(0, 7), EngineDeath{Attempt: 7, InFlight: []string{"b"}, Alone: true}))
	require.NoError(t, blob.WriteJSON(ctx, store, l.AttemptResult(0, 101), AttemptResult{Outcome: "cancelled"}))

	st, err := LoadChunk(ctx, store, l, 0)
	require.NoError(t, err)
	assert.Equal(t, 3, st.Parts)
	assert.Equal(t, 101, st.LastAttempt)
	assert.Equal(t, "first", st.Answers["a"].Text, "a zombie's later answer never replaces the first")
	assert.Equal(t, "retried", st.Answers["b"].Text, "a success replaces an earlier engine error")
	assert.Equal(t, "prompt_too_long", st.Answers["c"].Error.Code, "between errors, the first stays")
	require.Len(t, st.Deaths, 2)
	assert.Equal(t, 7, st.Deaths[0].Attempt, "deaths come oldest first")
	assert.True(t, st.Deaths[0].Alone)

	answers, parts, err := LoadAnswers(ctx, store, l, 0)
	require.NoError(t, err)
	assert.Len(t, answers, 3)
	assert.Equal(t, 3, parts)
}

func TestAttemptScopedNames(t *testing.T) {
	l := NewLayout("s3://b/out", "run")
	assert.Equal(t, "s3://b/out/run/chunks/00017/a03-death.json", l.Death(17, 3))
	a, p, ok := PartNumber(l.Part(17, 123, 45))
	assert.True(t, ok)
	assert.Equal(t, [2]int{123, 45}, [2]int{a, p})
	_, _, ok = PartNumber(l.Death(17, 3))
	assert.False(t, ok)
	for _, uri := range []string{l.Part(1, 12, 1), l.AttemptResult(1, 12), l.Death(1, 12)} {
		n, ok := AttemptNumber(uri)
		assert.True(t, ok, uri)
		assert.Equal(t, 12, n, uri)
	}
	_, ok = AttemptNumber(l.Chunk(1))
	assert.False(t, ok)
	assert.True(t, IsDeath(l.Death(1, 2)))
	assert.False(t, IsPart(l.Death(1, 2)))
}

// decodeTextAnswer gives what encoding/json gives for the whole line — the same
// answer, its text as a literal that decodes to the same string — or fails where
// it fails: for the lines the checkpointer writes, and for any other.
func FuzzDecodeTextAnswerIsUnmarshal(f *testing.F) {
	for _, a := range []Answer{
		{CustomID: "cand-1", Line: 7, Kind: "chat", Created: 1700000000, Text: `{"score": 7, "reason": "solid <experience>"}`,
			FinishReason: "stop", PromptTokens: 784, CompletionTokens: 309, Attempt: 1, EngineSeconds: 0.01, Cached: true},
		{CustomID: `a,"text":"b`, Line: 1, Kind: "completion", Text: "tabs\tnew\nlines \u2028 \xff é 😀 \\ \""},
		{CustomID: "e", Error: &engine.RequestError{Code: "prompt_too_long", Message: `text "x"`}, Attempt: 2},
	} {
		var line bytes.Buffer
		require.NoError(f, json.NewEncoder(&line).Encode(a))
		f.Add(line.String())
	}
	for _, s := range []string{`{"custom_id":"a","text":"x","TEXT":"y"}`, `{"custom_id":"a","text":"x","t\u0065xt":"y"}`,
		`{"x":[1,"text":"y"]}`, `{"custom_id":"abc,"text":"X""}`, `{"error":{"code":"a","text":"b"}}`, `{"custom_id":"a","text":"\ud800\u00e9\/"}`,
		`{"custom_id":"a","text":"x"} `, `{"custom_id":"a","text":"x\u12"}`, `{"custom_id":"a","text":null}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var want Answer
		wantErr := json.Unmarshal([]byte(line), &want)
		got, _, err := decodeTextAnswer([]byte(line), nil)
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		var text string
		if got.Text != nil {
			require.NoError(t, json.Unmarshal(got.Text, &text), "text %q", got.Text)
		}
		assert.Equal(t, want.Text, text)
		want.Text = ""
		assert.Equal(t, want, got.Answer)
	})
}

// Merge reads parts with LoadTextAnswers: the same answers as LoadChunk keeps,
// whether or not the chunk has a first part, and whatever that part holds.
func TestLoadTextAnswersKeepsWhatLoadChunkKeeps(t *testing.T) {
	for _, first := range []struct{ name, lines string }{
		{"no first part", ""},
		{"a first part with an error", `{"custom_id":"b","line":2,"kind":"chat","error":{"code":"engine_error","message":"x"}}` + "\n" +
			`{"custom_id":"e","line":5,"kind":"chat","text":"first of e"}` + "\n"},
		{"a first part short of a request", `{"custom_id":"e","line":5,"kind":"chat","text":"first of e"}` + "\n"},
	} {
		t.Run(first.name, func(t *testing.T) {
			ctx := context.Background()
			store, l := fileRun(t)
			if first.lines != "" {
				put(t, store, l.Part(0, 1, 1), first.lines)
			}
			put(t, store, l.Part(0, 99, 1), `{"custom_id":"a","text":"first"}`+"\n"+`{"custom_id":"b","error":{"code":"engine_error","message":"x"}}`+"\n")
			put(t, store, l.Part(0, 100, 1), `{"custom_id":"a","text":"zombie"}`+"\n"+`{"custom_id":"b","text":"retried \"<é>\""}`+"\n"+
				`{"custom_id":"c","error":{"code":"prompt_too_long","message":"x"}}`+"\n"+`{"custom_id":"e","text":"zombie of e"}`+"\n")
			put(t, store, l.Part(0, 100, 2), `{"custom_id":"c","error":{"code":"engine_error","message":"later"}}`+"\n")
			for p := 3; p < 12; p++ { // more parts than are read at once
				put(t, store, l.Part(0, 100, p), fmt.Sprintf(`{"custom_id":"d%d","line":%d,"text":"part %d"}`, p, p, p)+"\n")
			}

			st, err := LoadChunk(ctx, store, l, 0)
			require.NoError(t, err)
			got, release, err := LoadTextAnswers(ctx, store, l, ChunkPlan{Index: 0, Requests: 2, FirstLine: 1, LastLine: 5})
			require.NoError(t, err)
			defer release()
			require.Len(t, got, len(st.Answers))
			for id, want := range st.Answers {
				var text string
				if got[id].Text != nil {
					require.NoError(t, json.Unmarshal(got[id].Text, &text))
				}
				assert.Equal(t, want.Text, text, id)
				want.Text = ""
				assert.Equal(t, want, got[id].Answer, id)
			}
			assert.Equal(t, `"retried \"<é>\""`, string(got["b"].Text), "a success replaces an earlier engine error")
			if first.lines != "" {
				assert.Equal(t, `"first of e"`, string(got["e"].Text), "the first part's answer is kept")
			}
		})
	}
}

// A chunk's first part that answers each of its requests without an error is its
// answers: LoadTextAnswers returns them without listing the chunk's folder. A
// first part short of a request is not, and the folder is listed.
func TestLoadTextAnswersTakesASettlingFirstPartWithoutAListing(t *testing.T) {
	ctx := context.Background()
	store, l := fileRun(t)
	put(t, store, l.Part(0, 1, 1), `{"custom_id":"b","line":3,"kind":"chat","text":"b"}`+"\n"+
		`{"custom_id":"a","line":1,"kind":"chat","text":"a"}`+"\n")
	put(t, store, l.Part(0, 2, 1), `{"custom_id":"a","line":1,"kind":"chat","text":"zombie"}`+"\n"+
		`{"custom_id":"c","line":2,"kind":"chat","text":"c"}`+"\n")
	lists := &countedLists{Store: store}

	got, release, err := LoadTextAnswers(ctx, lists, l, ChunkPlan{Index: 0, Requests: 2, FirstLine: 1, LastLine: 3})
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, `"a"`, string(got["a"].Text), "a later attempt never replaces the first part's answer")
	assert.Equal(t, `"b"`, string(got["b"].Text))
	assert.Zero(t, lists.n.Load(), "listings of a chunk whose first part settles it")
	release()

	got, release, err = LoadTextAnswers(ctx, lists, l, ChunkPlan{Index: 0, Requests: 3, FirstLine: 1, LastLine: 3})
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, `"a"`, string(got["a"].Text))
	assert.Equal(t, `"c"`, string(got["c"].Text), "the later part's answer to the request the first part lacks")
	assert.Equal(t, int32(1), lists.n.Load(), "listings of a chunk whose first part lacks a request")
	release()
}

// countedLists counts its listings.
type countedLists struct {
	blob.Store
	n atomic.Int32
}

func (s *countedLists) List(ctx context.Context, prefix string) ([]blob.Info, error) {
	s.n.Add(1)
	return s.Store.List(ctx, prefix)
}
