package metrics

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/metrics/metricstest"
)

// oneGPU is a telemetry source of one GPU at 42 % with 10 of 80 GB in use.
type oneGPU struct{}

func (oneGPU) Devices() []gpu.Device {
	return []gpu.Device{{Index: 0, UUID: "GPU-a", MemoryTotalBytes: 80e9}}
}
func (oneGPU) Read() ([]gpu.Sample, error) {
	return []gpu.Sample{{Index: 0, UUID: "GPU-a", UtilizationPct: 42, MemoryUsedBytes: 10e9, MemoryTotalBytes: 80e9}}, nil
}
func (oneGPU) Close() error { return nil }

// What a worker records is on /metrics under the names the README lists, beside the
// Temporal SDK's metrics and the Go runtime's.
func TestScrapeShowsVbatchAndTemporalMetrics(t *testing.T) {
	e, err := NewExporter(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	addr, err := e.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(e.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w.RequestDone(ctx, "", 700, 120)
	w.RequestDone(ctx, "", 800, 80)
	w.RequestDone(ctx, "prompt_too_long", 0, 0)
	w.ChunkAttemptDone(ctx, "completed", false, 3*time.Second)
	w.ChunkAttemptDone(ctx, "failed", true, 90*time.Second)
	w.EngineRestarted(1)
	monitor := gpu.NewMonitor(ctx, oneGPU{}, time.Hour) // reads once, at once
	defer monitor.Stop()
	for len(monitor.Latest()) == 0 {
		time.Sleep(time.Millisecond)
	}
	stop, err := w.Observe(func() []EngineLoad {
		return []EngineLoad{{Slot: 0, InFlightRequests: 128, Chunks: 2}, {Slot: 1, InFlightRequests: 0, Chunks: 0}}
	}, monitor)
	if err != nil {
		t.Fatal(err)
	}
	h := e.Temporal()
	h.Counter("temporal_request").Inc(3)
	h.Timer("temporal_activity_execution_latency").Record(1500 * time.Millisecond)

	got := metricstest.Scrape(t, "http://"+addr+"/metrics")
	want := map[string]float64{
		`vbatch_requests_total{outcome="answered"}`:                        2,
		`vbatch_requests_total{outcome="prompt_too_long"}`:                 1,
		`vbatch_prompt_tokens_total`:                                       1500,
		`vbatch_completion_tokens_total`:                                   200,
		`vbatch_chunk_attempts_total{outcome="completed"}`:                 1,
		`vbatch_chunk_attempts_total{outcome="failed"}`:                    1,
		`vbatch_chunk_retries_total`:                                       1,
		`vbatch_chunk_duration_seconds_count{outcome="failed"}`:            1,
		`vbatch_chunk_duration_seconds_sum{outcome="failed"}`:              90,
		`vbatch_chunk_duration_seconds_bucket{outcome="completed",le="5"}`: 1,
		`vbatch_chunk_duration_seconds_bucket{outcome="failed",le="60"}`:   0,
		`vbatch_engine_restarts_total{slot="1"}`:                           1,
		`vbatch_engine_in_flight_requests{slot="0"}`:                       128,
		`vbatch_engine_queue_depth{slot="0"}`:                              2,
		`vbatch_engine_queue_depth{slot="1"}`:                              0,
		`vbatch_gpu_utilization_percent{gpu="0",uuid="GPU-a"}`:             42,
		`vbatch_gpu_memory_used_bytes{gpu="0",uuid="GPU-a"}`:               10e9,
		`vbatch_gpu_memory_total_bytes{gpu="0",uuid="GPU-a"}`:              80e9,
		`temporal_request_total`:                                           3,
		`temporal_activity_execution_latency_seconds_count`:                1,
		// The SDK's latencies get buckets in seconds, not OpenTelemetry's default ones.
		`temporal_activity_execution_latency_seconds_bucket{le="2.5"}`: 1,
		`temporal_activity_execution_latency_seconds_bucket{le="1"}`:   0,
	}
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", series, g, ok, v)
		}
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("the Go runtime's metrics are missing")
	}

	// Once the GPU worker stops observing, its engines and GPUs leave the page.
	stop()
	got = metricstest.Scrape(t, "http://"+addr+"/metrics")
	for series := range got {
		if strings.HasPrefix(series, "vbatch_engine_in_flight") || strings.HasPrefix(series, "vbatch_gpu_") {
			t.Errorf("%s still exported after stop", series)
		}
	}
}

// A nil Worker, what code without --metrics-addr holds, records nothing and does not crash.
func TestNilWorkerRecordsNothing(t *testing.T) {
	var w *Worker
	w.RequestDone(context.Background(), "", 1, 1)
	w.ChunkAttemptDone(context.Background(), "completed", true, time.Second)
	w.EngineRestarted(0)
	stop, err := w.Observe(func() []EngineLoad { t.Fatal("a nil Worker observed engines"); return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

// On a host with NVIDIA GPUs, the GPU gauges carry NVML's real readings; elsewhere
// the test skips, saying why.
func TestGPUGaugesFromNVML(t *testing.T) {
	devs, err := gpu.Discover()
	if err != nil {
		t.Skip("no GPUs here:", err)
	}
	monitor, err := gpu.StartMonitor(context.Background(), devs, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer monitor.Stop()
	e, err := NewExporter(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	addr, err := e.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(e.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Observe(func() []EngineLoad { return nil }, monitor); err != nil {
		t.Fatal(err)
	}
	for len(monitor.Latest()) < len(devs) {
		time.Sleep(10 * time.Millisecond)
	}
	got := metricstest.Scrape(t, "http://"+addr+"/metrics")
	for _, d := range devs {
		labels := `{gpu="` + strconv.Itoa(d.Index) + `",uuid="` + d.UUID + `"}`
		// An idle GPU may read 0 bytes used and 0 %; the series must exist all the same.
		total := got["vbatch_gpu_memory_total_bytes"+labels]
		used, usedOK := got["vbatch_gpu_memory_used_bytes"+labels]
		util, utilOK := got["vbatch_gpu_utilization_percent"+labels]
		t.Logf("GPU %d %s: %.2f of %.1f GiB used, %.0f%% utilisation", d.Index, d.Name, used/(1<<30), total/(1<<30), util)
		if total != float64(d.MemoryTotalBytes) || !usedOK || used > total || !utilOK || util < 0 || util > 100 {
			t.Errorf("GPU %d: memory %v (present %v) of %v, utilisation %v (present %v): want NVML's readings, total %d",
				d.Index, used, usedOK, total, util, utilOK, d.MemoryTotalBytes)
		}
	}
}
