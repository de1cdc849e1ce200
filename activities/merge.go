package activities

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
)

// Merge writes output.jsonl and errors.jsonl: every custom_id of the input exactly
// once across the two, each file in input order. It streams chunk by chunk, reading a
// few chunks ahead, so its memory is bounded by a few chunks' answers.
func (c *Control) Merge(ctx context.Context, in MergeInput) (MergeResult, error) {
	var took mergeTimes
	took.start = time.Now()
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, c.Store, in.Run.Manifest(), &manifest); err != nil {
		return MergeResult{}, fmt.Errorf("read manifest: %w", err)
	}
	failed := map[int]string{}
	for _, f := range in.Failed {
		failed[f.Index] = f.Reason
	}
	cancelled := map[int]bool{}
	for _, i := range in.Cancelled {
		cancelled[i] = true
	}

	// The chunks are read from here on, while the plan's errors are opened.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	written := make(chan []byte, mergeReaders+1) // chunks' output buffers, for reuse
	ahead := semaphore.NewWeighted(mergeAheadBytes)
	chunks := readAhead(readCtx, c.Store, in.Run, manifest.Model, manifest.Chunks, ahead, written)
	m, err := newMerger(ctx, c.Store, in.Run, manifest.Model)
	if err != nil {
		return MergeResult{}, err
	}
	if in.Cache {
		m.res.Cache = &report.CacheUse{Prefix: in.CachePrefix}
	}
	defer m.abort()
	lastBeat := time.Now()
	took.ready = time.Since(took.start)
	for next := range chunks {
		waited := time.Now()
		chunk := <-next
		took.reading += time.Since(waited)
		ahead.Release(chunk.aheadBytes) // its lines are about to be copied out
		if chunk.err != nil {
			return MergeResult{}, chunk.err
		}
		var missing func(run.RequestRef) batchfile.OutputLine
		switch reason, isFailed := failed[chunk.Index]; {
		case isFailed:
			missing = func(r run.RequestRef) batchfile.OutputLine {
				return batchfile.Failure(in.Run.LineID(r.Line), r.CustomID, r.Line, 0, batchfile.CodeShardFailed,
					fmt.Sprintf("chunk %d failed every attempt: %s", chunk.Index, reason))
			}
		case cancelled[chunk.Index]:
			missing = func(r run.RequestRef) batchfile.OutputLine {
				return batchfile.Failure(in.Run.LineID(r.Line), r.CustomID, r.Line, 0, batchfile.CodeCancelled,
					"the run was cancelled before this request was answered")
			}
		default:
			missing = func(r run.RequestRef) batchfile.OutputLine {
				return batchfile.Failure(in.Run.LineID(r.Line), r.CustomID, r.Line, 500, batchfile.CodeEngineError,
					fmt.Sprintf("chunk %d finished without an answer for this request", chunk.Index))
			}
		}
		writing := time.Now()
		if err := m.chunk(chunk, missing); err != nil {
			return MergeResult{}, err
		}
		took.writing += time.Since(writing)
		select {
		case written <- chunk.out[:0]:
		default:
		}
		if time.Since(lastBeat) > heartbeatEvery {
			activity.RecordHeartbeat(ctx, chunk.Index)
			lastBeat = time.Now()
		}
	}
	closing := time.Now()
	res, err := m.finish()
	if err != nil {
		return MergeResult{}, err
	}
	took.closing = time.Since(closing)
	activity.GetLogger(ctx).Info("merged", "output_bytes", res.OutputBytes, "chunks", len(manifest.Chunks),
		"seconds", time.Since(took.start).Seconds(), "ready_seconds", took.ready.Seconds(),
		"waiting_for_chunks_seconds", took.reading.Seconds(), "writing_seconds", took.writing.Seconds(),
		"closing_seconds", took.closing.Seconds())
	return res, nil
}

// mergeTimes is where a Merge's time went, for its log line: reading the
// manifest and opening the files (ready), the writer waiting for the next chunk
// to be read (reading), writing lines, which includes waiting for parts to
// upload (writing), and closing the files, the last parts and their completion
// (closing).
type mergeTimes struct {
	start                            time.Time
	ready, reading, writing, closing time.Duration
}

// merger interleaves the plan's errors with the chunks' answers by line number.
type merger struct {
	ctx    context.Context
	store  blob.Store
	layout run.Layout
	model  string

	planErrs    *bufio.Scanner
	planErrsSrc io.ReadCloser
	nextPlanErr *batchfile.OutputLine

	out, errs       blob.Writer
	outBuf, errsBuf *countingWriter
	res             MergeResult
}

func newMerger(ctx context.Context, store blob.Store, layout run.Layout, model string) (*merger, error) {
	m := &merger{ctx: ctx, store: store, layout: layout, model: model,
		res: MergeResult{Output: layout.Output(), ErrorsURI: layout.Errors(), ErrorsByCode: map[string]int{}}}
	var err error
	if m.planErrsSrc, err = store.Open(ctx, layout.PlanErrors()); err != nil {
		return nil, fmt.Errorf("open plan errors: %w", err)
	}
	m.planErrs = bufio.NewScanner(m.planErrsSrc)
	m.planErrs.Buffer(make([]byte, 0, 64<<10), 16<<20)
	if m.out, err = store.Create(ctx, layout.Output()); err != nil {
		m.abort()
		return nil, fmt.Errorf("create output: %w", err)
	}
	if m.errs, err = store.Create(ctx, layout.Errors()); err != nil {
		m.abort()
		return nil, fmt.Errorf("create errors: %w", err)
	}
	m.outBuf, m.errsBuf = newCountingWriter(m.out), newCountingWriter(m.errs)
	return m, m.advancePlanErr()
}

// Merge reads chunks while it writes the one before them: each chunk costs S3
// round trips (its first part, and for a chunk that part does not settle, a
// listing of its folder and its other parts) and the CPU of decoding its
// answers and building its lines, which the readers spend on as many cores,
// leaving the writer only bytes to copy. What it holds ahead is bounded
// independently of the run's size:
//   - mergeReaders chunks are read at once, one reader each;
//   - mergeAheadBytes of output lines are read or held ahead, as estimated from
//     the chunks read so far, so that a run of large chunks reads fewer ahead
//     than one of the small chunks at a run's end;
//   - mergeHeldChunks chunks at most, in case the estimate is far off.
//
// The reads go on while the writer waits for a part to upload, until the bytes
// are spent: the more of the next part is ready when the upload ends, the sooner
// it fills. The bytes, not the readers, should run out first.
var mergeReaders = min(max(runtime.GOMAXPROCS(0), 4), 16)

// mergeHeldChunks is 4× the most readers: about 40 of a short run's chunks
// (150 KB of lines each) fit mergeAheadBytes.
const mergeHeldChunks = 64

// mergeAheadBytes is a part of output and a little more: while a part uploads,
// and the writer waits, the next part's lines are read, so that the writer fills
// it in a memory copy when the upload ends and the next upload starts at once.
// With less than a part ready the writer waits on reads after each upload
// (Merge at 20,000 requests moved 0.45× a plain copy with 4 MiB). It is 14 or 15
// full chunks of the seed workload's lines (256 requests of about 1.7 KB).
const mergeAheadBytes = blob.DefaultPartSize + 1<<20

// mergeLineGuess is the bytes of a request's output line assumed until a chunk
// has been read: about the seed workload's.
const mergeLineGuess = 2 << 10

// mergeChunk is one chunk read for Merge and ready to write: the output lines of
// its answered requests, and its requests without an answer.
type mergeChunk struct {
	run.ChunkPlan
	out        []byte       // output.jsonl's lines of its answered requests, in input order
	unanswered []unanswered // in input order
	answered   int
	prompt     int64 // tokens of the answered requests
	completion int64
	cache      report.CacheUse // every answer's hit or miss; used for a run with a cache
	err        error
	aheadBytes int64 // its share of mergeAheadBytes, held until the writer takes it
}

// unanswered is a request without an answer (err nil) or whose answer is an error.
type unanswered struct {
	run.RequestRef
	err *engine.RequestError
}

// readAhead reads the chunks, mergeReaders at once, within mergeAheadBytes and
// mergeHeldChunks, and hands them over in plan order, each through its own
// channel; it builds their output lines in the buffers that come back through
// written, when there are any. The receiver gives a chunk's aheadBytes back to
// ahead as it takes the chunk. Cancelling ctx stops it.
func readAhead(ctx context.Context, store blob.Store, layout run.Layout, model string, chunks []run.ChunkPlan,
	ahead *semaphore.Weighted, written <-chan []byte) <-chan chan mergeChunk {
	// The queue's chunks and the one the receiver waits for: mergeHeldChunks.
	queue := make(chan chan mergeChunk, mergeHeldChunks-1)
	readers := semaphore.NewWeighted(int64(mergeReaders))
	var lineBytes atomic.Int64 // per request, in the chunk read last
	lineBytes.Store(mergeLineGuess)
	go func() {
		defer close(queue)
		for _, plan := range chunks {
			weight := min(int64(plan.Requests)*lineBytes.Load(), mergeAheadBytes)
			if err := ahead.Acquire(ctx, weight); err != nil {
				return
			}
			if err := readers.Acquire(ctx, 1); err != nil {
				ahead.Release(weight)
				return
			}
			next := make(chan mergeChunk, 1)
			select {
			case queue <- next:
			case <-ctx.Done():
				readers.Release(1)
				ahead.Release(weight)
				return
			}
			var out []byte
			select {
			case out = <-written:
			default:
			}
			go func() {
				c := readMergeChunk(ctx, store, layout, model, plan, out)
				readers.Release(1)
				if c.answered > 0 {
					lineBytes.Store(int64(len(c.out) / c.answered))
				}
				c.aheadBytes = weight
				next <- c
			}()
		}
	}()
	return queue
}

// readMergeChunk reads a chunk's answers and builds its output lines, into out.
func readMergeChunk(ctx context.Context, store blob.Store, layout run.Layout, model string, plan run.ChunkPlan, out []byte) mergeChunk {
	c := mergeChunk{ChunkPlan: plan}
	answers, release, err := run.LoadTextAnswers(ctx, store, layout, plan)
	if err != nil {
		c.err = err
		return c
	}
	defer release() // the texts are copied into c.out
	reqs, complete := refsOfAnswers(plan, answers)
	if !complete {
		if reqs, err = run.RequestRefs(ctx, store, layout, plan.Index); err != nil {
			c.err = err
			return c
		}
	}
	size := 0
	for _, a := range answers {
		// The envelope holds the custom_id once, the line's id three times and the
		// model once, in about 350 bytes of its own.
		size += len(a.Text) + len(a.CustomID) + 3*len(layout.LineID(a.Line)) + len(model) + 400
	}
	c.out = slices.Grow(out, size)
	for _, req := range reqs {
		a, ok := answers[req.CustomID]
		switch {
		case !ok:
			c.unanswered = append(c.unanswered, unanswered{RequestRef: req})
			continue
		case a.Cached:
			c.cache.Hits++
			c.cache.SavedEngineSeconds += a.EngineSeconds
			c.cache.SavedPromptTokens += int64(a.PromptTokens)
			c.cache.SavedCompletionTokens += int64(a.CompletionTokens)
		default:
			c.cache.Misses++
		}
		if a.Error != nil {
			c.unanswered = append(c.unanswered, unanswered{RequestRef: req, err: a.Error})
			continue
		}
		id := layout.LineID(req.Line)
		c.out = batchfile.AppendSuccessTextJSON(c.out, id, req.CustomID, id, batchfile.Answer{
			Kind: req.Kind, Model: model, Created: a.Created, FinishReason: a.FinishReason,
			Usage: batchfile.Usage{PromptTokens: a.PromptTokens, CompletionTokens: a.CompletionTokens,
				TotalTokens: a.PromptTokens + a.CompletionTokens, CachedTokens: a.CachedTokens},
		}, a.Text)
		c.answered++
		c.prompt += int64(a.PromptTokens)
		c.completion += int64(a.CompletionTokens)
	}
	return c
}

// refsOfAnswers is a chunk's requests in input order, read from its answers when
// every request has one: an answer carries its request's custom_id, line and kind,
// so Merge then need not read the chunk object, which is most of the bytes it would
// read (the messages). complete is false when an answer is missing or the answers'
// lines do not fit the plan; the chunk object is read then.
func refsOfAnswers(plan run.ChunkPlan, answers map[string]run.TextAnswer) (refs []run.RequestRef, complete bool) {
	if len(answers) != plan.Requests {
		return nil, false
	}
	refs = make([]run.RequestRef, 0, len(answers))
	for _, a := range answers {
		if a.Line < plan.FirstLine || a.Line > plan.LastLine || a.Kind == "" {
			return nil, false
		}
		refs = append(refs, run.RequestRef{CustomID: a.CustomID, Line: a.Line, Kind: a.Kind})
	}
	slices.SortFunc(refs, func(a, b run.RequestRef) int { return cmp.Compare(a.Line, b.Line) })
	for i := 1; i < len(refs); i++ {
		if refs[i].Line == refs[i-1].Line {
			return nil, false
		}
	}
	return refs, true
}

// chunk writes one chunk: its output lines, then its errors, each after the plan
// errors that fall before it.
func (m *merger) chunk(chunk mergeChunk, missing func(run.RequestRef) batchfile.OutputLine) error {
	if _, err := m.outBuf.Write(chunk.out); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	m.res.Answered += chunk.answered
	m.res.PromptTokens += chunk.prompt
	m.res.CompletionTokens += chunk.completion
	if m.res.Cache != nil {
		m.res.Cache.Add(chunk.cache)
	}
	for _, req := range chunk.unanswered {
		if err := m.planErrorsBefore(req.Line); err != nil {
			return err
		}
		line := missing(req.RequestRef)
		if req.err != nil {
			status := 400
			if req.err.Code == batchfile.CodeEngineError {
				status = 500
			}
			line = batchfile.Failure(m.layout.LineID(req.Line), req.CustomID, req.Line, status, req.err.Code, req.err.Message)
		}
		if err := m.writeError(line); err != nil {
			return err
		}
	}
	return nil
}

func (m *merger) writeError(line batchfile.OutputLine) error {
	m.res.Errors++
	if line.Error != nil {
		m.res.ErrorsByCode[line.Error.Code]++
	}
	return writeJSONLine(m.errsBuf, line)
}

// planErrorsBefore writes the plan errors of lines before line (all of them when line is -1).
func (m *merger) planErrorsBefore(line int) error {
	for m.nextPlanErr != nil && (line < 0 || m.nextPlanErr.Error.Line < line) {
		if err := m.writeError(*m.nextPlanErr); err != nil {
			return err
		}
		if err := m.advancePlanErr(); err != nil {
			return err
		}
	}
	return nil
}

func (m *merger) advancePlanErr() error {
	m.nextPlanErr = nil
	if !m.planErrs.Scan() {
		if err := m.planErrs.Err(); err != nil {
			return fmt.Errorf("read plan errors: %w", err)
		}
		return nil
	}
	var line batchfile.OutputLine
	if err := json.Unmarshal(m.planErrs.Bytes(), &line); err != nil {
		return fmt.Errorf("plan errors: %w", err)
	}
	if line.Error == nil {
		return errors.New("plan errors: a line without an error")
	}
	m.nextPlanErr = &line
	return nil
}

// finish writes the last plan errors and closes both files at once: each close
// is its last upload and a completion, or a single put, and neither needs the
// other. When one fails, so does the Merge, and its retry writes both again.
func (m *merger) finish() (MergeResult, error) {
	if err := m.planErrorsBefore(-1); err != nil {
		return MergeResult{}, err
	}
	var closing errgroup.Group
	for _, w := range []struct {
		name string
		buf  *countingWriter
		obj  *blob.Writer
	}{{"output", m.outBuf, &m.out}, {"errors", m.errsBuf, &m.errs}} {
		closing.Go(func() error {
			if err := w.buf.Flush(); err != nil {
				return fmt.Errorf("write %s: %w", w.name, err)
			}
			err := (*w.obj).Close()
			*w.obj = nil
			if err != nil {
				return fmt.Errorf("close %s: %w", w.name, err)
			}
			return nil
		})
	}
	if err := closing.Wait(); err != nil {
		return MergeResult{}, err
	}
	m.res.OutputBytes, m.res.ErrorsBytes = m.outBuf.n, m.errsBuf.n
	_ = m.planErrsSrc.Close()
	return m.res, nil
}

func (m *merger) abort() {
	if m.planErrsSrc != nil {
		_ = m.planErrsSrc.Close()
	}
	for _, w := range []blob.Writer{m.out, m.errs} {
		if w != nil {
			_ = w.Abort()
		}
	}
}

// countingWriter buffers writes to an object and counts the bytes.
type countingWriter struct {
	*bufio.Writer
	n int64
}

func newCountingWriter(w io.Writer) *countingWriter {
	return &countingWriter{Writer: bufio.NewWriterSize(w, 256<<10)}
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	w.n += int64(n)
	return n, err
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode line: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write line: %w", err)
	}
	return nil
}
