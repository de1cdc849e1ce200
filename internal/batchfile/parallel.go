package batchfile

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// Item is one non-blank input line as ReadParallel hands it over, in input order:
// a valid Request, or a bad line.
type Item struct {
	// Request's Messages and Sampling.ResponseFormat may be bytes of the input
	// that a later batch overwrites: copy them to keep them past the call.
	Request Request
	Bad     *LineError
	// Offset is how many bytes of the input the lines up to this one took, as
	// Reader.Offset after it.
	Offset int64
	// Encoded is Request as one JSON line, newline included (what json.Encoder
	// writes), when the line is valid: the line of a plan's chunk object, encoded
	// on the parsing goroutine.
	Encoded []byte
}

// Window of ReadParallel: a batch holds up to batchLines lines or about
// batchBytes of them (one line over the limit may take it to MaxLineBytes more),
// and batchesPerWorker batches per worker are in flight. Memory is bounded by the
// window, never by the input: about 2 × batchBytes a batch (the lines and their
// chunk lines), 8 MB on 16 cores. A batch of 64 kB is still a few hundred
// microseconds of parsing, far more than handing it over costs.
const (
	batchLines       = 64
	batchBytes       = 64 << 10
	batchesPerWorker = 4
)

// ReadParallel reads src as Reader.Next does, with the same lines, outcomes and
// errors, but parses lines on workers goroutines: one goroutine cuts lines, the
// workers parse and encode them, and each is called on the calling goroutine in
// input order, where custom_ids are claimed (so the first line of an id keeps it,
// as with Reader). An Item is valid only during its call. ReadParallel returns the
// first error of reading src (as Reader.Next gives it, io.EOF aside), of each, or
// of ctx.
func ReadParallel(ctx context.Context, src io.Reader, opts Options, workers int, each func(*Item) error) error {
	workers = max(workers, 1)
	r := NewReader(src, opts)
	opts = r.opts
	window := batchesPerWorker * workers

	free := make(chan *batch, window)
	for range window {
		free <- &batch{done: make(chan struct{}, 1)}
	}
	todo := make(chan *batch, window)    // to the workers
	ordered := make(chan *batch, window) // to the caller, in input order
	stop := make(chan struct{})          // the caller returns early
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(todo)
		defer close(ordered)
		for done := false; !done; {
			var b *batch
			select {
			case b = <-free:
			case <-stop:
				return
			}
			done = b.fill(r)
			todo <- b // never blocks: at most window batches exist
			ordered <- b
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range todo {
				b.parse(opts)
			}
		}()
	}

	for b := range ordered {
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		for i, p := range b.parsed {
			it := Item{Offset: b.lines[i].offset}
			it.Request, it.Bad = r.claims.settle(p)
			if it.Bad == nil {
				it.Encoded = b.encoded[i]
			}
			if err := each(&it); err != nil {
				return err
			}
		}
		if b.err == io.EOF {
			return nil
		}
		if b.err != nil {
			return b.err
		}
		free <- b
	}
	return nil // not reached: the last batch carries io.EOF or an error
}

// batch is a run of consecutive lines, their bytes in one buffer.
type batch struct {
	buf     []byte
	lines   []cutLine
	parsed  []parsed
	encoded [][]byte // the JSON line of each valid request, in encBuf
	encBuf  []byte   // one buffer a batch, reused, instead of one a line
	shape   shape    // of the line being parsed
	err     error    // the read error after these lines: io.EOF at the end
	done    chan struct{}
}

// cutLine is one non-blank line of a batch.
type cutLine struct {
	no       int
	size     int64
	from, to int // its bytes in batch.buf, cut to MaxLineBytes
	offset   int64
}

// fill cuts the next lines of r into b; it reports whether the input ended or
// failed, which is then b.err.
func (b *batch) fill(r *Reader) bool {
	b.buf, b.lines, b.err = b.buf[:0], b.lines[:0], nil
	for len(b.lines) < batchLines && len(b.buf) < batchBytes {
		size, err := r.nextLine()
		if err != nil {
			b.err = err
			return true
		}
		if size < 0 {
			continue // blank
		}
		from := len(b.buf)
		b.buf = append(b.buf, r.kept(size)...)
		b.lines = append(b.lines, cutLine{no: r.Lines(), size: size, from: from, to: len(b.buf), offset: r.Offset()})
	}
	return false
}

// parse judges each line of b on its own and encodes the valid ones.
func (b *batch) parse(opts Options) {
	b.parsed, b.encoded = b.parsed[:0], b.encoded[:0]
	b.encBuf = b.encBuf[:0]
	ends := make([]int, 0, batchLines) // where each line's encoding ends in encBuf
	for _, l := range b.lines {
		p := parse(b.buf[l.from:l.to], l.size, l.no, opts, &b.shape)
		if p.bad == nil {
			var err error
			if b.encBuf, err = appendChunkLine(b.encBuf, p.req, &b.shape); err != nil { // not expected: a parsed request encodes
				p.req, p.bad = Request{}, badLine(l.no, p.id, CodeInvalidRequest, "cannot encode the request: %v", err)
			}
		}
		b.parsed = append(b.parsed, p)
		ends = append(ends, len(b.encBuf))
	}
	// Sliced once encBuf has stopped growing.
	from := 0
	for i, p := range b.parsed {
		if p.bad == nil {
			b.encoded = append(b.encoded, b.encBuf[from:ends[i]])
		} else {
			b.encoded = append(b.encoded, nil)
		}
		from = ends[i]
	}
	b.done <- struct{}{}
}

// nextLine cuts the next line of the input into r.buf and returns its size, or -1
// for a blank line. Its errors are Next's: io.EOF at the end, a wrapped read error.
func (r *Reader) nextLine() (int64, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.start {
		r.start = true
		if err := r.skipBOM(); err != nil {
			r.err = fmt.Errorf("read line 1: %w", err)
			return 0, r.err
		}
	}
	size, blank, err := r.readLine()
	if err != nil {
		if err != io.EOF {
			err = fmt.Errorf("read line %d: %w", r.line+1, err)
		}
		r.err = err
		return 0, err
	}
	r.line++
	if blank {
		return -1, nil
	}
	return size, nil
}
