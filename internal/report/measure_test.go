package report

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/run"
)

func TestMeasureCountsTokensAndErrorsFromTheRunsFiles(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil).measure(t, nil)

	c := r.Counts
	if c.Requests != 12 || c.Valid != 10 || c.Answered != 9 || c.Errors != 3 || r.Files.OutputLines != 9 || r.Files.ErrorsLines != 3 {
		t.Errorf("counts %+v, files %+v: want 12 lines, 10 valid, 9 answered, 3 errors", c, r.Files)
	}
	if want := map[string]int{"invalid_json": 1, "missing_custom_id": 1, "engine_error": 1}; !sameCounts(c.ErrorsByCode, want) {
		t.Errorf("errors by code %v, want %v", c.ErrorsByCode, want)
	}
	if r.Tokens.Prompt != 975 || r.Tokens.Completion != 364 || r.Tokens.Total != 1339 {
		t.Errorf("tokens %+v: want 975 prompt + 364 completion", r.Tokens)
	}
	// Per-request totals 100 100 130 140 140 155 170 194 210: nearest-rank p50 is
	// the 5th, p95 the 9th.
	if s := r.TokenStats; s == nil || s.Requests != 9 || s.Total.P50 != 140 || s.Total.P95 != 210 || s.Total.Max != 210 ||
		s.Completion.Max != 70 || s.Prompt.P50 != 105 {
		t.Errorf("token stats %+v: want total p50 140, p95 210, max 210; completion max 70; prompt p50 105", s)
	}
	if got := r.Tokens.TokensPerSecond; math.Abs(got-1339.0/32) > 1e-9 {
		t.Errorf("%.2f tokens/s, want 1339 tokens over the 32 s of generation", got)
	}
	if r.Tokens.Cached != 8*60 || math.Abs(r.Tokens.PrefixCacheHitRate-480.0/975) > 1e-9 {
		t.Errorf("cached %d, hit rate %.3f: want 480 of the 975 prompt tokens", r.Tokens.Cached, r.Tokens.PrefixCacheHitRate)
	}
	// Engine 1 ends its last chunk at 27 s, engine 0 at 36 s.
	if got := r.Timing.EngineFinishSpreadSeconds; got != 9 {
		t.Errorf("engine finish spread %.1f s, want 9", got)
	}
}

func TestMeasureChecksEveryAnswerAgainstItsRequestsFormat(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil).measure(t, nil)

	q := r.Quality
	if q == nil {
		t.Fatal("no quality section")
	}
	// 7 of 9 parse; 7 asked for the schema and 5 of them validate (one has a score
	// outside the enum, one was cut off); the one json_object answer is an array.
	if q.Answers != 9 || q.JSON != 7 || q.SchemaChecked != 7 || q.SchemaValid != 5 || q.JSONObjectChecked != 1 ||
		q.JSONObjectValid != 0 || q.Truncated != 1 {
		t.Errorf("quality %+v", q)
	}
	failed := map[string]string{}
	for _, f := range q.Failures {
		failed[f.CustomID] = f.Check
		if f.CustomID == "cand-3" && !strings.HasPrefix(f.Reason, "at '/recommendation': value must be one of") {
			t.Errorf("cand-3 fails its schema because %q; want where and why, on one line", f.Reason)
		}
	}
	if failed["cand-3"] != "json_schema" || failed["cand-7"] != "json_schema" || failed["cand-4"] != "json_object" {
		t.Errorf("failures %+v: want cand-3 and cand-7 against the schema, cand-4 as json_object", q.Failures)
	}
	if s := r.Sample; s == nil || s.CustomID != "cand-1" || s.Prompt != "Resume of cand-1" || s.PromptTokens != 100 {
		t.Errorf("sample %+v: want the first answer with its request's last message", s)
	}
	if len(r.Config.Sampling) != 3 || r.Config.Sampling[0].ResponseFormat != "json_schema" || r.Config.Sampling[0].Requests != 8 {
		t.Errorf("sampling %+v: want json_schema on 8 requests first, then json_object and text", r.Config.Sampling)
	}
	if r.Config.ChunkSize != 4 || r.Config.Chunks != 3 || r.Config.ConfigHash != "abc" {
		t.Errorf("config %+v", r.Config)
	}
}

func TestMeasureRecordsRetriesDeathsLostAttemptsAndOOMs(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil).measure(t, nil)

	rel := r.Reliability
	// Chunk 1's attempt 2 and chunk 2's attempt 2 are retries; chunk 2's attempt 1
	// wrote nothing; the engine of chunk 1's attempt 1 died of an OOM, and one
	// request's engine_error is an OOM too.
	if !rel.Measured || rel.Attempts != 4 || rel.Retries != 2 || rel.FailedAttempts != 1 || rel.LostAttempts != 1 ||
		rel.EngineRestarts != 1 || rel.OOMs != 2 {
		t.Errorf("reliability %+v", rel)
	}
	if len(rel.ErrorExamples) != 3 || rel.ErrorExamples[0].Code != "invalid_json" || rel.ErrorExamples[0].Line != 3 {
		t.Errorf("error examples %+v: want errors.jsonl's lines in order", rel.ErrorExamples)
	}
}

// An engine also answers requests of chunks leased to the worker's other engines.
// Where the attempts sampled its own count, the report gives that count, not the
// tokens of its chunks' answers; an engine without samples keeps the latter.
func TestEngineTokensAreWhatTheEngineItselfAnswered(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	f := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil)
	ctx := context.Background()
	// w/0's count went from 5,000 (a run before) to 5,700 over its chunks 0 and 2,
	// whose answers hold 1,045 tokens: w/1 answered some of their requests.
	for _, c := range []struct{ chunk, attempt int }{{0, 1}, {2, 2}} {
		var a run.AttemptResult
		uri := f.layout.AttemptResult(c.chunk, c.attempt)
		if err := blob.ReadJSON(ctx, f.store, uri, &a); err != nil {
			t.Fatal(err)
		}
		a.EngineBusy[0].Tokens, a.EngineBusy[1].Tokens = 5000+int64(c.chunk)*200, 5400+int64(c.chunk)*150
		if err := blob.WriteJSON(ctx, f.store, uri, a); err != nil {
			t.Fatal(err)
		}
	}
	r := f.measure(t, nil)

	if len(r.Engines) != 2 || r.Engines[0].Tokens != 700 || r.Engines[1].Tokens != 294 {
		t.Fatalf("engines %+v: want w/0 with its own 700 tokens, w/1 with its chunks' 294", r.Engines)
	}
	if got := r.Engines[0].TokensPerSecond; math.Abs(got-700.0/26) > 1e-9 {
		t.Errorf("w/0 %.2f tokens/s, want 700 over its 26 s", got)
	}
	if r.Tokens.Total != 1339 {
		t.Errorf("run tokens %d, want every answer's 1339 whatever the engines counted", r.Tokens.Total)
	}
}

func TestMeasureDerivesSeriesPerEngineThroughputAndMemory(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil).measure(t, nil)

	if len(r.Engines) != 2 || r.Engines[0].Tokens != 1045 || r.Engines[1].Tokens != 294 {
		t.Fatalf("engines %+v: want w/0 with 1045 tokens (chunks 0 and 2), w/1 with 294", r.Engines)
	}
	if got := r.Engines[0].TokensPerSecond; math.Abs(got-1045.0/26) > 1e-9 {
		t.Errorf("w/0 %.2f tokens/s, want 1045 over its 26 s from first chunk start to last chunk end", got)
	}
	var sum float64
	for _, v := range r.Series.TokensPerSecond {
		sum += v * r.Series.BucketSeconds
	}
	if r.Series.BucketSeconds != 1 || math.Round(sum) != 1339 {
		t.Errorf("tokens series sums to %.0f over %g s buckets, want every token once", sum, r.Series.BucketSeconds)
	}
	peak := map[string]int{}
	for _, es := range r.Series.InFlight {
		for _, v := range es.Values {
			peak[es.Engine] = max(peak[es.Engine], v)
		}
	}
	// w/0 had chunk 0's 4 requests before its first answer; w/1 had chunk 1's 3
	// in flight while its engine was dying.
	if r.Series.InFlightBasis != inFlightFromAnswers || peak["w/0"] != 4 || peak["w/1"] != 3 {
		t.Errorf("in flight peaks %v (%s), want w/0 4 and w/1 3", peak, r.Series.InFlightBasis)
	}
	if len(r.Series.GPUs) != 1 || len(r.Series.GPUs[0].Points) != 14 || r.Series.GPUs[0].Points[0].T != 10 {
		t.Fatalf("GPU tracks %+v: want GPU-a's 14 readings from 10 s", r.Series.GPUs)
	}
	var memPeak float64
	for _, p := range r.Series.GPUs[0].Points {
		memPeak = max(memPeak, p.MemoryGiB)
	}
	if memPeak != 65 {
		t.Errorf("GPU-a's series peaks at %.0f GiB, want 65", memPeak)
	}
	if len(r.Memory) != 2 {
		t.Fatalf("memory %+v: want one breakdown per engine", r.Memory)
	}
	// Engine w/0 reports 8 + 20 + 1 GiB; NVML saw 65 GiB at peak of 80.
	if m := r.Memory[0]; m.PeakGiB != 65 || m.TotalGiB != 80 || m.OtherGiB != 36 || m.HeadroomGiB != 15 {
		t.Errorf("memory of w/0 %+v: want peak 65, other 36, headroom 15 of 80", m)
	}
	if r.Context.MaxModelLen != 1000 || r.Context.MaxTotal != 210 {
		t.Errorf("context %+v", r.Context)
	}
	p := r.Projection
	if p.Basis != ProjectionBasis || len(p.Rows) != 4 || p.Rows[3].Requests != 200000 ||
		math.Abs(p.Rows[3].Seconds-200000*(1339.0/9)/(1339.0/32)) > 1e-6 {
		t.Errorf("projection %+v: want 200K requests at the measured tokens per request and tokens/s", p)
	}
}

func TestDownsampleGPUKeepsPeakMemoryAndTimeOrder(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	var ss []gpu.Sample
	for i := range 600 {
		for _, uuid := range []string{"GPU-a", "GPU-b"} {
			mem := uint64(10) << 30
			if i == 333 && uuid == "GPU-b" {
				mem = 79 << 30
			}
			ss = append(ss, gpu.Sample{Time: t0.Add(time.Duration(i) * time.Second), UUID: uuid, MemoryUsedBytes: mem, UtilizationPct: float64(i % 2 * 100)})
		}
	}
	got := DownsampleGPU(ss, 120)
	if len(got) != 120 {
		t.Fatalf("%d points, want 120 (60 per GPU)", len(got))
	}
	var peakB uint64
	for i, s := range got {
		if s.UtilizationPct != 50 {
			t.Fatalf("point %d utilisation %.1f, want the mean of alternating 0 and 100", i, s.UtilizationPct)
		}
		if i > 0 && got[i-1].UUID == s.UUID && !s.Time.After(got[i-1].Time) {
			t.Fatalf("point %d is not after the one before it", i)
		}
		if s.UUID == "GPU-b" {
			peakB = max(peakB, s.MemoryUsedBytes)
		}
	}
	if peakB != 79<<30 {
		t.Errorf("GPU-b peaks at %d GiB after downsampling, want its 79 GiB reading kept", peakB>>30)
	}
	if few := DownsampleGPU(ss[:10], 120); len(few) != 10 {
		t.Errorf("10 readings became %d, want them untouched", len(few))
	}
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMeasureHeartbeatsAtEveryChunk(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	f := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil)
	beats := 0
	if _, err := Measure(context.Background(), f.store, f.layout, Inputs{Started: t0, Heartbeat: func() { beats++ }}); err != nil {
		t.Fatal(err)
	}
	// Each of the 3 chunks: once listing its folder, once opening its requests.
	if beats < 6 {
		t.Errorf("%d heartbeats, want at least 6: a long report must keep its activity alive", beats)
	}
}
