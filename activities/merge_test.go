package activities

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/run"
)

// mergeFixture is a planned and generated run in a file:// folder: chunks of
// requests, their answer parts and the plan's errors.
type mergeFixture struct {
	store  blob.Store
	layout run.Layout
	chunks []run.ChunkPlan
}

func newMergeFixture(t testing.TB, store blob.Store, prefix string) *mergeFixture {
	return &mergeFixture{store: store, layout: run.NewLayout(prefix, "run1")}
}

func (f *mergeFixture) put(t testing.TB, uri string, lines []string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	require.NoError(t, f.store.Put(context.Background(), uri, []byte(b.String())))
}

// chunk writes chunk i's requests and, per attempt, its parts of answers.
func (f *mergeFixture) chunk(t testing.TB, reqs []batchfile.Request, parts ...[]run.Answer) {
	t.Helper()
	i := len(f.chunks)
	var lines []string
	for _, r := range reqs {
		b, err := json.Marshal(r)
		require.NoError(t, err)
		lines = append(lines, string(b))
	}
	f.put(t, f.layout.Chunk(i), lines)
	for p, answers := range parts {
		lines = lines[:0]
		for _, a := range answers {
			b, err := json.Marshal(a)
			require.NoError(t, err)
			lines = append(lines, string(b))
		}
		f.put(t, f.layout.Part(i, 1, p+1), lines)
	}
	f.chunks = append(f.chunks, run.ChunkPlan{Index: i, Requests: len(reqs), FirstLine: reqs[0].Line, LastLine: reqs[len(reqs)-1].Line})
}

func (f *mergeFixture) finishPlan(t testing.TB, planErrs []batchfile.OutputLine) {
	t.Helper()
	var lines []string
	for _, e := range planErrs {
		b, err := e.MarshalLine()
		require.NoError(t, err)
		lines = append(lines, strings.TrimSuffix(string(b), "\n"))
	}
	f.put(t, f.layout.PlanErrors(), lines)
	require.NoError(t, blob.WriteJSON(context.Background(), f.store, f.layout.Manifest(),
		run.Manifest{Model: "org/model", Chunks: f.chunks, PlannedAt: time.Now()}))
}

func (f *mergeFixture) merge(t testing.TB, in MergeInput) MergeResult {
	t.Helper()
	c := &Control{Store: f.store}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(c)
	in.Run = f.layout
	val, err := env.ExecuteActivity(c.Merge, in)
	require.NoError(t, err)
	var res MergeResult
	require.NoError(t, val.Get(&res))
	return res
}

func (f *mergeFixture) lines(t testing.TB, uri string) []string {
	t.Helper()
	r, err := f.store.Open(context.Background(), uri)
	require.NoError(t, err)
	defer r.Close()
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.NoError(t, sc.Err())
	return lines
}

// Merge writes every line as encoding/json writes the envelope — the bytes users
// and their parsers already depend on — whatever the text holds, with answers,
// engine errors, missing answers, failed chunks and plan errors in input order.
func TestMergeWritesEveryLineInInputOrderAsEncodingJSONWouldBytes(t *testing.T) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	f := newMergeFixture(t, store, "file://"+filepath.ToSlash(t.TempDir()))
	texts := []string{"plain", `quotes " and \ backslash`, "<b>html</b> & more", "tabs\tnew\nlines\r\x01\x1f",
		"unicode é 日本 😀 \u2028\u2029", "invalid \xff utf-8", ""}
	req := func(line int, kind batchfile.Kind) batchfile.Request {
		r := batchfile.Request{CustomID: fmt.Sprintf("req-<%d>\"é", line), Line: line, Kind: kind,
			Messages: json.RawMessage(`[{"role":"user","content":"hi"}]`)}
		if kind == batchfile.KindCompletion {
			r.Messages, r.Prompt = nil, "hi"
		}
		return r
	}
	answer := func(r batchfile.Request, text string) run.Answer {
		return run.Answer{CustomID: r.CustomID, Line: r.Line, Kind: r.Kind, Created: 1700000000 + int64(r.Line), Text: text,
			FinishReason: "stop", PromptTokens: r.Line, CompletionTokens: 2 * r.Line, CachedTokens: r.Line % 3, Attempt: 1}
	}
	// Chunk 0: lines 2..9, answers (chat and completion), an engine error, an
	// invalid request and one request without an answer. Line 1 and 10 are plan errors.
	var c0 []batchfile.Request
	var a0 []run.Answer
	for line := 2; line <= 9; line++ {
		kind := batchfile.KindChat
		if line%2 == 0 {
			kind = batchfile.KindCompletion
		}
		r := req(line, kind)
		c0 = append(c0, r)
		switch line {
		case 7:
			a := answer(r, "")
			a.Error = &engine.RequestError{Code: batchfile.CodeEngineError, Message: "engine <died> & \"restarted\""}
			a0 = append(a0, a)
		case 8:
			a := answer(r, "")
			a.Error = &engine.RequestError{Code: batchfile.CodePromptTooLong, Message: "prompt of 9 tokens > 8"}
			a0 = append(a0, a)
		case 9: // no answer
		default:
			a0 = append(a0, answer(r, texts[line-2]))
		}
	}
	f.chunk(t, c0, a0[:3], a0[3:])
	// Chunk 1: failed every attempt; chunk 2: cancelled; chunk 3: answered.
	f.chunk(t, []batchfile.Request{req(11, batchfile.KindChat), req(12, batchfile.KindChat)})
	f.chunk(t, []batchfile.Request{req(13, batchfile.KindChat)})
	// Chunk 3: every request has an answer (one an error), with a plan error between.
	r14, r16 := req(14, batchfile.KindChat), req(16, batchfile.KindCompletion)
	a16 := answer(r16, "")
	a16.Error = &engine.RequestError{Code: batchfile.CodePromptTooLong, Message: "too long"}
	f.chunk(t, []batchfile.Request{r14, r16}, []run.Answer{a16}, []run.Answer{answer(r14, "last <one>")})
	planErr := func(line int) batchfile.OutputLine {
		return batchfile.Failure(f.layout.LineID(line), fmt.Sprintf("bad-%d", line), line, 0, batchfile.CodeInvalidJSON, "line <is> not JSON")
	}
	f.finishPlan(t, []batchfile.OutputLine{planErr(1), planErr(10), planErr(15), planErr(17)})

	res := f.merge(t, MergeInput{Failed: []ChunkFailure{{Index: 1, Reason: "engine died 3 times"}}, Cancelled: []int{2}})

	marshal := func(o batchfile.OutputLine) string {
		b, err := json.Marshal(o)
		require.NoError(t, err)
		return string(b)
	}
	success := func(r batchfile.Request, a run.Answer) string {
		id := f.layout.LineID(r.Line)
		return marshal(batchfile.Success(id, r.CustomID, id, batchfile.Answer{Kind: r.Kind, Model: "org/model", Created: a.Created,
			Text: a.Text, FinishReason: a.FinishReason, Usage: batchfile.Usage{PromptTokens: a.PromptTokens,
				CompletionTokens: a.CompletionTokens, TotalTokens: a.PromptTokens + a.CompletionTokens, CachedTokens: a.CachedTokens}}))
	}
	failure := func(r batchfile.Request, status int, code, msg string) string {
		return marshal(batchfile.Failure(f.layout.LineID(r.Line), r.CustomID, r.Line, status, code, msg))
	}
	var wantOut []string
	for i, a := range a0 {
		if a.Error == nil {
			wantOut = append(wantOut, success(c0[i], a))
		}
	}
	wantOut = append(wantOut, success(r14, answer(r14, "last <one>")))
	wantErrs := []string{
		marshal(planErr(1)),
		failure(c0[5], 500, batchfile.CodeEngineError, "engine <died> & \"restarted\""),
		failure(c0[6], 400, batchfile.CodePromptTooLong, "prompt of 9 tokens > 8"),
		failure(c0[7], 500, batchfile.CodeEngineError, "chunk 0 finished without an answer for this request"),
		marshal(planErr(10)),
		failure(req(11, batchfile.KindChat), 0, batchfile.CodeShardFailed, "chunk 1 failed every attempt: engine died 3 times"),
		failure(req(12, batchfile.KindChat), 0, batchfile.CodeShardFailed, "chunk 1 failed every attempt: engine died 3 times"),
		failure(req(13, batchfile.KindChat), 0, batchfile.CodeCancelled, "the run was cancelled before this request was answered"),
		marshal(planErr(15)),
		failure(r16, 400, batchfile.CodePromptTooLong, "too long"),
		marshal(planErr(17)),
	}
	assert.Equal(t, wantOut, f.lines(t, res.Output))
	assert.Equal(t, wantErrs, f.lines(t, res.ErrorsURI))
	assert.Equal(t, len(wantOut), res.Answered)
	assert.Equal(t, len(wantErrs), res.Errors)
	assert.Equal(t, map[string]int{batchfile.CodeInvalidJSON: 4, batchfile.CodeEngineError: 2, batchfile.CodePromptTooLong: 2,
		batchfile.CodeShardFailed: 2, batchfile.CodeCancelled: 1}, res.ErrorsByCode)
	var outBytes int64
	for _, l := range wantOut {
		outBytes += int64(len(l)) + 1
	}
	assert.Equal(t, outBytes, res.OutputBytes)
}

// answeredChunks writes chunks of perChunk requests, each answered with text bytes.
func (f *mergeFixture) answeredChunks(t testing.TB, chunks, perChunk, text int) {
	t.Helper()
	body := strings.Repeat("x", text)
	line := 1
	for range chunks {
		reqs := make([]batchfile.Request, perChunk)
		answers := make([]run.Answer, perChunk)
		for i := range reqs {
			reqs[i] = batchfile.Request{CustomID: fmt.Sprintf("r%d", line), Line: line, Kind: batchfile.KindChat}
			answers[i] = run.Answer{CustomID: reqs[i].CustomID, Line: line, Kind: batchfile.KindChat, Text: body, Attempt: 1}
			line++
		}
		f.chunk(t, reqs, answers)
	}
	f.finishPlan(t, nil)
}

// Merge reads ahead within mergeAheadBytes of output lines: chunks whose lines
// alone fill that are read one at a time, however many readers there could be,
// while small chunks are read several at once, never more than mergeReaders.
// Every answer is written either way.
func TestMergeReadAheadStaysWithinItsBytes(t *testing.T) {
	for _, tc := range []struct {
		name             string
		chunks, perChunk int
		text             int // bytes of each answer's text
		atLeast, atMost  int32
	}{
		// 2,100 lines of about 4 KB: each chunk is over the budget, and so are
		// two of the guess made before the first one is read.
		{"chunks over the budget", 4, 2100, 3500, 1, 1},
		{"small chunks", 24, 10, 100, 2, int32(mergeReaders)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := blob.New(context.Background(), blob.Config{})
			require.NoError(t, err)
			reads := &concurrentReads{Store: store}
			f := newMergeFixture(t, reads, "file://"+filepath.ToSlash(t.TempDir()))
			f.answeredChunks(t, tc.chunks, tc.perChunk, tc.text)

			res := f.merge(t, MergeInput{})
			assert.Equal(t, tc.chunks*tc.perChunk, res.Answered)
			assert.Len(t, f.lines(t, f.layout.Output()), tc.chunks*tc.perChunk)
			most := reads.most.Load()
			assert.True(t, most >= tc.atLeast && most <= tc.atMost,
				"%d chunks read at once at most; want %d to %d", most, tc.atLeast, tc.atMost)
		})
	}
}

// concurrentReads counts the chunks being read at once: Merge fetches a chunk's
// first part when it reads it, and each fetch lasts a while here so that reads
// which overlap are seen to.
type concurrentReads struct {
	blob.Store
	atOnce
}

func (s *concurrentReads) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	if run.IsPart(uri) {
		defer s.enter()()
		time.Sleep(20 * time.Millisecond)
	}
	return s.Store.Open(ctx, uri)
}

// While the output waits on storage (a part uploading), Merge goes on reading
// small chunks past its readers, up to mergeHeldChunks, so that the next part is
// ready when the upload ends; then it writes every answer.
func TestMergeReadsAheadWhileTheOutputWaits(t *testing.T) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	stalled := &stalledOutput{Store: store, release: make(chan struct{})}
	f := newMergeFixture(t, stalled, "file://"+filepath.ToSlash(t.TempDir()))
	// 20 KB of lines a chunk: about 13 fill Merge's 256 KiB write buffer, and the
	// write after them stalls; mergeAheadBytes would hold about 300.
	const chunks, perChunk = 150, 10
	f.answeredChunks(t, chunks, perChunk, 2000)

	done := make(chan MergeResult)
	go func() { done <- f.merge(t, MergeInput{}) }()
	var read int32
	for settled := 0; settled < 10; {
		time.Sleep(20 * time.Millisecond)
		if n := stalled.read.Load(); n == read {
			settled++
		} else {
			read, settled = n, 0
		}
	}
	require.True(t, stalled.stalled.Load(), "the output was never written to")
	assert.GreaterOrEqual(t, read, int32(mergeHeldChunks),
		"chunks read while the output waited: want the reads to go on past the %d readers to mergeHeldChunks", mergeReaders)
	assert.LessOrEqual(t, read, int32(mergeHeldChunks+20), "chunks read while the output waited")
	close(stalled.release)
	res := <-done
	assert.Equal(t, chunks*perChunk, res.Answered)
	assert.Len(t, f.lines(t, f.layout.Output()), chunks*perChunk)
}

// stalledOutput counts the answer parts fetched (one a chunk here), and holds
// output.jsonl's first write until release is closed.
type stalledOutput struct {
	blob.Store
	read    atomic.Int32
	stalled atomic.Bool
	release chan struct{}
}

func (s *stalledOutput) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	if run.IsPart(uri) {
		s.read.Add(1)
	}
	return s.Store.Open(ctx, uri)
}

func (s *stalledOutput) Create(ctx context.Context, uri string) (blob.Writer, error) {
	w, err := s.Store.Create(ctx, uri)
	if err != nil || !strings.HasSuffix(uri, "/output.jsonl") {
		return w, err
	}
	return &stalledWriter{Writer: w, s: s}, nil
}

type stalledWriter struct {
	blob.Writer
	s *stalledOutput
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.s.stalled.Store(true)
	<-w.s.release
	return w.Writer.Write(p)
}

// Merge closes output.jsonl and errors.jsonl at once: each close is an upload
// and a completion (or a put), and neither needs the other. Here output.jsonl's
// close waits for errors.jsonl's to start.
func TestMergeClosesBothFilesAtOnce(t *testing.T) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(t, err)
	closes := &closesTogether{Store: store, errorsClosing: make(chan struct{})}
	f := newMergeFixture(t, closes, "file://"+filepath.ToSlash(t.TempDir()))
	f.answeredChunks(t, 3, 10, 100)

	res := f.merge(t, MergeInput{})
	assert.Equal(t, 30, res.Answered)
	assert.Len(t, f.lines(t, f.layout.Output()), 30)
	assert.Empty(t, f.lines(t, f.layout.Errors()))
}

// closesTogether holds output.jsonl's Close until errors.jsonl's has started, for
// a few seconds at most, and then fails it.
type closesTogether struct {
	blob.Store
	errorsClosing chan struct{}
}

func (s *closesTogether) Create(ctx context.Context, uri string) (blob.Writer, error) {
	w, err := s.Store.Create(ctx, uri)
	if err != nil {
		return w, err
	}
	return &closeWaiter{Writer: w, uri: uri, s: s}, nil
}

type closeWaiter struct {
	blob.Writer
	uri string
	s   *closesTogether
}

func (w *closeWaiter) Close() error {
	switch {
	case strings.HasSuffix(w.uri, "/errors.jsonl"):
		close(w.s.errorsClosing)
	case strings.HasSuffix(w.uri, "/output.jsonl"):
		select {
		case <-w.s.errorsClosing:
		case <-time.After(5 * time.Second):
			_ = w.Writer.Abort()
			return errors.New("errors.jsonl was not closed while output.jsonl was")
		}
	}
	return w.Writer.Close()
}

// BenchmarkMerge merges 20,000 synthetic answers (≈ 1.2 kB of text each) across 80
// chunks of requests (≈ 4.7 kB each, as the bench's), from a file:// folder.
//
//	go test -run '^$' -bench BenchmarkMerge -cpuprofile cpu.out ./activities/
func BenchmarkMerge(b *testing.B) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(b, err)
	f := newMergeFixture(b, store, "file://"+filepath.ToSlash(b.TempDir()))
	const chunks, perChunk = 80, 250
	messages, _ := json.Marshal([]map[string]string{{"role": "user", "content": strings.Repeat("Rate this candidate. ", 220)}})
	text := strings.Repeat(`{"score": 7, "reason": "solid <experience>"} `, 27)
	line := 1
	for range chunks {
		reqs := make([]batchfile.Request, perChunk)
		answers := make([]run.Answer, perChunk)
		for i := range reqs {
			reqs[i] = batchfile.Request{CustomID: fmt.Sprintf("cand-%06d", line), Line: line, Kind: batchfile.KindChat, Messages: messages}
			answers[i] = run.Answer{CustomID: reqs[i].CustomID, Line: line, Kind: batchfile.KindChat, Created: 1700000000,
				Text: text, FinishReason: "stop", PromptTokens: 784, CompletionTokens: 309, Attempt: 1, EngineSeconds: 0.01}
			line++
		}
		f.chunk(b, reqs, answers[:perChunk/2], answers[perChunk/2:])
	}
	f.finishPlan(b, nil)
	runtime.GC()
	cpuBefore := cpuTime(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res := f.merge(b, MergeInput{})
		require.Equal(b, chunks*perChunk, res.Answered)
		b.SetBytes(res.OutputBytes)
	}
	b.StopTimer()
	// CPU of every goroutine, GC included: on a shared machine it varies far less
	// than the wall time, and it is what Merge's read-ahead spreads over the cores.
	b.ReportMetric(float64(cpuTime(b)-cpuBefore)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var u syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &u))
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
