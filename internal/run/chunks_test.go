package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
)

// RequestRefs reads what EachRequest reads of each line, whatever the custom_id holds
// and whatever order the line's keys come in.
func TestRequestRefsReadWhatTheFullDecodeReads(t *testing.T) {
	ctx := context.Background()
	store, l := fileRun(t)
	var chunk bytes.Buffer
	enc := json.NewEncoder(&chunk) // as Plan writes chunks
	for i, id := range []string{"plain", `quote " back \ slash`, "<html> & é 日本 😀", "\u2028\t\n\x01", "", "line\"kind\":\"x"} {
		req := batchfile.Request{CustomID: id, Line: 10*i + 1, Kind: batchfile.KindChat,
			Messages: json.RawMessage(`[{"role":"user","content":"\"custom_id\":\"not this\""}]`)}
		if i%2 == 1 {
			req.Kind, req.Messages, req.Prompt = batchfile.KindCompletion, nil, `"kind":"chat"`
		}
		require.NoError(t, enc.Encode(req))
	}
	// A line in another key order is decoded whole.
	chunk.WriteString(`{"kind":"completion","line":99,"prompt":"p","custom_id":"reordered"}` + "\n")
	put(t, store, l.Chunk(0), chunk.String())

	var want []RequestRef
	require.NoError(t, EachRequest(ctx, store, l, 0, func(r batchfile.Request) error {
		want = append(want, RequestRef{CustomID: r.CustomID, Line: r.Line, Kind: r.Kind})
		return nil
	}))
	require.Len(t, want, 7)
	got, err := RequestRefs(ctx, store, l, 0)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	_, err = RequestRefs(ctx, store, l, 1)
	assert.True(t, errors.Is(err, blob.ErrNotFound), "missing chunk: %v", err)
	put(t, store, l.Chunk(2), `{"custom_id":"a","line":1,"kind":"chat"}`+"\n"+`{"custom_id":`+"\n")
	_, err = RequestRefs(ctx, store, l, 2)
	assert.ErrorContains(t, err, "chunk 2")
}
