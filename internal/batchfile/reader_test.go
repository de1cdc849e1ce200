package batchfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// outcome is one Next result that is not io.EOF.
type outcome struct {
	req Request
	bad *LineError
}

func readAll(t *testing.T, r io.Reader, opts Options) []outcome {
	t.Helper()
	rd := NewReader(r, opts)
	var out []outcome
	for {
		req, bad, err := rd.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out = append(out, outcome{req, bad})
	}
}

func readString(t *testing.T, s string, opts Options) []outcome {
	t.Helper()
	return readAll(t, strings.NewReader(s), opts)
}

func TestReaderCodes(t *testing.T) {
	const ok = `{"custom_id":"ok","prompt":"hi"}`
	tests := []struct {
		name    string
		input   string
		opts    Options
		line    int    // line of the bad record
		id      string // its custom_id, if readable
		code    string
		message string // the whole message, or a part of it after "line N: "
	}{
		{"invalid utf8", "\n" + `{"custom_id":"u","prompt":"caf` + "\xe9" + `"}`, Options{},
			2, "u", CodeInvalidUTF8, "line 2: not valid UTF-8 (byte 31)"},
		{"too long", `{"custom_id":"big","prompt":"` + strings.Repeat("x", 100) + `"}`, Options{MaxLineBytes: 64},
			1, "big", CodeLineTooLong, "line 1: line is 131 bytes, over the limit of 64"},
		{"too long id unreadable", `{"prompt":"` + strings.Repeat("x", 100) + `","custom_id":"late"}`, Options{MaxLineBytes: 64},
			1, "", CodeLineTooLong, "over the limit of 64"},
		{"not json", ok + "\n" + `{"custom_id":"j","prompt":`, Options{},
			2, "j", CodeInvalidJSON, "line 2: not valid JSON: unexpected end of JSON input"},
		{"not json garbage", "hello", Options{},
			1, "", CodeInvalidJSON, "line 1: not valid JSON: invalid character 'h' looking for beginning of value (byte 1)"},
		{"array", `[1,2]`, Options{}, 1, "", CodeNotObject, "line 1: JSON array, not an object"},
		{"string", `"cand-1"`, Options{}, 1, "", CodeNotObject, "line 1: JSON string, not an object"},
		{"null", `null`, Options{}, 1, "", CodeNotObject, "line 1: JSON null, not an object"},
		{"no custom_id", `{"prompt":"hi"}`, Options{}, 1, "", CodeMissingCustomID, "line 1: custom_id is missing"},
		{"empty custom_id", `{"custom_id":"","prompt":"hi"}`, Options{},
			1, "", CodeMissingCustomID, `line 1: custom_id must be a non-empty string, got ""`},
		{"number custom_id", `{"custom_id":17,"prompt":"hi"}`, Options{},
			1, "", CodeMissingCustomID, "line 1: custom_id must be a non-empty string, got 17"},
		{"duplicate", ok + "\n\n" + ok, Options{}, 3, "ok", CodeDuplicateCustomID, `line 3: custom_id "ok" already used on line 1`},
		{"unknown url", `{"custom_id":"e","method":"POST","url":"/v1/embeddings","body":{"input":"x"}}`, Options{},
			1, "e", CodeUnknownURL, `line 1: url "/v1/embeddings" is not supported; use "/v1/chat/completions" or "/v1/completions"`},
		{"url not a string", `{"custom_id":"e","url":7,"body":{"prompt":"x"}}`, Options{},
			1, "e", CodeUnknownURL, "url 7 is not supported"},
		{"method", `{"custom_id":"m","method":"GET","url":"/v1/completions","body":{"prompt":"x"}}`, Options{},
			1, "m", CodeInvalidMethod, `line 1: method must be "POST", got "GET"`},
		{"empty messages", `{"custom_id":"p","messages":[]}`, Options{}, 1, "p", CodeEmptyPrompt, "line 1: messages is an empty array"},
		{"empty prompt", `{"custom_id":"p","prompt":""}`, Options{}, 1, "p", CodeEmptyPrompt, "line 1: prompt is empty"},
		{"empty prompt array", `{"custom_id":"p","prompt":[]}`, Options{}, 1, "p", CodeEmptyPrompt, "prompt is an empty array"},
		{"empty contents", `{"custom_id":"p","messages":[{"role":"system","content":""},{"role":"user","content":[]}]}`, Options{},
			1, "p", CodeEmptyPrompt, "every message of messages is empty"},
		{"no prompt at all", `{"custom_id":"p","temperature":0.5}`, Options{}, 1, "p", CodeEmptyPrompt, "line 1: no messages or prompt"},
		{"batch without messages", `{"custom_id":"p","url":"/v1/chat/completions","body":{"max_tokens":5}}`, Options{},
			1, "p", CodeEmptyPrompt, "line 1: body.messages are missing"},
		{"batch without body", `{"custom_id":"p","url":"/v1/chat/completions"}`, Options{},
			1, "p", CodeEmptyPrompt, "body is missing"},
		{"model mismatch", `{"custom_id":"mm","body":{"model":"llama","prompt":"x"}}`, Options{Model: "gemma"},
			1, "mm", CodeModelMismatch, `line 1: body.model "llama" differs from the run's model "gemma"`},
		{"temperature type", `{"custom_id":"t","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, Options{},
			1, "t", CodeInvalidRequest, `line 1: temperature must be a number ≥ 0, got "hot"`},
		{"max_tokens negative", `{"custom_id":"t","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}],"max_tokens":-3}}`, Options{},
			1, "t", CodeInvalidRequest, "line 1: body.max_tokens must be an integer ≥ 1, got -3"},
		{"max_tokens fraction", `{"custom_id":"t","prompt":"x","max_tokens":2.5}`, Options{},
			1, "t", CodeInvalidRequest, "max_tokens must be an integer ≥ 1, got 2.5"},
		{"max tokens disagree", `{"custom_id":"t","prompt":"x","max_tokens":5,"max_completion_tokens":6}`, Options{},
			1, "t", CodeInvalidRequest, "max_tokens 5 and max_completion_tokens 6 disagree"},
		{"n zero", `{"custom_id":"t","prompt":"x","n":0}`, Options{}, 1, "t", CodeInvalidRequest, "line 1: n must be an integer ≥ 1, got 0"},
		{"n two", `{"custom_id":"t","prompt":"x","n":2}`, Options{}, 1, "t", CodeInvalidRequest, "n 2 is not supported"},
		{"top_p zero", `{"custom_id":"t","prompt":"x","top_p":0}`, Options{}, 1, "t", CodeInvalidRequest, "top_p must be a number > 0 and ≤ 1, got 0"},
		{"penalty range", `{"custom_id":"t","prompt":"x","presence_penalty":3}`, Options{}, 1, "t", CodeInvalidRequest, "presence_penalty must be a number from -2 to 2, got 3"},
		{"seed type", `{"custom_id":"t","prompt":"x","seed":"7"}`, Options{}, 1, "t", CodeInvalidRequest, `seed must be an integer, got "7"`},
		{"empty stop", `{"custom_id":"t","prompt":"x","stop":["a",""]}`, Options{}, 1, "t", CodeInvalidRequest, "stop must be a non-empty string or an array of them"},
		{"stream", `{"custom_id":"t","prompt":"x","stream":true}`, Options{}, 1, "t", CodeInvalidRequest, "stream true is not supported"},
		{"unsupported field", `{"custom_id":"t","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}],"tools":[]}}`, Options{},
			1, "t", CodeInvalidRequest, `line 1: unsupported field "body.tools"`},
		{"unsupported fields", `{"custom_id":"t","prompt":"x","logit_bias":{},"echo":true}`, Options{},
			1, "t", CodeInvalidRequest, `line 1: unsupported fields "echo", "logit_bias"`},
		{"unsupported top-level field", `{"custom_id":"t","url":"/v1/completions","body":{"prompt":"x"},"priority":1}`, Options{},
			1, "t", CodeInvalidRequest, `unsupported field "priority"`},
		{"response_format type", `{"custom_id":"t","prompt":"x","response_format":{"type":"xml"}}`, Options{},
			1, "t", CodeInvalidRequest, `response_format.type must be "text", "json_object" or "json_schema", got "xml"`},
		{"json_schema without schema", `{"custom_id":"t","prompt":"x","response_format":{"type":"json_schema","json_schema":{"name":"x"}}}`, Options{},
			1, "t", CodeInvalidRequest, "response_format.json_schema must be an object with a schema object"},
		{"messages not array", `{"custom_id":"t","messages":"hi"}`, Options{}, 1, "t", CodeInvalidRequest, `messages must be an array of message objects, got "hi"`},
		{"message without role", `{"custom_id":"t","messages":[{"role":"user","content":"a"},{"content":"b"}]}`, Options{},
			1, "t", CodeInvalidRequest, "messages[1].role must be a non-empty string"},
		{"content number", `{"custom_id":"t","messages":[{"role":"user","content":5}]}`, Options{},
			1, "t", CodeInvalidRequest, "messages[0].content must be a string or an array of content parts, got 5"},
		{"content missing", `{"custom_id":"t","messages":[{"role":"user"}]}`, Options{}, 1, "t", CodeInvalidRequest, "messages[0].content is missing"},
		{"prompt of two", `{"custom_id":"t","prompt":["a","b"]}`, Options{}, 1, "t", CodeInvalidRequest, "prompt has 2 strings"},
		{"prompt tokens", `{"custom_id":"t","prompt":[1,2,3]}`, Options{}, 1, "t", CodeInvalidRequest, "prompt must be a string, got [1,2,3]"},
		{"both", `{"custom_id":"t","prompt":"a","messages":[{"role":"user","content":"b"}]}`, Options{},
			1, "t", CodeInvalidRequest, "messages and prompt are both given"},
		{"prompt on chat url", `{"custom_id":"t","url":"/v1/chat/completions","body":{"prompt":"a"}}`, Options{},
			1, "t", CodeInvalidRequest, "body.prompt belongs to /v1/completions"},
		{"body not object", `{"custom_id":"t","url":"/v1/completions","body":"a"}`, Options{},
			1, "t", CodeInvalidRequest, `body must be an object, got "a"`},
		{"top_logprobs alone", `{"custom_id":"t","messages":[{"role":"user","content":"b"}],"top_logprobs":3}`, Options{},
			1, "t", CodeInvalidRequest, "top_logprobs needs logprobs true"},
		{"logprobs are refused, not dropped", `{"custom_id":"t","messages":[{"role":"user","content":"b"}],"logprobs":true,"top_logprobs":2}`, Options{},
			1, "t", CodeInvalidRequest, "line 1: logprobs are not returned by vbatch yet: remove logprobs/top_logprobs"},
		{"completion logprobs count is refused too", `{"custom_id":"t","url":"/v1/completions","body":{"prompt":"b","logprobs":2}}`, Options{},
			1, "t", CodeInvalidRequest, "line 1: body.logprobs are not returned by vbatch yet"},
		{"chat logprobs number", `{"custom_id":"t","messages":[{"role":"user","content":"b"}],"logprobs":3}`, Options{},
			1, "t", CodeInvalidRequest, "logprobs must be a boolean, got 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := readString(t, tc.input, tc.opts)
			var bad *LineError
			for _, o := range got {
				if o.bad != nil {
					require.Nil(t, bad, "more than one bad line: %v and %v", bad, o.bad)
					bad = o.bad
				}
			}
			require.NotNil(t, bad, "no bad line in %v", got)
			assert.Equal(t, tc.code, bad.Code)
			assert.Equal(t, tc.line, bad.Line)
			assert.Equal(t, tc.id, bad.CustomID)
			assert.Contains(t, bad.Message, tc.message)
			assert.True(t, strings.HasPrefix(bad.Message, "line "+itoa(tc.line)+": "), bad.Message)
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// A custom_id is claimed by the first line it can be read from, even a broken one,
// so the fixed line further down is reported rather than answered twice.
func TestReaderIDClaimedByBrokenLine(t *testing.T) {
	input := `{"custom_id":"a","prompt":` + "\n" +
		`{"custom_id":"a","prompt":"fixed"}` + "\n" +
		`{"custom_id":"b","prompt":"x","n":0}` + "\n" +
		`{"custom_id":"b","prompt":"y"}` + "\n"
	got := readString(t, input, Options{})
	require.Len(t, got, 4)
	assert.Equal(t, CodeInvalidJSON, got[0].bad.Code)
	assert.Equal(t, `line 2: custom_id "a" already used on line 1`, got[1].bad.Message)
	assert.Equal(t, CodeInvalidRequest, got[2].bad.Code)
	assert.Equal(t, `line 4: custom_id "b" already used on line 3`, got[3].bad.Message)
}

func TestReaderAcceptedForms(t *testing.T) {
	schemaFormat := `{"type":"json_schema","json_schema":{"name":"e","strict":true,"schema":{"type":"object"}}}`
	tests := []struct {
		name string
		line string
		want Request
	}{
		{
			name: "openai batch chat",
			line: `{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"gemma",` +
				`"messages":[ {"role":"system","content":"be brief"}, {"role":"user","content":[{"type":"text","text":"hi"}]} ],` +
				`"max_tokens":2000,"temperature":0.7,"top_p":0.9,"response_format":` + schemaFormat + `}}`,
			want: Request{CustomID: "c1", Line: 1, Kind: KindChat,
				Messages: json.RawMessage(`[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}]`),
				Sampling: Sampling{MaxTokens: ptr(2000), Temperature: ptr(0.7), TopP: ptr(0.9), ResponseFormat: json.RawMessage(schemaFormat)}},
		},
		{
			name: "openai batch completion without method",
			line: `{"custom_id":"c2","url":"/v1/completions","body":{"prompt":"Once","max_completion_tokens":16,"stop":"\n","seed":-5}}`,
			want: Request{CustomID: "c2", Line: 1, Kind: KindCompletion, Prompt: "Once",
				Sampling: Sampling{MaxTokens: ptr(16), Stop: []string{"\n"}, Seed: ptr(int64(-5))}},
		},
		{
			name: "batch form without url: the body tells",
			line: `{"custom_id":"c3","body":{"messages":[{"role":"user","content":"q"}],"user":"u1","metadata":{"k":"v"},"stream":false}}`,
			want: Request{CustomID: "c3", Line: 1, Kind: KindChat, Messages: json.RawMessage(`[{"role":"user","content":"q"}]`)},
		},
		{
			name: "short chat with every sampling field",
			line: `{"custom_id":"c4","messages":[{"role":"user","content":"q"}],"max_tokens":10,"temperature":0,"top_p":1,` +
				`"top_k":-1,"n":1,"seed":42,"stop":["a","b"],"presence_penalty":-2,"frequency_penalty":1.5,` +
				`"response_format":{"type":"json_object"},"model":null}`,
			want: Request{CustomID: "c4", Line: 1, Kind: KindChat, Messages: json.RawMessage(`[{"role":"user","content":"q"}]`),
				Sampling: Sampling{MaxTokens: ptr(10), Temperature: ptr(0.0), TopP: ptr(1.0), TopK: ptr(-1), N: ptr(1),
					Seed: ptr(int64(42)), Stop: []string{"a", "b"}, PresencePenalty: ptr(-2.0), FrequencyPenalty: ptr(1.5),
					ResponseFormat: json.RawMessage(`{"type":"json_object"}`)}},
		},
		{
			name: "short prompt as an array of one",
			line: `{"custom_id":"c5","prompt":["only one"],"max_tokens":2000.0}`,
			want: Request{CustomID: "c5", Line: 1, Kind: KindCompletion, Prompt: "only one", Sampling: Sampling{MaxTokens: ptr(2000)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := readString(t, tc.line+"\n", Options{Model: "gemma"})
			require.Len(t, got, 1)
			require.Nil(t, got[0].bad)
			assert.Equal(t, tc.want, got[0].req)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestReaderDefaultsFillOnlyMissing(t *testing.T) {
	defaults := Sampling{MaxTokens: ptr(2000), Temperature: ptr(0.7), TopP: ptr(0.9), Stop: []string{"END"},
		ResponseFormat: json.RawMessage(`{"type":"json_object"}`)}
	input := `{"custom_id":"given","prompt":"x","max_tokens":50,"temperature":0,"stop":"."}` + "\n" +
		`{"custom_id":"bare","prompt":"x"}` + "\n"
	got := readString(t, input, Options{Defaults: defaults})
	require.Len(t, got, 2)

	given := got[0].req.Sampling
	assert.Equal(t, 50, *given.MaxTokens)
	assert.Equal(t, 0.0, *given.Temperature, "an explicit 0 is not replaced by the default")
	assert.Equal(t, 0.9, *given.TopP)
	assert.Equal(t, []string{"."}, given.Stop)
	assert.JSONEq(t, `{"type":"json_object"}`, string(given.ResponseFormat))

	bare := got[1].req.Sampling
	assert.Equal(t, 2000, *bare.MaxTokens)
	assert.Equal(t, 0.7, *bare.Temperature)
	assert.Equal(t, []string{"END"}, bare.Stop)
	assert.Nil(t, bare.Seed)

	// The request owns its values: changing one does not change the defaults.
	*bare.MaxTokens = 1
	bare.Stop[0] = "changed"
	assert.Equal(t, 2000, *defaults.MaxTokens)
	assert.Equal(t, "END", defaults.Stop[0])
}

func TestReaderModel(t *testing.T) {
	input := `{"custom_id":"same","body":{"model":"gemma","prompt":"x"}}` + "\n" +
		`{"custom_id":"none","prompt":"x"}` + "\n" +
		`{"custom_id":"other","model":"llama","prompt":"x"}` + "\n"
	got := readString(t, input, Options{Model: "gemma"})
	require.Len(t, got, 3)
	assert.Nil(t, got[0].bad)
	assert.Nil(t, got[1].bad)
	require.NotNil(t, got[2].bad)
	assert.Equal(t, CodeModelMismatch, got[2].bad.Code)

	// A run without a model accepts any.
	for _, o := range readString(t, input, Options{}) {
		assert.Nil(t, o.bad)
	}
}

// A 5 MB line is rejected without stopping the file: the next line is read whole.
func TestReaderLongLineThenValid(t *testing.T) {
	long := `{"custom_id":"huge","prompt":"` + strings.Repeat("a", 5<<20) + `"}`
	input := long + "\n" + `{"custom_id":"after","prompt":"still read"}` + "\n"
	rd := NewReader(strings.NewReader(input), Options{})
	_, bad, err := rd.Next()
	require.NoError(t, err)
	require.NotNil(t, bad)
	assert.Equal(t, CodeLineTooLong, bad.Code)
	assert.Equal(t, "huge", bad.CustomID)
	assert.Equal(t, "line 1: line is 5242912 bytes, over the limit of 1048576", bad.Message)

	req, bad, err := rd.Next()
	require.NoError(t, err)
	require.Nil(t, bad)
	assert.Equal(t, "after", req.CustomID)
	assert.Equal(t, 2, req.Line)
	assert.Equal(t, "still read", req.Prompt)
	_, _, err = rd.Next()
	assert.Equal(t, io.EOF, err)
	assert.Equal(t, 2, rd.Lines())
}

// A line exactly at the limit is accepted; one byte more is not. The line ending
// does not count.
func TestReaderLimitBoundary(t *testing.T) {
	line := func(n int) string {
		head := `{"custom_id":"x` + itoa(n) + `","prompt":"`
		return head + strings.Repeat("p", n-len(head)-2) + `"}`
	}
	atLimit, over := line(100), line(101)
	require.Len(t, atLimit, 100)
	// Each ending on the last line; "" is a file without a final newline.
	for _, ending := range []string{"\n", "\r\n", "", "\r"} {
		got := readString(t, atLimit+"\r\n"+over+ending, Options{MaxLineBytes: 100})
		require.Len(t, got, 2)
		assert.Nil(t, got[0].bad, "ending %q", ending)
		require.NotNil(t, got[1].bad, "ending %q", ending)
		assert.Equal(t, CodeLineTooLong, got[1].bad.Code)

		got = readString(t, over+"\n"+atLimit+ending, Options{MaxLineBytes: 100})
		require.Len(t, got, 2)
		require.NotNil(t, got[0].bad, "ending %q", ending)
		assert.Equal(t, CodeLineTooLong, got[0].bad.Code)
		assert.Nil(t, got[1].bad, "ending %q", ending)
	}
}

// meteredReader yields a long line lazily and records the largest heap seen while
// it is read, so the test sees whether the reader buffers the line.
type meteredReader struct {
	r       io.Reader
	read    int64
	maxHeap uint64
}

func (m *meteredReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	before := m.read
	m.read += int64(n)
	if m.read/(8<<20) != before/(8<<20) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m.maxHeap = max(m.maxHeap, ms.HeapInuse)
	}
	return n, err
}

// repeatReader yields n copies of one byte without holding them.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return int(k), nil
}

func TestReaderHundredMegabyteLineMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 100 MB")
	}
	src := &meteredReader{r: io.MultiReader(
		strings.NewReader(`{"custom_id":"giant","prompt":"`),
		&repeatReader{b: 'z', n: 100 << 20},
		strings.NewReader("\"}\r\n{\"custom_id\":\"next\",\"prompt\":\"ok\"}\r\n"),
	)}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	got := readAll(t, src, Options{})
	require.Len(t, got, 2)
	assert.Equal(t, CodeLineTooLong, got[0].bad.Code)
	assert.Equal(t, "giant", got[0].bad.CustomID)
	assert.Equal(t, "next", got[1].req.CustomID)
	require.NotZero(t, src.maxHeap)
	grew := int64(src.maxHeap) - int64(base.HeapInuse)
	assert.Less(t, grew, int64(16<<20), "heap grew by %d bytes while reading a 100 MB line", grew)
}

func TestReaderCRLFAndBlankLines(t *testing.T) {
	input := "\xef\xbb\xbf" + `{"custom_id":"a","prompt":"one"}` + "\r\n" +
		"\r\n" +
		"   \t\r\n" +
		`{"custom_id":"b","messages":[{"role":"user","content":"two"}]}` + "\r\n" +
		`[]` + "\r\n" +
		`{"custom_id":"c","prompt":"three"}` // no line ending at the end
	rd := NewReader(strings.NewReader(input), Options{})
	var got []outcome
	for {
		req, bad, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, outcome{req, bad})
	}
	require.Len(t, got, 4)
	assert.Equal(t, "a", got[0].req.CustomID)
	assert.Equal(t, 1, got[0].req.Line)
	assert.Equal(t, "one", got[0].req.Prompt, "no \\r left in the value")
	assert.Equal(t, "b", got[1].req.CustomID)
	assert.Equal(t, 4, got[1].req.Line, "blank lines count for line numbers")
	assert.Equal(t, "line 5: JSON array, not an object", got[2].bad.Message)
	assert.Equal(t, "c", got[3].req.CustomID)
	assert.Equal(t, 6, got[3].req.Line)
	assert.Equal(t, 6, rd.Lines())
}

func TestReaderEmptyInput(t *testing.T) {
	assert.Empty(t, readString(t, "", Options{}))
	assert.Empty(t, readString(t, "\n\n  \n", Options{}))
}

// failingReader returns its data, then an error.
type failingReader struct {
	data string
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReaderReadFailure(t *testing.T) {
	boom := errors.New("connection reset")
	rd := NewReader(&failingReader{data: `{"custom_id":"a","prompt":"x"}` + "\n" + `{"custom_id":"b"`, err: boom}, Options{})
	req, bad, err := rd.Next()
	require.NoError(t, err)
	require.Nil(t, bad)
	assert.Equal(t, "a", req.CustomID)

	_, _, err = rd.Next()
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "read line 2: connection reset", err.Error())
	_, _, err2 := rd.Next()
	assert.Equal(t, err, err2, "the failure repeats")
}

// A request owns its bytes: reading the next lines does not change it.
func TestRequestsOutliveTheLine(t *testing.T) {
	input := `{"custom_id":"a","messages":[{"role":"user","content":"first"}],"response_format":{"type":"json_object"}}` + "\n" +
		`{"custom_id":"b","messages":[{"role":"user","content":"SECOND"}],"response_format":{"type":"text"}}` + "\n"
	got := readString(t, input, Options{})
	require.Len(t, got, 2)
	assert.Equal(t, `[{"role":"user","content":"first"}]`, string(got[0].req.Messages))
	assert.Equal(t, `{"type":"json_object"}`, string(got[0].req.Sampling.ResponseFormat))
	assert.Equal(t, `[{"role":"user","content":"SECOND"}]`, string(got[1].req.Messages))
}

// A valid request is the line format of plan chunks: it must survive a round trip.
func TestRequestRoundTrip(t *testing.T) {
	line := `{"custom_id":"r","messages":[{"role":"user","content":"<b>&</b>"}],"temperature":0.1,"stop":["x"],` +
		`"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}`
	got := readString(t, line, Options{})
	require.Len(t, got, 1)
	require.Nil(t, got[0].bad)
	b, err := json.Marshal(got[0].req)
	require.NoError(t, err)
	var back Request
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, got[0].req.CustomID, back.CustomID)
	assert.Equal(t, got[0].req.Sampling.Stop, back.Sampling.Stop)
	assert.JSONEq(t, string(got[0].req.Messages), string(back.Messages))
	assert.True(t, bytes.Contains(got[0].req.Messages, []byte("<b>&</b>")), "messages keep the bytes as given")
}

func TestOffsetCountsTheBytesOfTheLinesRead(t *testing.T) {
	line := `{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"prompt":"p"}}`
	input := "\xef\xbb\xbf" + line + "\r\n\n" + strings.Replace(line, `"a"`, `"b"`, 1)
	r := NewReader(strings.NewReader(input), Options{})
	_, _, err := r.Next()
	if err != nil || r.Offset() != int64(3+len(line)+2) {
		t.Fatalf("after the first line: offset %d, err %v; want %d", r.Offset(), err, 3+len(line)+2)
	}
	_, _, err = r.Next()
	if err != nil || r.Offset() != int64(len(input)) {
		t.Fatalf("after the last line: offset %d, err %v; want the whole input, %d", r.Offset(), err, len(input))
	}
}
