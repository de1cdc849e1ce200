package batchfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lineResult is what a reader says of one line, comparable across readers.
type lineResult struct {
	Request Request
	Bad     *LineError
	Offset  int64
	Encoded string
}

// sequential reads data with Reader.Next, the reference.
func sequential(data []byte, opts Options) ([]lineResult, error) {
	rd := NewReader(bytes.NewReader(data), opts)
	var out []lineResult
	for {
		req, bad, err := rd.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		o := lineResult{Request: req, Bad: bad, Offset: rd.Offset()}
		if bad == nil {
			b, _ := json.Marshal(req)
			o.Encoded = string(b) + "\n"
		}
		out = append(out, o)
	}
}

func parallel(src io.Reader, opts Options, workers int) ([]lineResult, error) {
	var out []lineResult
	err := ReadParallel(context.Background(), src, opts, workers, func(it *Item) error {
		out = append(out, lineResult{Request: it.Request.owned(), Bad: it.Bad, Offset: it.Offset, Encoded: string(it.Encoded)})
		return nil
	})
	return out, err
}

// FuzzReadParallel: ReadParallel says of every line exactly what Reader.Next says,
// in the same order, with the same offsets, and encodes each valid request as
// json.Marshal does.
func FuzzReadParallel(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint16(0), uint8(1))
		f.Add([]byte(s), uint16(64), uint8(3))
	}
	// What encoding/json escapes in messages: <, >, & and U+2028, U+2029.
	f.Add([]byte(`{"custom_id":"h","messages":[{"role":"user","content":"<a href='x'>&amp;`+"\u2028\u2029"+`</a> \u2028"}]}`), uint16(0), uint8(2))
	f.Add([]byte(`{"custom_id":"rf","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"<&>","schema":{"type":"object"}}}}`), uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, workers uint8) {
		opts := Options{MaxLineBytes: int(limit) % 4096, Model: "m"}
		want, err := sequential(data, opts)
		require.NoError(t, err)
		got, err := parallel(bytes.NewReader(data), opts, int(workers%8))
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// manyLines is an input of n lines over many batches: valid ones, duplicates of
// ids first seen several batches earlier (on valid and on broken lines), blank
// lines, CRLF, bad lines of each early kind and lines over a 300-byte limit.
func manyLines(n int) []byte {
	var b strings.Builder
	b.WriteString("\xef\xbb\xbf")
	for i := 1; i <= n; i++ {
		switch {
		case i%97 == 0:
			fmt.Fprintf(&b, `{"custom_id":"r%d","prompt":"dup"}`+"\n", i-500) // a duplicate, when i > 500
		case i%89 == 0:
			fmt.Fprintf(&b, `{"custom_id":"r%d","prompt":"broken`+"\n", i)
		case i%83 == 0:
			fmt.Fprintf(&b, `{"custom_id":"r%d","prompt":"%s"}`+"\n", i, strings.Repeat("long ", 80))
		case i%79 == 0:
			b.WriteString("  \r\n")
		case i%73 == 0:
			fmt.Fprintf(&b, `{"custom_id":"r%d","prompt":"caf`+"\xe9"+`"}`+"\n", i)
		case i%71 == 0:
			fmt.Fprintf(&b, `{"custom_id":"r%d","prompt":""}`+"\r\n", i-700) // bad request and maybe a duplicate: the duplicate wins
		default:
			fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"q%d <b> & `+"\u2028 \u2029 \\u2028"+`"}],"max_tokens":%d}}`+"\n", i, i, i%50+1)
		}
	}
	b.WriteString(`{"custom_id":"last","prompt":"no newline"}`)
	return []byte(b.String())
}

func TestReadParallelSaysWhatNextSays(t *testing.T) {
	data := manyLines(5000)
	opts := Options{MaxLineBytes: 300}
	want, err := sequential(data, opts)
	require.NoError(t, err)
	codes := map[string]int{}
	for _, o := range want {
		if o.Bad != nil {
			codes[o.Bad.Code]++
		}
	}
	for _, code := range []string{CodeDuplicateCustomID, CodeInvalidJSON, CodeLineTooLong, CodeInvalidUTF8, CodeEmptyPrompt} {
		require.Positive(t, codes[code], "the input has %s lines", code)
	}
	for _, workers := range []int{1, 2, 7} {
		got, err := parallel(bytes.NewReader(data), opts, workers)
		require.NoError(t, err)
		require.Equal(t, want, got, "%d workers", workers)
	}
}

func TestReadParallelReportsAReadFailureAfterTheLinesBeforeIt(t *testing.T) {
	boom := errors.New("connection reset")
	data := manyLines(1000)
	got, err := parallel(&failingReader{data: string(data[:len(data)/2]), err: boom}, Options{}, 3)
	require.ErrorIs(t, err, boom)
	want, wantErr := sequential(data[:len(data)/2], Options{})
	require.NoError(t, wantErr)
	// The half-read last line is not handed over: the read failed inside it.
	assert.Equal(t, want[:len(want)-1], got)
	assert.Contains(t, err.Error(), fmt.Sprintf("read line %d:", want[len(want)-1].lineNo()))
}

func (o lineResult) lineNo() int {
	if o.Bad != nil {
		return o.Bad.Line
	}
	return o.Request.Line
}

func TestReadParallelStopsAtTheFirstErrorOfEach(t *testing.T) {
	stop := errors.New("chunk store full")
	calls := 0
	err := ReadParallel(context.Background(), bytes.NewReader(manyLines(5000)), Options{}, 4, func(*Item) error {
		calls++
		if calls == 1000 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	assert.Equal(t, 1000, calls, "no line after the error")
}
