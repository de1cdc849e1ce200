package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// TokenStats are per-request token distributions of the answered requests.
type TokenStats struct {
	Requests   int          `json:"requests"`
	Prompt     Distribution `json:"prompt"`
	Completion Distribution `json:"completion"`
	Total      Distribution `json:"total"`
}

// Distribution summarises one per-request figure. Percentiles are nearest-rank.
type Distribution struct {
	Mean float64 `json:"mean"`
	P50  int     `json:"p50"`
	P95  int     `json:"p95"`
	Max  int     `json:"max"`
}

// Quality is what the answers are, checked one by one: whether they parse as JSON
// and, where the request asked for a JSON schema, whether they validate against it.
type Quality struct {
	Answers int `json:"answers"`
	JSON    int `json:"json"` // answers whose text parses as JSON
	// SchemaChecked are the answers whose request carried a json_schema
	// response_format, SchemaValid those that validate against it.
	SchemaChecked int `json:"schema_checked"`
	SchemaValid   int `json:"schema_valid"`
	// SchemaUnusable are answers whose request's schema did not compile; they are
	// not in SchemaChecked.
	SchemaUnusable int `json:"schema_unusable,omitempty"`
	// JSONObjectChecked are the answers whose request asked for json_object,
	// JSONObjectValid those that are a JSON object.
	JSONObjectChecked int `json:"json_object_checked"`
	JSONObjectValid   int `json:"json_object_valid"`
	// Truncated answers stopped at max_tokens or the context limit (finish_reason "length").
	Truncated int `json:"truncated"`
	// Failures are the first few answers that failed a check.
	Failures []QualityFailure `json:"failures,omitempty"`
	// Unmatched answers could not be joined to their request in the chunk files
	// (a corrupt folder); they are counted but not checked against a format.
	Unmatched int `json:"unmatched,omitempty"`
}

// QualityFailure is one answer that failed a check.
type QualityFailure struct {
	CustomID string `json:"custom_id"`
	Check    string `json:"check"` // json, json_schema, json_object
	Reason   string `json:"reason"`
}

// Sample is one answer shown in full, as the seed report shows its first.
type Sample struct {
	CustomID         string `json:"custom_id"`
	Prompt           string `json:"prompt"` // the request's last message, shortened
	Answer           string `json:"answer"` // pretty-printed when it is JSON, shortened
	FinishReason     string `json:"finish_reason"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
}

// ScoreField is the field of a candidate evaluation whose changes between runs the
// comparison counts.
const ScoreField = "recommendation"

const (
	heartbeatLines = 4096
	maxFailures    = 5
	maxExamples    = 5
	samplePrompt   = 600
	sampleAnswer   = 4000
)

// pass is the one streaming pass over a run's answers.
type pass struct {
	r       *Report
	reqs    *requestStream
	schemas *schemaCache

	prompt, completion, total tokenCounts
	sampling                  map[string]*SamplingCount

	// Attribution of answers to the attempt that produced them, for tokens per
	// engine and the in-flight series.
	byChunk map[int][]*attemptTrack
	engines map[string]int // engine name → index in r.Engines
	clock   timeline
	tokens  []float64 // tokens finished per bucket
}

// attemptTrack counts the answers of one attempt per time bucket.
type attemptTrack struct {
	a      *run.AttemptResult
	engine int
	done   []int32
}

func newPass(r *Report, chunks []run.ChunkPlan, attempts []run.AttemptResult) *pass {
	p := &pass{r: r, schemas: newSchemaCache(), sampling: map[string]*SamplingCount{},
		byChunk: map[int][]*attemptTrack{}, engines: map[string]int{}}
	p.reqs = &requestStream{chunks: chunks, onRequest: p.countSampling}
	for i, e := range r.Engines {
		p.engines[e.Name()] = i
	}
	var end time.Time
	for _, a := range attempts {
		end = later(end, a.Finished)
	}
	p.clock = newTimeline(r.seriesOrigin(), end)
	p.tokens = make([]float64, p.clock.buckets)
	for i := range attempts {
		a := &attempts[i]
		p.byChunk[a.Chunk] = append(p.byChunk[a.Chunk], &attemptTrack{a: a, engine: p.engines[engineName(a.Worker, a.EngineSlot)],
			done: make([]int32, p.clock.buckets)})
	}
	return p
}

// answerLine is what the pass reads of an output.jsonl line.
type answerLine struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		Body struct {
			Created int64 `json:"created"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
				Text         string `json:"text"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage batchfile.Usage `json:"usage"`
		} `json:"body"`
	} `json:"response"`
}

func (l answerLine) text() (text, finish string) {
	if l.Response == nil || len(l.Response.Body.Choices) == 0 {
		return "", ""
	}
	c := l.Response.Body.Choices[0]
	if c.Text != "" {
		return c.Text, c.FinishReason
	}
	return c.Message.Content, c.FinishReason
}

// outputs streams output.jsonl with the chunk files beside it: both are in input
// order, so each answer's request is found by reading the chunks forward.
func (p *pass) outputs(ctx context.Context, store blob.Store, layout run.Layout, heartbeat func()) error {
	p.reqs.ctx, p.reqs.store, p.reqs.layout, p.reqs.heartbeat = ctx, store, layout, heartbeat
	defer p.reqs.close()
	q := &Quality{}
	p.r.Quality = q
	p.r.scores = newScoreSet()
	var prompt, completion, cached int64
	lines, err := eachLine(ctx, store, layout.Output(), heartbeat, func(b []byte) error {
		var l answerLine
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("output line: %w", err)
		}
		if l.Response == nil {
			return fmt.Errorf("output line %q has no response", l.CustomID)
		}
		req, chunk, found, err := p.reqs.find(l.CustomID)
		if err != nil {
			return err
		}
		u := l.Response.Body.Usage
		prompt += int64(u.PromptTokens)
		completion += int64(u.CompletionTokens)
		cached += int64(u.CachedTokens)
		p.prompt.add(u.PromptTokens)
		p.completion.add(u.CompletionTokens)
		p.total.add(u.PromptTokens + u.CompletionTokens)
		text, finish := l.text()
		p.check(q, l.CustomID, text, finish, req, found)
		if found {
			p.attribute(chunk, l.Response.Body.Created, u.PromptTokens+u.CompletionTokens)
		}
		if p.r.Sample == nil {
			p.r.Sample = newSample(l.CustomID, text, finish, u, req)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("measure %s: %w", layout.Output(), err)
	}
	// The requests after the last answer still count in the sampling settings.
	if err := p.reqs.drain(); err != nil {
		return err
	}
	p.r.Counts.Answered = lines
	p.r.Files.OutputLines = lines
	p.r.Tokens.Prompt, p.r.Tokens.Completion, p.r.Tokens.Cached = prompt, completion, cached
	if st, err := store.Stat(ctx, layout.Output()); err == nil {
		p.r.Files.OutputBytes = st.Size
	}
	return nil
}

// check runs the quality checks on one answer.
func (p *pass) check(q *Quality, customID, text, finish string, req batchfile.Request, found bool) {
	q.Answers++
	if finish == "length" {
		q.Truncated++
	}
	doc, parseErr := parseJSON(text)
	if parseErr == nil {
		q.JSON++
		if obj, ok := doc.(map[string]any); ok {
			if s, ok := obj[ScoreField].(string); ok {
				p.r.scores.add(customID, s)
			}
		}
	}
	if !found {
		q.Unmatched++
		return
	}
	fail := func(check, reason string) {
		if len(q.Failures) < maxFailures {
			q.Failures = append(q.Failures, QualityFailure{CustomID: customID, Check: check, Reason: shorten(reason, 300)})
		}
	}
	switch kind, schema := responseFormat(req.Sampling.ResponseFormat); kind {
	case "json_schema":
		sch, err := p.schemas.get(schema)
		if err != nil {
			q.SchemaUnusable++
			return
		}
		q.SchemaChecked++
		switch {
		case parseErr != nil:
			fail("json_schema", "not JSON: "+parseErr.Error())
		default:
			if err := sch.Validate(doc); err != nil {
				fail("json_schema", schemaMessage(err))
			} else {
				q.SchemaValid++
			}
		}
	case "json_object":
		q.JSONObjectChecked++
		if _, ok := doc.(map[string]any); ok && parseErr == nil {
			q.JSONObjectValid++
		} else {
			fail("json_object", "not a JSON object")
		}
	}
}

// attribute counts an answer that finished at created (Unix seconds) for the
// attempt of its chunk that ran then.
func (p *pass) attribute(chunk int, created int64, tokens int) {
	// created is truncated to the second: the answer finished in [created, created+1).
	latest := time.Unix(created+1, 0)
	var track *attemptTrack
	for _, t := range p.byChunk[chunk] {
		// Attempts are in start order: the last one started by then ran it.
		if t.a.Started.Before(latest) {
			track = t
		}
	}
	at := time.Unix(created, 0).Add(500 * time.Millisecond)
	if track != nil && len(p.r.Engines) > 0 && !p.r.Engines[track.engine].counted {
		p.r.Engines[track.engine].Tokens += int64(tokens)
	}
	b, ok := p.clock.bucket(at)
	if !ok {
		return
	}
	p.tokens[b] += float64(tokens)
	if track != nil {
		track.done[b]++
	}
}

// errors streams errors.jsonl: counts by code, examples, OOMs.
func (p *pass) errors(ctx context.Context, store blob.Store, uri string, heartbeat func()) error {
	byCode := map[string]int{}
	rel := &p.r.Reliability
	lines, err := eachLine(ctx, store, uri, heartbeat, func(b []byte) error {
		var l batchfile.OutputLine
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("errors line: %w", err)
		}
		if l.Error == nil {
			return fmt.Errorf("errors line %q has no error", l.CustomID)
		}
		byCode[l.Error.Code]++
		if oomPattern.MatchString(l.Error.Message) {
			rel.OOMs++
		}
		if len(rel.ErrorExamples) < maxExamples {
			rel.ErrorExamples = append(rel.ErrorExamples, ErrorExample{CustomID: l.CustomID, Line: l.Error.Line,
				Code: l.Error.Code, Message: shorten(l.Error.Message, 300)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("measure %s: %w", uri, err)
	}
	p.r.Counts.Errors, p.r.Files.ErrorsLines = lines, lines
	p.r.Counts.ErrorsByCode, rel.ErrorsByCode = byCode, byCode
	if st, err := store.Stat(ctx, uri); err == nil {
		p.r.Files.ErrorsBytes = st.Size
	}
	return nil
}

// finish turns the pass's tallies into the report's sections.
func (p *pass) finish() {
	r := p.r
	r.rates()
	for i := range r.Engines {
		if e := &r.Engines[i]; e.WallSeconds > 0 {
			e.TokensPerSecond = float64(e.Tokens) / e.WallSeconds
		}
	}
	if n := p.prompt.n; n > 0 {
		r.TokenStats = &TokenStats{Requests: n, Prompt: p.prompt.distribution(), Completion: p.completion.distribution(), Total: p.total.distribution()}
	}
	for _, s := range p.sampling {
		r.Config.Sampling = append(r.Config.Sampling, *s)
	}
	sort.SliceStable(r.Config.Sampling, func(i, j int) bool { return r.Config.Sampling[i].Requests > r.Config.Sampling[j].Requests })
	r.Series.BucketSeconds = p.clock.width.Seconds()
	if p.clock.buckets > 0 {
		r.Series.TokensPerSecond = make([]float64, len(p.tokens))
		for i, t := range p.tokens {
			r.Series.TokensPerSecond[i] = t / p.clock.width.Seconds()
		}
		r.Series.InFlight = p.inFlight()
		r.Series.InFlightBasis = inFlightFromAnswers
	}
}

// inFlight derives each engine's outstanding requests at the end of every bucket:
// for each attempt running then, its requests less those it had answered.
func (p *pass) inFlight() []EngineSeries {
	out := make([]EngineSeries, len(p.r.Engines))
	for i, e := range p.r.Engines {
		out[i] = EngineSeries{Engine: e.Name(), Values: make([]int, p.clock.buckets)}
	}
	for _, tracks := range p.byChunk {
		for _, t := range tracks {
			todo := t.a.Requests - t.a.Resumed
			var done int32
			for b := range p.clock.buckets {
				done += t.done[b]
				end := p.clock.end(b)
				if !t.a.Started.After(end) && t.a.Finished.After(end) && len(out) > t.engine {
					out[t.engine].Values[b] += max(0, todo-int(done))
				}
			}
		}
	}
	return out
}

// countSampling tallies the sampling settings of every valid request.
func (p *pass) countSampling(req batchfile.Request) {
	kind, _ := responseFormat(req.Sampling.ResponseFormat)
	s := SamplingCount{MaxTokens: req.Sampling.MaxTokens, Temperature: req.Sampling.Temperature, TopP: req.Sampling.TopP, ResponseFormat: kind}
	key := fmt.Sprintf("%v|%v|%v|%s", deref(s.MaxTokens), deref(s.Temperature), deref(s.TopP), kind)
	if c, ok := p.sampling[key]; ok {
		c.Requests++
		return
	}
	if len(p.sampling) >= 8 {
		key = "other"
		if c, ok := p.sampling[key]; ok {
			c.Requests++
			return
		}
		s = SamplingCount{ResponseFormat: "(other settings)"}
	}
	s.Requests = 1
	p.sampling[key] = &s
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// requestStream reads the chunk files in plan order, one line at a time.
type requestStream struct {
	ctx       context.Context
	store     blob.Store
	layout    run.Layout
	heartbeat func()
	chunks    []run.ChunkPlan
	onRequest func(batchfile.Request)

	next  int // index into chunks of the next chunk to open
	chunk int // the open chunk's index
	src   io.ReadCloser
	sc    *bufio.Scanner
	done  bool
}

// find reads forward to customID's request and returns it with its chunk. Requests
// passed on the way (answered in errors.jsonl) are skipped. When customID is not
// ahead — a folder whose output and chunks disagree — the stream is spent and
// found is false for this and every later answer.
func (s *requestStream) find(customID string) (req batchfile.Request, chunk int, found bool, err error) {
	for !s.done {
		req, ok, err := s.read()
		if err != nil || !ok {
			return batchfile.Request{}, 0, false, err
		}
		if req.CustomID == customID {
			return req, s.chunk, true, nil
		}
	}
	return batchfile.Request{}, 0, false, nil
}

func (s *requestStream) drain() error {
	defer s.close()
	for !s.done {
		if _, _, err := s.read(); err != nil {
			return err
		}
	}
	return nil
}

// read returns the next request of the run; ok is false at the end.
func (s *requestStream) read() (batchfile.Request, bool, error) {
	for {
		if s.sc != nil && s.sc.Scan() {
			var req batchfile.Request
			if err := json.Unmarshal(s.sc.Bytes(), &req); err != nil {
				return req, false, fmt.Errorf("chunk %d: %w", s.chunk, err)
			}
			if s.onRequest != nil {
				s.onRequest(req)
			}
			return req, true, nil
		}
		if s.sc != nil {
			if err := s.sc.Err(); err != nil {
				return batchfile.Request{}, false, fmt.Errorf("read chunk %d: %w", s.chunk, err)
			}
		}
		s.close()
		if s.next >= len(s.chunks) {
			s.done = true
			return batchfile.Request{}, false, nil
		}
		s.chunk = s.chunks[s.next].Index
		s.next++
		ping(s.heartbeat)
		src, err := s.store.Open(s.ctx, s.layout.Chunk(s.chunk))
		if err != nil {
			return batchfile.Request{}, false, fmt.Errorf("open chunk %d: %w", s.chunk, err)
		}
		s.src, s.sc = src, newLineScanner(src)
	}
}

func (s *requestStream) close() {
	if s.src != nil {
		_ = s.src.Close()
		s.src, s.sc = nil, nil
	}
}

// eachLine calls fn with every non-blank line of an object and returns how many
// lines it saw; it pings heartbeat every heartbeatLines lines. A missing object has
// no lines.
func eachLine(ctx context.Context, store blob.Store, uri string, heartbeat func(), fn func([]byte) error) (int, error) {
	src, err := store.Open(ctx, uri)
	if errors.Is(err, blob.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer src.Close()
	sc := newLineScanner(src)
	n := 0
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		n++
		if n%heartbeatLines == 0 {
			ping(heartbeat)
		}
		if err := fn(sc.Bytes()); err != nil {
			return n, fmt.Errorf("line %d: %w", n, err)
		}
	}
	return n, sc.Err()
}

func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	return sc
}

// responseFormat returns a response_format's type and, for json_schema, the
// schema's bytes (OpenAI's {"type":"json_schema","json_schema":{"schema":{…}}}).
func responseFormat(raw json.RawMessage) (kind string, schema json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &rf); err != nil || rf.Type == "text" {
		return "", nil
	}
	return rf.Type, rf.JSONSchema.Schema
}

func newSample(customID, text, finish string, u batchfile.Usage, req batchfile.Request) *Sample {
	s := &Sample{CustomID: customID, FinishReason: finish, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
	s.Prompt = req.Prompt
	var msgs []struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(req.Messages, &msgs) == nil && len(msgs) > 0 {
		var content string
		if json.Unmarshal(msgs[len(msgs)-1].Content, &content) != nil {
			content = string(msgs[len(msgs)-1].Content) // content parts: shown as JSON
		}
		s.Prompt = content
	}
	s.Prompt = shorten(s.Prompt, samplePrompt)
	var pretty bytes.Buffer
	if json.Indent(&pretty, []byte(text), "", "  ") == nil {
		text = pretty.String()
	}
	s.Answer = shorten(text, sampleAnswer)
	return s
}

// tokenCounts is one per-request token count of the answers as how many answers
// had each value: its percentiles are exact, and its memory is bounded by the
// distinct values (a few thousand: counts are below the context length), not by
// the answers.
type tokenCounts struct {
	n      int
	sum    float64
	counts map[int]int
}

func (c *tokenCounts) add(x int) {
	if c.counts == nil {
		c.counts = map[int]int{}
	}
	c.n++
	c.sum += float64(x)
	c.counts[x]++
}

func (c *tokenCounts) distribution() Distribution {
	if c.n == 0 {
		return Distribution{}
	}
	values := slices.Sorted(maps.Keys(c.counts))
	return Distribution{Mean: c.sum / float64(c.n), P50: c.percentile(values, 50), P95: c.percentile(values, 95), Max: values[len(values)-1]}
}

// percentile is the nearest-rank percentile: the value of the answer at that rank
// when the answers are sorted by value.
func (c *tokenCounts) percentile(sorted []int, p float64) int {
	rank := min(max(int(math.Ceil(p/100*float64(c.n))), 1), c.n)
	seen := 0
	for _, v := range sorted {
		if seen += c.counts[v]; seen >= rank {
			return v
		}
	}
	return sorted[len(sorted)-1]
}

// shorten cuts s to at most n bytes at a rune boundary, saying how much it cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(" … (%d more bytes)", len(s)-cut)
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
