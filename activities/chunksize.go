package activities

import "github.com/vbatch/vbatch/internal/batchfile"

// Where Plan ends a chunk. Chunks are balanced by estimated tokens, not lines, so a
// chunk of long prompts is as much engine time as one of short prompts; chunk_size
// stays a cap on lines.
//
// The end of a run must not have a tail: the engines should finish together. Chunks
// are dispatched in plan order and each engine pulls the next one as it finishes
// one, so what decides the tail is how big the chunks are that are still unstarted
// when the engines begin to run out of work. Plan streams the input and knows its
// size, so it knows how much estimated work is left after each chunk, and cuts the
// last part of the input finer and finer (guided self-scheduling, in its
// "factoring" form): a chunk is at most 1/(tailShare·K) of the work left after its
// start, where K is the number of engines, and never smaller than 1/minChunkDivisor
// of a full chunk, so that Temporal's and S3's cost per chunk stays small next to the
// chunk's engine time.
const (
	// tailShare: each engine works on two chunks at once (the GPU worker's
	// --chunks-per-engine), so 2K chunks are in flight; halving once more is
	// factoring's rule, which keeps the first, largest shrunk chunks from finishing
	// late.
	tailShare = 4
	// minChunkDivisor bounds how fine the tail gets: a sixteenth of a full chunk
	// (16 requests of the default 256). An eighth left the engines of a 20,000-
	// request run on 8 simulated GPUs 2.7–3.6 % of the makespan apart, a
	// sixteenth 1.3–2.0 % (docs/benchmarks.md).
	minChunkDivisor = 16
)

// chunkSizer decides where chunks end as Plan streams the input.
type chunkSizer struct {
	maxRequests int   // chunk_size: the cap on lines
	fullTokens  int64 // chunk_tokens; 0: maxRequests × the mean request read so far
	engines     int   // K, the engines expected to serve the run
	inputBytes  int64 // the input's size; 0 when unknown (no tail shrinking)

	// What was read so far: valid requests, their estimated tokens, and the
	// bytes of input they took (bad lines included, which cost no tokens).
	requests int
	tokens   int64
}

// full is the target of a chunk while much work is left.
func (s *chunkSizer) full() int64 {
	if s.fullTokens > 0 {
		return s.fullTokens
	}
	if s.requests == 0 {
		return 1
	}
	return int64(s.maxRequests) * s.tokens / int64(s.requests)
}

// target is the estimated tokens the chunk that began at input offset start should
// hold, given that offset bytes of the input have been read.
func (s *chunkSizer) target(start, offset int64) int64 {
	full := s.full()
	if s.inputBytes <= 0 || offset <= 0 || s.engines <= 0 {
		return full
	}
	perByte := float64(s.tokens) / float64(offset)
	left := perByte * float64(max(s.inputBytes-start, 0))
	return chunkTarget(int64(left), full, s.engines)
}

// chunkTarget is the guided self-scheduling rule: a share of the work left, between
// a minimum and a full chunk.
func chunkTarget(left, full int64, engines int) int64 {
	t := left / int64(tailShare*max(engines, 1))
	return max(min(t, full), max(full/minChunkDivisor, 1))
}

// add counts one valid request read.
func (s *chunkSizer) add(tokens int64) {
	s.requests++
	s.tokens += tokens
}

// estimateTokens guesses a request's engine work before it runs: its prompt at four
// bytes a token plus the completion it is expected to produce, which is its
// max_tokens, or less where the run says what completions usually take.
func estimateTokens(req batchfile.Request, expectedCompletion int) int64 {
	n := int64(len(req.Messages)+len(req.Prompt)) / 4
	completion := expectedCompletion
	if req.Sampling.MaxTokens != nil && (completion <= 0 || *req.Sampling.MaxTokens < completion) {
		completion = *req.Sampling.MaxTokens
	}
	return n + int64(max(completion, 0))
}
