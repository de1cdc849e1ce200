package activities

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// Control holds the activities of the control worker. They move bytes between object
// storage and the run's folder and never touch a GPU.
type Control struct {
	Store  blob.Store
	Logger *zap.Logger
	// Temporal looks up the input of an earlier run for PlanRetry; nil disables
	// the lookup (a retry must then name the run's input).
	Temporal client.Client
}

// heartbeatEvery is how often a long storage activity says it is alive.
const heartbeatEvery = 5 * time.Second

// Plan streams the input once: every valid line goes to the current chunk object,
// every bad line to plan-errors.jsonl with its code and line number, and the plan
// is written as manifest.json. Memory stays bounded by a fixed window of lines in
// flight (batchfile.ReadParallel) and the set of custom_ids, whatever the input's
// size.
func (c *Control) Plan(ctx context.Context, in PlanInput) (PlanResult, error) {
	info, err := c.Store.Stat(ctx, in.Input)
	if errors.Is(err, blob.ErrNotFound) {
		return PlanResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("input %s does not exist", in.Input), ErrTypeConfig, err)
	}
	if err != nil {
		return PlanResult{}, fmt.Errorf("stat input: %w", err)
	}
	src, err := c.Store.Open(ctx, in.Input)
	if err != nil {
		return PlanResult{}, fmt.Errorf("open input: %w", err)
	}
	defer src.Close()

	engines, enginesFrom := c.planEngines(ctx, in)
	p := planner{ctx: ctx, store: c.Store, layout: in.Run, expectedCompletion: in.ExpectedCompletionTokens,
		sizer: chunkSizer{maxRequests: max(in.ChunkSize, 1), fullTokens: in.ChunkTokens, engines: engines, inputBytes: info.Size}}
	// Not cancelled with ctx: uploadFailed ends only when an upload fails.
	p.uploads, p.uploadFailed = errgroup.WithContext(context.WithoutCancel(ctx))
	p.uploads.SetLimit(chunkUploads)
	p.uploadBytes = semaphore.NewWeighted(chunkUploadBytes)
	p.free = make(chan []byte, chunkUploads+1)
	defer p.abort()
	if p.errs, err = c.Store.Create(ctx, in.Run.PlanErrors()); err != nil {
		return PlanResult{}, fmt.Errorf("create plan errors: %w", err)
	}
	p.errsBuf = bufio.NewWriterSize(p.errs, 64<<10)

	opts := batchfile.Options{MaxLineBytes: in.MaxLineBytes, Model: in.Model, Defaults: in.Sampling}
	res := PlanResult{Manifest: in.Run.Manifest(), InputBytes: info.Size}
	lastBeat := time.Now()
	var writeErr error // of the chunks or plan errors, not of reading the input
	// Parsing a line is most of Plan's CPU: the lines are parsed on every core and
	// handed here in input order, where custom_ids are claimed and chunks written.
	err = batchfile.ReadParallel(ctx, src, opts, runtime.GOMAXPROCS(0), func(it *batchfile.Item) error {
		res.Lines++
		if it.Bad != nil {
			res.Invalid++
			if writeErr = p.reject(in.Run, it.Bad); writeErr != nil {
				return writeErr
			}
		} else {
			res.Valid++
			if writeErr = p.add(it.Request, it.Encoded, it.Offset); writeErr != nil {
				return writeErr
			}
		}
		if time.Since(lastBeat) > heartbeatEvery {
			activity.RecordHeartbeat(ctx, res.Lines)
			lastBeat = time.Now()
		}
		return nil
	})
	if writeErr != nil {
		return PlanResult{}, writeErr
	}
	if err != nil {
		return PlanResult{}, fmt.Errorf("read %s: %w", in.Input, err)
	}
	if err := p.finish(); err != nil {
		return PlanResult{}, err
	}
	res.Chunks = p.chunks

	manifest := run.Manifest{
		Input: in.Input, InputETag: info.ETag, InputBytes: info.Size, Model: in.Model,
		ConfigHash: configHash(in), Lines: res.Lines, Valid: res.Valid, Invalid: res.Invalid,
		ChunkTokens: p.sizer.full(), Engines: engines, Chunks: p.chunks, PlannedAt: time.Now().UTC(),
	}
	if err := blob.WriteJSON(ctx, c.Store, in.Run.Manifest(), manifest); err != nil {
		return PlanResult{}, fmt.Errorf("write manifest: %w", err)
	}
	activity.GetLogger(ctx).Info("planned", "input", in.Input, "lines", res.Lines, "valid", res.Valid,
		"invalid", res.Invalid, "chunks", len(p.chunks), "engines", engines, "engines_from", enginesFrom)
	return res, nil
}

// Storing a chunk is a round trip to the store (its PutObject) that Plan used to
// wait for chunk after chunk, with every core idle. A chunk is built in memory and
// put from there while the next ones are built: up to chunkUploads at once, within
// chunkUploadBytes of them. The bytes keep a long run's chunks of the seed
// workload (about 1.2 MB each) to two uploads at once; a million tiny requests'
// chunks (85 KB) go sixteen at a time, where two left Plan at a third of a plain
// copy's speed, bound by the round trips. The uploads and the chunk being built
// take their buffers from a pool, so a long Plan reuses as many as were ever in
// use at once instead of allocating each chunk's bytes anew.
const (
	chunkUploads     = 16
	chunkUploadBytes = 5 << 19 // 2.5 MiB
)

// planner builds chunk objects one after another and stores them in the
// background, up to chunkUploads at once.
type planner struct {
	ctx                context.Context
	store              blob.Store
	layout             run.Layout
	sizer              chunkSizer
	expectedCompletion int
	start              int64 // input offset where the current chunk began

	chunks  []run.ChunkPlan
	cur     *run.ChunkPlan
	buf     []byte // the current chunk's lines
	errs    blob.Writer
	errsBuf *bufio.Writer

	// uploads stores chunk objects, up to chunkUploads at once and within
	// uploadBytes; uploadFailed ends when one fails, and uploads.Wait says which.
	// Their buffers come back through free.
	uploads      *errgroup.Group
	uploadBytes  *semaphore.Weighted
	uploadFailed context.Context
	free         chan []byte
}

// add appends req, encoded as its chunk line, to the current chunk; offset is where
// req's line ends in the input.
func (p *planner) add(req batchfile.Request, encoded []byte, offset int64) error {
	if p.cur == nil {
		p.cur = &run.ChunkPlan{Index: len(p.chunks), FirstLine: req.Line}
		p.buf = p.freeBuffer()
	}
	p.buf = append(p.buf, encoded...)
	tokens := estimateTokens(req, p.expectedCompletion)
	p.sizer.add(tokens)
	p.cur.Requests++
	p.cur.LastLine = req.Line
	p.cur.EstimatedTokens += tokens
	if p.cur.Requests >= p.sizer.maxRequests || p.cur.EstimatedTokens >= p.sizer.target(p.start, offset) {
		p.start = offset
		return p.closeChunk()
	}
	return nil
}

// freeBuffer is an empty buffer for the next chunk: one an upload gave back, or a
// new one.
func (p *planner) freeBuffer() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return nil
	}
}

func (p *planner) closeChunk() error {
	if p.cur == nil {
		return nil
	}
	if p.uploadFailed.Err() != nil {
		return p.uploads.Wait()
	}
	buf, idx := p.buf, p.cur.Index
	weight := min(int64(len(buf)), chunkUploadBytes)
	if err := p.uploadBytes.Acquire(p.uploadFailed, weight); err != nil {
		return p.uploads.Wait()
	}
	// Go waits here while chunkUploads are under way, so at most
	// chunkUploads+1 buffers ever exist and free never blocks.
	p.uploads.Go(func() error {
		defer p.uploadBytes.Release(weight)
		defer func() { p.free <- buf }()
		if err := p.store.Put(p.ctx, p.layout.Chunk(idx), buf); err != nil {
			return fmt.Errorf("store chunk %d: %w", idx, err)
		}
		return nil
	})
	p.chunks = append(p.chunks, *p.cur)
	p.cur, p.buf = nil, nil
	return nil
}

func (p *planner) reject(layout run.Layout, bad *batchfile.LineError) error {
	line := batchfile.Failure(layout.LineID(bad.Line), bad.CustomID, bad.Line, 400, bad.Code, bad.Message)
	b, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("encode error of line %d: %w", bad.Line, err)
	}
	if _, err := p.errsBuf.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write plan errors: %w", err)
	}
	return nil
}

func (p *planner) finish() error {
	if err := p.closeChunk(); err != nil {
		return err
	}
	if err := p.uploads.Wait(); err != nil {
		return err
	}
	if err := p.errsBuf.Flush(); err != nil {
		return fmt.Errorf("write plan errors: %w", err)
	}
	err := p.errs.Close()
	p.errs = nil
	if err != nil {
		return fmt.Errorf("close plan errors: %w", err)
	}
	return nil
}

// abort drops the plan errors still open after a failure, once the chunks being
// stored are.
func (p *planner) abort() {
	_ = p.uploads.Wait()
	if p.errs != nil {
		_ = p.errs.Abort()
	}
}

// configHash names what the answers depend on besides the request lines.
func configHash(in PlanInput) string {
	b, _ := json.Marshal(struct {
		Model    string             `json:"model"`
		Sampling batchfile.Sampling `json:"sampling"`
	}{in.Model, in.Sampling})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// LoadChunks reads the plans of the given chunks from the run's manifest: how a
// run that continued as new gets back the chunks it still has to generate, so its
// input carries index ranges instead of the plan.
func (c *Control) LoadChunks(ctx context.Context, in LoadChunksInput) ([]run.ChunkPlan, error) {
	var manifest run.Manifest
	if err := blob.ReadJSON(ctx, c.Store, in.Run.Manifest(), &manifest); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	byIndex := make(map[int]run.ChunkPlan, len(manifest.Chunks))
	for _, chunk := range manifest.Chunks {
		byIndex[chunk.Index] = chunk
	}
	var chunks []run.ChunkPlan
	for _, r := range in.Chunks {
		for i := r.First; i <= r.Last; i++ {
			chunk, ok := byIndex[i]
			if !ok {
				return nil, temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("chunk %d is not in the plan at %s", i, in.Run.Manifest()), ErrTypeConfig, nil)
			}
			chunks = append(chunks, chunk)
		}
	}
	return chunks, nil
}
