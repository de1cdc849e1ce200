package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
)

// maxParts is S3's limit on the parts of one multipart upload.
const maxParts = 10_000

// firstBufferBytes is where the first part's buffer starts: it doubles from here
// as bytes arrive, so an object far under a part (an errors file, a report)
// costs a buffer of its own size rather than a whole part.
const firstBufferBytes = 64 << 10

// wholePartPast is where the first part's buffer stops doubling and takes a whole
// part: an object past a megabyte is most likely a streamed large one (Merge's
// output), and doubling on to 5 MiB would copy and drop 6 MB more at the start of
// each, which a worker's tight GC pays for in the writer's time.
const wholePartPast = 1 << 20

// s3Writer streams an object to S3 in parts of PartSize. By default a full part
// uploads before the writer takes more bytes, into the same buffer; with
// BackgroundParts, bytes fill one buffer while up to that many earlier parts
// upload from theirs. A part's buffer comes back for reuse once its upload ends,
// so a writer never holds more than BackgroundParts+1 buffers however large the
// object. Nothing is sent until a part is full: an object under one part goes up
// as a single PutObject on Close.
//
// The SDK's transfer manager was used here before. It reads from an io.Reader
// (a writer has to be piped into it), reads each object's first part with
// io.ReadAll (growing a slice to a part's size, several times over in garbage)
// and allocates a pool of Concurrency+1 more part buffers for each object: three
// parts' worth and a burst of garbage for every streamed object, none of it
// configurable. Merge streams the run's largest object, so its memory was mostly
// this.
type s3Writer struct {
	client   *s3.Client
	uri      string
	bucket   string
	key      string
	partSize int
	buffers  int // most buffers the writer may hold: BackgroundParts+1

	buf       []byte      // the part being filled
	allocated int         // buffers made so far
	spare     chan []byte // buffers whose part has uploaded
	finished  bool
	// writeErr is the first failed Write's error: the bytes it could not send
	// are lost, so Close must fail too rather than store what came before.
	writeErr error

	ctx      context.Context // Create's
	uploadID *string         // nil until the first part is sent
	uploads  *errgroup.Group // one per part uploading in the background, at most BackgroundParts
	failed   context.Context // done when an upload failed or ctx ended
	stop     context.CancelFunc

	mu    sync.Mutex
	parts []types.CompletedPart // by part number, filled in as uploads end
}

func (s *s3Store) newWriter(ctx context.Context, uri, bucket, key string) *s3Writer {
	buffers := s.cfg.BackgroundParts + 1
	return &s3Writer{
		client: s.client, uri: uri, bucket: bucket, key: key,
		partSize: int(s.cfg.PartSize), buffers: buffers,
		spare: make(chan []byte, buffers), ctx: ctx,
	}
}

func (w *s3Writer) Write(p []byte) (int, error) {
	if w.finished {
		return 0, fmt.Errorf("write %s: %w", w.uri, errWriterDone)
	}
	if w.writeErr != nil {
		return 0, w.writeErr
	}
	written := 0
	for len(p) > 0 {
		if len(w.buf) == w.partSize {
			if err := w.sendPart(); err != nil {
				w.writeErr = s3Error("write", w.uri, err)
				return written, w.writeErr
			}
		}
		n := min(w.partSize-len(w.buf), len(p))
		w.reserve(n)
		w.buf = append(w.buf, p[:n]...)
		written += n
		p = p[n:]
	}
	return written, nil
}

// reserve makes room for n more bytes in the part being filled, which is never
// more than a part's size. Only the first part's buffer ever grows, up to a
// megabyte and then to a whole part: later parts take a whole buffer, as they are
// known to fill it or be the last.
func (w *s3Writer) reserve(n int) {
	need := len(w.buf) + n
	if need <= cap(w.buf) {
		return
	}
	if w.uploadID != nil {
		w.buf = w.nextBuffer()
		return
	}
	size := max(2*cap(w.buf), need, firstBufferBytes)
	if size > wholePartPast {
		size = w.partSize
	}
	grown := make([]byte, len(w.buf), min(size, w.partSize))
	copy(grown, w.buf)
	w.buf = grown
}

// nextBuffer is an empty part buffer: a spare one, a new one while fewer than
// w.buffers exist, or the next one an upload gives back.
func (w *s3Writer) nextBuffer() []byte {
	select {
	case b := <-w.spare:
		return b
	default:
	}
	if w.allocated < w.buffers {
		w.allocated++
		return make([]byte, 0, w.partSize)
	}
	return <-w.spare
}

// sendPart uploads the full buffer: now, or in the background when the writer
// has buffers for that, waiting while BackgroundParts parts are uploading.
func (w *s3Writer) sendPart() error {
	number, part, err := w.takePart()
	if err != nil {
		return err
	}
	if w.buffers == 1 {
		err := w.uploadPart(number, part)
		w.buf = part[:0] // the next part fills the same buffer
		return err
	}
	w.uploads.Go(func() error {
		// Back before Go admits another part, so nextBuffer never waits long.
		defer func() { w.spare <- part[:0] }()
		return w.uploadPart(number, part)
	})
	return nil
}

// takePart numbers the buffer as the next part and takes it from the writer,
// starting the multipart upload at the first part.
func (w *s3Writer) takePart() (int32, []byte, error) {
	if w.uploadID == nil {
		if err := w.startUpload(); err != nil {
			return 0, nil, err
		}
	}
	if w.failed.Err() != nil {
		return 0, nil, w.failure()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	number := int32(len(w.parts) + 1)
	if number > maxParts {
		return 0, nil, fmt.Errorf("object is over S3's %d parts of %d bytes; raise the part size to write more", maxParts, w.partSize)
	}
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(number)})
	part := w.buf
	w.buf = nil
	if w.allocated == 0 {
		w.allocated = 1 // the first part's buffer, grown in place
	}
	return number, part, nil
}

func (w *s3Writer) uploadPart(number int32, part []byte) error {
	out, err := w.client.UploadPart(w.failed, &s3.UploadPartInput{
		Bucket: &w.bucket, Key: &w.key, UploadId: w.uploadID, PartNumber: aws.Int32(number),
		Body: bytes.NewReader(part), ContentLength: aws.Int64(int64(len(part))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return fmt.Errorf("part %d: %w", number, err)
	}
	w.mu.Lock()
	w.parts[number-1].ETag = out.ETag
	w.parts[number-1].ChecksumCRC32 = out.ChecksumCRC32
	w.mu.Unlock()
	return nil
}

func (w *s3Writer) startUpload() error {
	out, err := w.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{
		Bucket: &w.bucket, Key: &w.key, ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return err
	}
	w.uploadID = out.UploadId
	ctx, stop := context.WithCancel(w.ctx)
	w.uploads, w.failed = errgroup.WithContext(ctx)
	w.uploads.SetLimit(w.buffers - 1)
	w.stop = stop
	return nil
}

// failure is why the uploads stopped: a part's error, or the context's.
func (w *s3Writer) failure() error {
	if err := w.uploads.Wait(); err != nil {
		return err
	}
	return context.Cause(w.failed)
}

func (w *s3Writer) Close() error {
	if w.finished {
		return fmt.Errorf("close %s: %w", w.uri, errWriterDone)
	}
	w.finished = true
	if w.writeErr != nil {
		return fmt.Errorf("close %s: an earlier write failed: %w", w.uri, errors.Join(w.writeErr, w.discard()))
	}
	if w.uploadID == nil {
		err := putObject(w.ctx, w.client, w.bucket, w.key, w.buf)
		w.buf = nil
		if err != nil {
			return s3Error("close", w.uri, err)
		}
		return nil
	}
	err := w.complete()
	if err != nil {
		// The multipart upload's parts would otherwise linger, and cost, until
		// the bucket's lifecycle rule for incomplete uploads removes them.
		err = errors.Join(err, w.abortUpload())
		return s3Error("close", w.uri, err)
	}
	return nil
}

// complete sends the last part, waits for every part and completes the upload.
func (w *s3Writer) complete() error {
	defer w.stop()
	var err error
	if len(w.buf) > 0 {
		// The last part goes up from here, beside any part still uploading in
		// the background: it needs no buffer but its own.
		var number int32
		var part []byte
		if number, part, err = w.takePart(); err == nil {
			err = w.uploadPart(number, part)
		}
	}
	// Every part has ended before the upload is completed or aborted: a part
	// still arriving after an abort would linger.
	if waitErr := w.uploads.Wait(); err == nil {
		err = waitErr
	}
	w.buf = nil
	if err != nil {
		return err
	}
	_, err = w.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &w.bucket, Key: &w.key, UploadId: w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	})
	return err
}

func (w *s3Writer) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	if err := w.discard(); err != nil {
		return s3Error("abort", w.uri, err)
	}
	return nil
}

// discard stops the parts in flight and aborts the multipart upload, if one was
// started.
func (w *s3Writer) discard() error {
	w.buf = nil
	if w.uploadID == nil {
		return nil // nothing was sent
	}
	w.stop()
	_ = w.uploads.Wait() // the parts' errors are the cancellation's
	return w.abortUpload()
}

// abortUpload drops the multipart upload and its parts, on a fresh context so
// that a cancelled caller still leaves nothing behind.
func (w *s3Writer) abortUpload() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), abortTimeout)
	defer cancel()
	_, err := w.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: &w.bucket, Key: &w.key, UploadId: w.uploadID,
	})
	return err
}
