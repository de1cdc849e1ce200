package synth

import (
	"bytes"
	"encoding/json"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/batchfile"
)

func write(t *testing.T, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, WriteCandidates(&buf, opts))
	return buf.Bytes()
}

// Every line is a valid batch line for the run's model, with a unique id.
func TestCandidatesPassTheReader(t *testing.T) {
	data := write(t, Options{N: 500, Seed: 7, Model: "google/gemma-3-4b-it"})
	assert.Equal(t, 500, bytes.Count(data, []byte("\n")))

	rd := batchfile.NewReader(bytes.NewReader(data), batchfile.Options{Model: "google/gemma-3-4b-it"})
	ids := map[string]bool{}
	var totalContent, minContent, maxContent int
	for {
		req, bad, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Nil(t, bad, "line rejected: %v", bad)
		assert.False(t, ids[req.CustomID], "id %s twice", req.CustomID)
		ids[req.CustomID] = true
		assert.Equal(t, batchfile.KindChat, req.Kind)
		assert.Equal(t, 2000, *req.Sampling.MaxTokens)
		assert.Equal(t, 0.7, *req.Sampling.Temperature)
		assert.Equal(t, 0.9, *req.Sampling.TopP)

		var msgs []struct{ Role, Content string }
		require.NoError(t, json.Unmarshal(req.Messages, &msgs))
		require.Len(t, msgs, 2)
		assert.Equal(t, "system", msgs[0].Role)
		assert.Equal(t, systemPrompt, msgs[0].Content)
		assert.Equal(t, "user", msgs[1].Role)
		n := len(msgs[0].Content) + len(msgs[1].Content)
		totalContent += n
		if minContent == 0 || n < minContent {
			minContent = n
		}
		maxContent = max(maxContent, n)
	}
	assert.Len(t, ids, 500)
	assert.True(t, ids["cand-00001"] && ids["cand-00500"], "ids run from cand-00001 to cand-00500")

	// The seed's prompts averaged 788 tokens, about 3,150 bytes; résumés vary.
	avg := totalContent / 500
	assert.GreaterOrEqual(t, avg, 2800)
	assert.LessOrEqual(t, avg, 3500)
	assert.Less(t, minContent, avg*85/100, "some candidates are well below the mean")
	assert.Greater(t, maxContent, avg*115/100, "some candidates are well above the mean")
	assert.GreaterOrEqual(t, minContent, avg*70/100)
	assert.LessOrEqual(t, maxContent, avg*130/100)
}

// The shared system prompt is byte-identical on every line, so prefix caches hit.
func TestSystemPromptBytesShared(t *testing.T) {
	data := write(t, Options{N: 50, Seed: 3})
	encoded, err := json.Marshal(systemPrompt)
	require.NoError(t, err)
	prefix := []byte(`"messages":[{"role":"system","content":` + string(encoded) + `},{"role":"user","content":"`)
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	require.Len(t, lines, 50)
	for i, line := range lines {
		assert.True(t, bytes.Contains(line, prefix), "line %d lacks the shared prefix", i+1)
		assert.False(t, bytes.Contains(line, []byte(`"model"`)), "no model given, none written")
	}
}

func TestCandidatesDeterministic(t *testing.T) {
	a := write(t, Options{N: 200, Seed: 42})
	b := write(t, Options{N: 200, Seed: 42})
	assert.Equal(t, a, b, "same options, same bytes")

	c := write(t, Options{N: 200, Seed: 43})
	assert.NotEqual(t, a, c, "another seed, other candidates")

	// Candidate i does not depend on N: a prefix of a longer run is the shorter run.
	longer := write(t, Options{N: 300, Seed: 42})
	assert.True(t, bytes.HasPrefix(longer, a))

	// Résumés differ between candidates of one run.
	lines := strings.Split(string(a), "\n")
	assert.NotEqual(t, lines[0][len(`{"custom_id":"cand-00001"`):], lines[1][len(`{"custom_id":"cand-00002"`):])
}

func TestCandidatesOptions(t *testing.T) {
	data := write(t, Options{N: 1, Seed: 1, Model: "m", MaxTokens: 512})
	var line struct {
		CustomID string `json:"custom_id"`
		Method   string `json:"method"`
		URL      string `json:"url"`
		Body     struct {
			Model          string `json:"model"`
			MaxTokens      int    `json:"max_tokens"`
			ResponseFormat struct {
				Type       string `json:"type"`
				JSONSchema struct {
					Name   string          `json:"name"`
					Strict bool            `json:"strict"`
					Schema json.RawMessage `json:"schema"`
				} `json:"json_schema"`
			} `json:"response_format"`
		} `json:"body"`
	}
	require.NoError(t, json.Unmarshal(data, &line))
	assert.Equal(t, "cand-00001", line.CustomID)
	assert.Equal(t, "POST", line.Method)
	assert.Equal(t, "/v1/chat/completions", line.URL)
	assert.Equal(t, "m", line.Body.Model)
	assert.Equal(t, 512, line.Body.MaxTokens)
	assert.Equal(t, "json_schema", line.Body.ResponseFormat.Type)
	assert.Equal(t, "candidate_evaluation", line.Body.ResponseFormat.JSONSchema.Name)
	assert.True(t, line.Body.ResponseFormat.JSONSchema.Strict)
	assert.JSONEq(t, string(EvaluationSchema()), string(line.Body.ResponseFormat.JSONSchema.Schema))

	assert.Empty(t, write(t, Options{N: 0}))
	assert.Error(t, WriteCandidates(io.Discard, Options{N: -1}))
}

// With a least max_tokens each line draws its own, over the whole range, and the
// lines are otherwise the lines of a fixed max_tokens.
func TestMaxTokensDrawnWithinTheRange(t *testing.T) {
	const n = 2000
	drawn := bytes.Split(bytes.TrimSuffix(write(t, Options{N: n, Seed: 3, MaxTokens: 96, MinMaxTokens: 32}), []byte("\n")), []byte("\n"))
	fixed := bytes.Split(bytes.TrimSuffix(write(t, Options{N: n, Seed: 3, MaxTokens: 96}), []byte("\n")), []byte("\n"))
	require.Len(t, drawn, n)
	seen, sum := map[int]bool{}, 0
	for i, raw := range drawn {
		var line, fixedLine struct {
			Body struct {
				MaxTokens int                 `json:"max_tokens"`
				Messages  []map[string]string `json:"messages"`
			} `json:"body"`
		}
		require.NoError(t, json.Unmarshal(raw, &line))
		require.NoError(t, json.Unmarshal(fixed[i], &fixedLine))
		require.GreaterOrEqual(t, line.Body.MaxTokens, 32)
		require.LessOrEqual(t, line.Body.MaxTokens, 96)
		require.Equal(t, fixedLine.Body.Messages, line.Body.Messages, "line %d: the same prompt", i+1)
		require.Equal(t, 96, fixedLine.Body.MaxTokens)
		seen[line.Body.MaxTokens] = true
		sum += line.Body.MaxTokens
	}
	assert.Len(t, seen, 96-32+1, "every value of the range drawn")
	assert.InDelta(t, 64, float64(sum)/n, 2, "the mean is the range's middle")

	assert.ErrorContains(t, WriteCandidates(io.Discard, Options{N: 1, MaxTokens: 64, MinMaxTokens: 65}), "least max tokens is 65")
	assert.Error(t, WriteCandidates(io.Discard, Options{N: 1, MaxTokens: 64, MinMaxTokens: -1}))
}

// schemaNode is the part of JSON schema the evaluation uses.
type schemaNode struct {
	Type                 string                `json:"type"`
	Enum                 []string              `json:"enum"`
	Properties           map[string]schemaNode `json:"properties"`
	Required             []string              `json:"required"`
	AdditionalProperties *bool                 `json:"additionalProperties"`
}

func TestEvaluationSchema(t *testing.T) {
	var root schemaNode
	require.NoError(t, json.Unmarshal(EvaluationSchema(), &root))
	assert.Equal(t, "object", root.Type)
	assert.ElementsMatch(t, []string{"recommendation", "reasoning", "analysis"}, root.Required)
	assert.Equal(t, []string{"Strong Yes", "Yes", "Maybe", "No", "Strong No"}, root.Properties["recommendation"].Enum)
	assert.Equal(t, "string", root.Properties["reasoning"].Type)

	analysis := root.Properties["analysis"]
	assert.ElementsMatch(t, []string{"educational_pedigree", "company_pedigree", "trajectory", "is_software_engineer"}, analysis.Required)
	for _, name := range []string{"educational_pedigree", "company_pedigree", "trajectory"} {
		r := analysis.Properties[name]
		assert.ElementsMatch(t, []string{"rating", "reasoning"}, r.Required, name)
		assert.Equal(t, []string{"Great", "Good", "Okay", "Poor"}, r.Properties["rating"].Enum, name)
	}
	swe := analysis.Properties["is_software_engineer"]
	assert.ElementsMatch(t, []string{"value", "reasoning"}, swe.Required)
	assert.Equal(t, "boolean", swe.Properties["value"].Type)

	// Strict mode: every object closed and all its properties required.
	var check func(path string, n schemaNode)
	check = func(path string, n schemaNode) {
		if n.Type != "object" {
			return
		}
		require.NotNil(t, n.AdditionalProperties, path)
		assert.False(t, *n.AdditionalProperties, path)
		assert.Len(t, n.Required, len(n.Properties), path)
		for k, p := range n.Properties {
			check(path+"."+k, p)
		}
	}
	check("$", root)

	// The seed's sample answer fits the schema's fields exactly.
	sample := `{"recommendation":"Strong Yes","reasoning":"r","analysis":{"educational_pedigree":{"rating":"Great","reasoning":"r"},` +
		`"company_pedigree":{"rating":"Good","reasoning":"r"},"trajectory":{"rating":"Good","reasoning":"r"},` +
		`"is_software_engineer":{"value":true,"reasoning":"r"}}}`
	var answer map[string]any
	require.NoError(t, json.Unmarshal([]byte(sample), &answer))
	assert.Len(t, answer, len(root.Properties))

	// Callers get their own copy.
	s := EvaluationSchema()
	s[0] = 'X'
	assert.Equal(t, byte('{'), EvaluationSchema()[0])
}

// heapWatch discards what is written and records the largest heap in use while
// writing, sampled every few megabytes.
type heapWatch struct {
	written int64
	maxHeap uint64
	tail    []byte // the last bytes written, for the last line
}

func (h *heapWatch) Write(p []byte) (int, error) {
	h.tail = append(h.tail, p...)
	if len(h.tail) > 64<<10 {
		h.tail = append(h.tail[:0], h.tail[len(h.tail)-(16<<10):]...)
	}
	before := h.written
	h.written += int64(len(p))
	if h.written/(32<<20) != before/(32<<20) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.maxHeap = max(h.maxHeap, ms.HeapInuse)
	}
	return len(p), nil
}

// 200,000 lines (≈ 900 MB) stream through with flat memory.
func TestCandidatesStreamFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200,000 lines")
	}
	w := &heapWatch{}
	require.NoError(t, WriteCandidates(w, Options{N: 200_000, Seed: 1}))
	assert.Greater(t, w.written, int64(800<<20))
	require.NotZero(t, w.maxHeap)
	assert.Less(t, w.maxHeap, uint64(64<<20), "heap reached %d bytes", w.maxHeap)

	lines := strings.Split(strings.TrimSuffix(string(w.tail), "\n"), "\n")
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], `{"custom_id":"cand-200000"`), "the last line is the 200,000th")
}

func BenchmarkWriteCandidates(b *testing.B) {
	for b.Loop() {
		if err := WriteCandidates(io.Discard, Options{N: 1000, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNoSchemaLeavesResponseFormatOut(t *testing.T) {
	var with, without strings.Builder
	require.NoError(t, WriteCandidates(&with, Options{N: 3, Seed: 5}))
	require.NoError(t, WriteCandidates(&without, Options{N: 3, Seed: 5, NoSchema: true}))
	assert.Equal(t, 3, strings.Count(with.String(), `"response_format"`))
	assert.NotContains(t, without.String(), `"response_format"`)
	assert.Contains(t, without.String(), `"cand-00003"`)
}

// Several system prompts are interleaved, each line's content keeps the seed's
// size, and no two prompts share their first block (a prefix cache cannot mix them).
func TestSeveralSystemPromptsAreInterleaved(t *testing.T) {
	const n, prompts = 800, 4
	rd := batchfile.NewReader(bytes.NewReader(write(t, Options{N: n, Seed: 3, SystemPrompts: prompts})), batchfile.Options{})
	uses := map[string]int{}
	var order []string
	var total int
	for {
		req, bad, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Nil(t, bad)
		var msgs []struct{ Role, Content string }
		require.NoError(t, json.Unmarshal(req.Messages, &msgs))
		uses[msgs[0].Content]++
		order = append(order, msgs[0].Content)
		total += len(msgs[0].Content) + len(msgs[1].Content)
	}
	require.Len(t, uses, prompts)
	for k := range prompts {
		p := SystemPrompt(k, prompts)
		assert.InDelta(t, n/prompts, uses[p], n/prompts/3, "prompt %d used about a quarter of the time", k)
		for j := range k {
			assert.NotEqual(t, p[:32], SystemPrompt(j, prompts)[:32], "prompts %d and %d differ within their first 32 bytes", j, k)
		}
	}
	switches := 0
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1] {
			switches++
		}
	}
	assert.Greater(t, switches, n/2, "prompts are interleaved, not in runs")
	assert.InDelta(t, meanContentBytes, total/n, meanContentBytes*0.1, "content keeps the seed's size")
}
