// Package synth writes the synthetic candidate-scoring workload of
// `vbatch sample candidates`: OpenAI Batch lines shaped like the seed benchmark's
// (one shared rubric as the system prompt, a generated résumé per candidate, a
// JSON-schema response format), deterministic from a seed, so demos, tests and
// benchmarks run a realistic load without real candidates' data.
package synth

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
)

// DefaultMaxTokens is the max_tokens of each line when Options leaves it 0, as in
// the seed's run.
const DefaultMaxTokens = 2000

// Options shape the workload.
type Options struct {
	N         int    // lines to write
	Seed      int64  // the same seed writes the same bytes
	Model     string // body.model of every line; left out when ""
	MaxTokens int    // DefaultMaxTokens when 0
	// MinMaxTokens, when set, draws each line's max_tokens between it and
	// MaxTokens. A model with random weights never ends a completion early, so
	// every request of a fixed max_tokens takes the same number of steps; an engine
	// that admits a full batch at once then runs in lockstep waves, which real
	// completions of different lengths break up.
	MinMaxTokens int
	// NoSchema leaves response_format out, for engines that cannot enforce a JSON
	// schema (the transformers backend); the system prompt still asks for the JSON.
	NoSchema bool
	// SystemPrompts is how many distinct system prompts the lines use, interleaved
	// at random (1 when 0): screening profiles for different teams, each the
	// rubric behind a header of its own, so no two share a prefix. A workload for
	// measuring the prefix cache.
	SystemPrompts int
}

// Sampling of every line, the seed's settings.
const (
	temperature = 0.7
	topP        = 0.9
)

// batchLine is one OpenAI Batch input line. Field order is the written order.
type batchLine struct {
	CustomID string    `json:"custom_id"`
	Method   string    `json:"method"`
	URL      string    `json:"url"`
	Body     batchBody `json:"body"`
}

type batchBody struct {
	Model          string          `json:"model,omitempty"`
	Messages       [2]message      `json:"messages"`
	MaxTokens      json.RawMessage `json:"max_tokens"` // maxTokensSlot in the template
	Temperature    float64         `json:"temperature"`
	TopP           float64         `json:"top_p"`
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// WriteCandidates writes opts.N lines with custom_ids cand-00001, cand-00002, …
// Each line is generated and written on its own, so memory does not grow with N.
func WriteCandidates(w io.Writer, opts Options) error {
	if opts.N < 0 {
		return fmt.Errorf("write candidates: N is %d, want ≥ 0", opts.N)
	}
	if opts.MaxTokens == 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.MaxTokens < 0 {
		return fmt.Errorf("write candidates: max tokens is %d, want ≥ 1", opts.MaxTokens)
	}
	if opts.MinMaxTokens < 0 || opts.MinMaxTokens > opts.MaxTokens {
		return fmt.Errorf("write candidates: least max tokens is %d, want 0 (all %d) or 1 to %d",
			opts.MinMaxTokens, opts.MaxTokens, opts.MaxTokens)
	}
	if opts.SystemPrompts < 0 {
		return fmt.Errorf("write candidates: %d system prompts, want ≥ 1", opts.SystemPrompts)
	}
	tmpls := make([]*template, max(opts.SystemPrompts, 1))
	for k := range tmpls {
		t, err := newTemplate(opts, SystemPrompt(k, len(tmpls)))
		if err != nil {
			return fmt.Errorf("write candidates: %w", err)
		}
		tmpls[k] = t
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var resume, line bytes.Buffer
	for i := 1; i <= opts.N; i++ {
		// One generator per candidate, keyed by (seed, index): candidate i is the
		// same whatever N is, and any line can be regenerated alone.
		rng := rand.New(rand.NewPCG(uint64(opts.Seed), uint64(i)))
		tmpl := tmpls[0]
		if len(tmpls) > 1 {
			// Drawn from a generator of its own, so that the résumés are the
			// same whatever the number of system prompts.
			tmpl = tmpls[rand.New(rand.NewPCG(uint64(opts.Seed)^0x5157e3, uint64(i))).IntN(len(tmpls))]
		}
		resume.Reset()
		writeResume(&resume, rng, resumeBudget(rng, len(tmpl.system)))
		maxTokens := opts.MaxTokens
		if opts.MinMaxTokens > 0 {
			maxTokens = opts.MinMaxTokens + rng.IntN(opts.MaxTokens-opts.MinMaxTokens+1)
		}
		line.Reset()
		if err := tmpl.write(&line, CustomID(i), resume.String(), maxTokens); err != nil {
			return fmt.Errorf("write candidate %d: %w", i, err)
		}
		if _, err := bw.Write(line.Bytes()); err != nil {
			return fmt.Errorf("write candidate %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write candidates: %w", err)
	}
	return nil
}

// Placeholders of the line template; none can occur in a custom_id or résumé.
const (
	idSlot        = "\x00custom_id\x00"
	resumeSlot    = "\x00resume\x00"
	maxTokensSlot = `"\u0000max_tokens\u0000"` // JSON, where the line's number goes
)

// template is a batchLine encoded once with placeholders, cut around them. Every
// line shares all its bytes but the id, the résumé and max_tokens, so only those
// are encoded per line: the response format and the rubric are not re-encoded
// 200,000 times, and the bytes are exactly what encoding the whole line gives.
type template struct {
	system                     string // the line's system prompt
	head, mid, beforeMax, tail []byte
	enc                        *json.Encoder
	str                        bytes.Buffer // the encoder's output: one JSON string
}

func newTemplate(opts Options, system string) (*template, error) {
	line := batchLine{
		CustomID: idSlot,
		Method:   "POST",
		URL:      "/v1/chat/completions",
		Body: batchBody{
			Model: opts.Model,
			Messages: [2]message{
				{Role: "system", Content: system},
				{Role: "user", Content: resumeSlot},
			},
			MaxTokens:   json.RawMessage(maxTokensSlot),
			Temperature: temperature,
			TopP:        topP,
		},
	}
	if !opts.NoSchema {
		line.Body.ResponseFormat = responseFormat()
	}
	t := &template{system: system}
	t.enc = json.NewEncoder(&t.str)
	t.enc.SetEscapeHTML(false)
	whole, err := t.quote(nil, line)
	if err != nil {
		return nil, fmt.Errorf("encode line template: %w", err)
	}
	id, _ := t.quote(nil, idSlot)
	res, _ := t.quote(nil, resumeSlot)
	head, rest, ok1 := bytes.Cut(whole, id)
	mid, rest, ok2 := bytes.Cut(rest, res)
	beforeMax, tail, ok3 := bytes.Cut(rest, []byte(maxTokensSlot))
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("line template lost its placeholders: %s", whole)
	}
	t.head, t.mid, t.beforeMax, t.tail = head, mid, beforeMax, append(tail, '\n')
	return t, nil
}

// quote appends the JSON encoding of v, without the encoder's newline.
func (t *template) quote(dst []byte, v any) ([]byte, error) {
	t.str.Reset()
	if err := t.enc.Encode(v); err != nil {
		return nil, err
	}
	return append(dst, bytes.TrimSuffix(t.str.Bytes(), []byte("\n"))...), nil
}

// write writes one line, ending in a newline.
func (t *template) write(buf *bytes.Buffer, id, resume string, maxTokens int) error {
	buf.Write(t.head)
	q, err := t.quote(buf.AvailableBuffer(), id)
	if err != nil {
		return err
	}
	buf.Write(q)
	buf.Write(t.mid)
	if q, err = t.quote(buf.AvailableBuffer(), resume); err != nil {
		return err
	}
	buf.Write(q)
	buf.Write(t.beforeMax)
	buf.Write(strconv.AppendInt(buf.AvailableBuffer(), int64(maxTokens), 10))
	buf.Write(t.tail)
	return nil
}

// CustomID is the custom_id of the i-th candidate (1-based).
func CustomID(i int) string { return fmt.Sprintf("cand-%05d", i) }

// Sizes of a line's message content, counted in bytes: the seed's prompts
// averaged 788 tokens, about 3,150 bytes at 4 bytes a token, and real résumés
// differ in length, so each line's total is drawn within ±25% of that mean.
const (
	meanContentBytes = 3100 // the drawn target; résumés end a little past it
	contentSpread    = 0.25
)

// resumeBudget draws how many bytes of résumé this candidate gets: the line's
// content target less its system prompt.
func resumeBudget(rng *rand.Rand, systemBytes int) int {
	target := float64(meanContentBytes) * (1 - contentSpread + 2*contentSpread*rng.Float64())
	return int(target) - systemBytes
}

// teams name the screening profiles of a workload with several system prompts.
var teams = []string{"payments", "search", "storage", "mobile", "data platform", "security",
	"developer tools", "machine learning infrastructure"}

// SystemPrompt is the k-th of n system prompts: the rubric alone when n is 1, else
// the rubric behind a header that names profile k, which makes the prompts differ
// within their first 32 bytes (a prefix cache's first block).
func SystemPrompt(k, n int) string {
	if n <= 1 {
		return systemPrompt
	}
	team := teams[k%len(teams)]
	return fmt.Sprintf("Team %s, screening profile %d of %d. Weigh experience relevant to %s work more than "+
		"general experience, and mention it in the reasoning.\n\n", team, k+1, n, team) + systemPrompt
}

// responseFormat is the response_format of every line: the evaluation schema,
// strict, so structured outputs hold the answer to it.
func responseFormat() json.RawMessage {
	rf := struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name   string          `json:"name"`
			Strict bool            `json:"strict"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}{Type: "json_schema"}
	rf.JSONSchema.Name = "candidate_evaluation"
	rf.JSONSchema.Strict = true
	rf.JSONSchema.Schema = evaluationSchema
	b, err := json.Marshal(rf)
	if err != nil {
		panic(fmt.Sprintf("synth: encode response format: %v", err)) // fixed data: a bug here, not an input error
	}
	return b
}
