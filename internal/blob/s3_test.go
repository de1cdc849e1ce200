package blob_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/devstack/devstacktest"
)

// startS3 starts versitygw alone and returns a Store on it.
func startS3(t *testing.T, tune func(*blob.Config)) (blob.Store, *devstack.Stack) {
	t.Helper()
	st := devstacktest.Start(t, devstack.Options{NoTemporal: true})
	cfg := st.BlobConfig()
	if tune != nil {
		tune(&cfg)
	}
	s, err := blob.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

func TestS3Store(t *testing.T) {
	s, st := startS3(t, nil)
	testStore(t, s, "s3://"+st.Bucket+"/")

	_, err := s.Open(context.Background(), "s3://no-such-bucket/x.jsonl")
	if !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Errorf("Open in a missing bucket: err = %v, want ErrNotFound saying the bucket does not exist", err)
	}
}

// pattern is a reproducible stream of n pseudo-random bytes that is never
// held in memory whole, so memory measurements see only the store's buffers.
type pattern struct {
	rng  *rand.ChaCha8
	left int64
}

func newPattern(seed byte, n int64) *pattern {
	return &pattern{rng: rand.NewChaCha8([32]byte{seed}), left: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.rng.Read(b)
	p.left -= int64(n)
	return n, nil
}

func digest(t *testing.T, r io.Reader) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// writeStream copies n pattern bytes into uri in small writes, the way
// callers emit JSONL lines.
func writeStream(t *testing.T, s blob.Store, uri string, seed byte, n int64) {
	t.Helper()
	w, err := s.Create(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(w, newPattern(seed, n), make([]byte, 4096)); err != nil {
		w.Abort()
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestS3MultipartStreamedWrite(t *testing.T) {
	for _, background := range []int{0, 1} {
		t.Run(fmt.Sprintf("%d parts in the background", background), func(t *testing.T) {
			testMultipartStreamedWrite(t, background)
		})
	}
}

func testMultipartStreamedWrite(t *testing.T, background int) {
	const part = 5 << 20
	s, st := startS3(t, func(c *blob.Config) { c.PartSize, c.BackgroundParts = part, background })
	// S3 gives multipart objects an ETag ending in -<parts>. The sizes sit on
	// the writer's part boundaries: a last part that is exactly full is still
	// sent, and no empty part ever is.
	for _, tc := range []struct {
		name  string
		size  int64
		parts string // "" for a single PutObject
	}{
		{"under one part", part - 1, ""},
		{"exactly one part", part, ""},
		{"one byte over", part + 1, "-2"},
		{"exactly two parts", 2 * part, "-2"},
		{"four parts", 4 * part, "-4"},
		{"four parts and a byte", 4*part + 1, "-5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uri := "s3://" + st.Bucket + "/big/" + strings.ReplaceAll(tc.name, " ", "-") + ".jsonl"
			writeStream(t, s, uri, 1, tc.size)

			info, err := s.Stat(context.Background(), uri)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != tc.size {
				t.Errorf("size = %d, want %d", info.Size, tc.size)
			}
			if multipart := strings.Contains(info.ETag, "-"); tc.parts == "" && multipart || tc.parts != "" && !strings.HasSuffix(info.ETag, tc.parts) {
				t.Errorf("ETag %q: want parts %q", info.ETag, tc.parts)
			}
			r, err := s.Open(context.Background(), uri)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if digest(t, r) != digest(t, newPattern(1, tc.size)) {
				t.Error("bytes read back differ from bytes written")
			}
		})
	}
	if n := multipartUploads(t, st); n != 0 {
		t.Errorf("%d multipart uploads left open after the writes closed", n)
	}
}

// A small object (an errors file, a report) costs about its own size to write, not
// a whole part buffer: the writer's first buffer grows with what is written.
func TestS3SmallObjectCostsItsOwnSize(t *testing.T) {
	s, st := startS3(t, nil) // default 5 MiB parts
	uri := "s3://" + st.Bucket + "/small/errors.jsonl"
	line := []byte(`{"custom_id":"r1","error":{"code":"invalid_json","message":"line 1: not valid JSON"}}` + "\n")
	write := func() {
		w, err := s.Create(context.Background(), uri)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 { // about 2 KB, in line-sized writes
			if _, err := w.Write(line); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write() // warm the client: endpoint resolution, credentials, connections
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	write()
	runtime.ReadMemStats(&after)
	// The SDK's own request costs some tens of KB; a part buffer would be 5 MiB.
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("writing a 2 KB object allocated %d KB", allocated>>10)
	if allocated > 1<<20 {
		t.Errorf("writing a 2 KB object allocated %.1f MiB; want under 1 MiB", float64(allocated)/(1<<20))
	}
	info, err := s.Stat(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(20 * len(line)); info.Size != want || strings.Contains(info.ETag, "-") {
		t.Errorf("object: size %d, ETag %q; want %d bytes in one PutObject", info.Size, info.ETag, want)
	}
}

// A large object costs about one part buffer to write, whatever its size: the
// first buffer doubles to a megabyte, then takes a whole part, which every later
// part reuses.
func TestS3LargeObjectCostsAboutAPart(t *testing.T) {
	s, st := startS3(t, nil) // default 5 MiB parts
	uri := "s3://" + st.Bucket + "/large/output.jsonl"
	write := func() {
		w, err := s.Create(context.Background(), uri)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, newPattern(3, 12<<20)); err != nil { // three parts
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write() // warm the client
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	write()
	runtime.ReadMemStats(&after)
	// A part (5 MiB) and the doublings to a megabyte (2 MiB); doubling on to a
	// part would be 6 MiB more.
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("writing a 12 MiB object allocated %.1f MiB", float64(allocated)/(1<<20))
	if allocated > 9<<20 {
		t.Errorf("writing a 12 MiB object allocated %.1f MiB; want under 9 MiB", float64(allocated)/(1<<20))
	}
}

func TestS3AbortMidMultipartLeavesNothing(t *testing.T) {
	s, st := startS3(t, func(c *blob.Config) { c.PartSize = 5 << 20 })
	uri := "s3://" + st.Bucket + "/aborted/output.jsonl"
	w, err := s.Create(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	// 12 MiB: two parts are uploaded, the upload is well under way.
	if _, err := io.Copy(w, newPattern(2, 12<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(context.Background(), uri); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after Abort: err = %v, want ErrNotFound", err)
	}
	// Nor may parts linger on the server (they cost storage on AWS).
	if n := multipartUploads(t, st); n != 0 {
		t.Errorf("%d multipart uploads left after Abort", n)
	}
}

func TestS3CancelledContextAbortsUpload(t *testing.T) {
	s, st := startS3(t, func(c *blob.Config) { c.PartSize = 5 << 20 })
	uri := "s3://" + st.Bucket + "/cancelled/output.jsonl"
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, newPattern(3, 11<<20)); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The writer must not hang on a dead upload: further writes and Close fail.
	done := make(chan error, 1)
	go func() {
		_, werr := io.Copy(w, newPattern(3, 20<<20))
		done <- errors.Join(werr, w.Close())
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("writes after cancel succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("writer hung after its context was cancelled")
	}
	if _, err := s.Stat(context.Background(), uri); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after cancel: err = %v, want ErrNotFound", err)
	}
	if n := multipartUploads(t, st); n != 0 {
		t.Errorf("%d multipart uploads left after cancel", n)
	}
}

// A request the server refuses fails the write with the server's word for it, and
// the writer leaves nothing behind: no object (not even the bytes before the
// failure) and no open multipart upload.
func TestS3RefusedRequestLeavesNothing(t *testing.T) {
	for _, background := range []int{0, 1} {
		t.Run(fmt.Sprintf("%d parts in the background", background), func(t *testing.T) {
			testRefusedRequestLeavesNothing(t, background)
		})
	}
}

func testRefusedRequestLeavesNothing(t *testing.T, background int) {
	for _, tc := range []struct {
		name, want string
		refuse     func(*http.Request) bool
	}{
		{"second part", "part 2", func(r *http.Request) bool {
			return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "2"
		}},
		{"start of the upload", "CreateMultipartUpload", func(r *http.Request) bool {
			return r.Method == http.MethodPost && r.URL.Query().Has("uploads")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, st, refused := startRefusingS3(t, background, tc.refuse)
			uri := "s3://" + st.Bucket + "/refused/output.jsonl"
			w, err := s.Create(context.Background(), uri)
			if err != nil {
				t.Fatal(err)
			}
			_, writeErr := io.Copy(w, newPattern(5, 16<<20)) // four parts
			err = errors.Join(writeErr, w.Close())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "AccessDenied") {
				t.Fatalf("write and close: err = %v, want %s's AccessDenied", err, tc.want)
			}
			if refused.Load() == 0 {
				t.Fatal("the proxy refused nothing: the test did not test")
			}
			if _, err := s.Stat(context.Background(), uri); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Stat after the refusal: err = %v, want ErrNotFound", err)
			}
			if n := multipartUploads(t, st); n != 0 {
				t.Errorf("%d multipart uploads left after the refusal", n)
			}
		})
	}
}

// startRefusingS3 starts versitygw behind a proxy that answers the requests refuse
// picks with 403 AccessDenied (which the SDK does not retry) and passes the rest
// on. It counts the refusals.
func startRefusingS3(t *testing.T, background int, refuse func(*http.Request) bool) (blob.Store, *devstack.Stack, *atomic.Int32) {
	t.Helper()
	refused := new(atomic.Int32)
	s, st := startProxiedS3(t, func(c *blob.Config) { c.BackgroundParts = background },
		func(w http.ResponseWriter, r *http.Request) bool {
			if !refuse(r) {
				return false
			}
			refused.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>`)
			return true
		})
	return s, st, refused
}

// startProxiedS3 starts versitygw behind a proxy and returns a Store (tuned by
// tune) that reaches it through the proxy. answer handles a request itself and
// says so, or returns false to pass it on, keeping the Host it was signed for.
func startProxiedS3(t *testing.T, tune func(*blob.Config), answer func(http.ResponseWriter, *http.Request) bool) (blob.Store, *devstack.Stack) {
	t.Helper()
	_, st := startS3(t, nil)
	target, err := url.Parse(st.S3Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !answer(w, r) {
			forward.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(proxy.Close)
	cfg := st.BlobConfig()
	tune(&cfg)
	cfg.EndpointURL = proxy.URL
	s, err := blob.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// S3 takes at most 10,000 parts to an object: writing one that needs more fails,
// saying to raise the part size, and leaves nothing behind. The parts are
// answered by a proxy in front of the server, so that the test need not store
// 10,000 of them; starting and aborting the upload reach the server.
func TestS3WriterStopsAtTenThousandParts(t *testing.T) {
	const partSize = 16
	var parts atomic.Int32
	s, st := startProxiedS3(t, func(c *blob.Config) { c.PartSize = partSize },
		func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPut || !r.URL.Query().Has("partNumber") {
				return false
			}
			parts.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("ETag", `"part"`)
			return true
		})

	uri := "s3://" + st.Bucket + "/too-many-parts/output.jsonl"
	w, err := s.Create(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	_, writeErr := io.Copy(w, newPattern(7, partSize*10_001+1))
	err = errors.Join(writeErr, w.Close())
	if err == nil || !strings.Contains(err.Error(), "over S3's 10000 parts of 16 bytes; raise the part size") {
		t.Fatalf("writing 10,001 parts: err = %v, want the part limit and what to do", err)
	}
	if n := parts.Load(); n != 10_000 {
		t.Errorf("%d parts sent, want 10,000 and no more", n)
	}
	if _, err := s.Stat(context.Background(), uri); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after the failed write: err = %v, want ErrNotFound", err)
	}
	if n := multipartUploads(t, st); n != 0 {
		t.Errorf("%d multipart uploads left after the failed write", n)
	}
}

func multipartUploads(t *testing.T, st *devstack.Stack) int {
	t.Helper()
	c, err := blob.NewS3Client(context.Background(), st.BlobConfig())
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(st.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Uploads)
}

// heapPeak samples HeapInuse until stop is called and returns the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(quit)
		wg.Wait()
		return peak.Load()
	}
}

func TestS3LargeObjectMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MB through the local S3 server")
	}
	const size = 200 << 20
	// The default writer holds one 5 MiB part; the rest is the first part's
	// buffer as it grew, the test's and the SDK's own. Measured 16.3–16.6 MiB;
	// a second part buffer (BackgroundParts 1) measured 21.2–21.6 MiB.
	const limit = 20 << 20
	s, st := startS3(t, nil) // default PartSize and BackgroundParts, as production uses
	uri := "s3://" + st.Bucket + "/large/output.jsonl"
	runtime.GC()

	stop := heapPeak()
	start := time.Now()
	writeStream(t, s, uri, 4, size)
	writePeak := stop()
	t.Logf("wrote %d MiB in %s, peak HeapInuse %.1f MiB", size>>20, time.Since(start).Round(time.Millisecond), float64(writePeak)/(1<<20))

	runtime.GC()
	stop = heapPeak()
	start = time.Now()
	r, err := s.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	got := digest(t, r)
	r.Close()
	readPeak := stop()
	t.Logf("read %d MiB in %s, peak HeapInuse %.1f MiB", size>>20, time.Since(start).Round(time.Millisecond), float64(readPeak)/(1<<20))

	if got != digest(t, newPattern(4, size)) {
		t.Error("bytes read back differ from bytes written")
	}
	if writePeak > limit || readPeak > limit {
		t.Errorf("peak HeapInuse write %.1f MiB, read %.1f MiB; want both under %d MiB",
			float64(writePeak)/(1<<20), float64(readPeak)/(1<<20), limit>>20)
	}
}
