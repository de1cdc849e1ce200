package metrics

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/vbatch/vbatch/internal/gpu"
)

// Outcomes of a request, as the outcome label of vbatch_requests_total carries
// them: OutcomeAnswered, or the error code of the request's error line.
const OutcomeAnswered = "answered"

// chunkBuckets are the bounds of vbatch_chunk_duration_seconds: chunks are
// seconds (the simulator) to an hour (a slow model on a big chunk) long.
var chunkBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// Worker records vbatch's own metrics of a GPU worker. A nil *Worker records
// nothing, so that code without metrics (tests, --metrics-addr unset) needs no
// branches.
type Worker struct {
	requests         metric.Int64Counter
	promptTokens     metric.Int64Counter
	completionTokens metric.Int64Counter
	chunkAttempts    metric.Int64Counter
	chunkRetries     metric.Int64Counter
	chunkDuration    metric.Float64Histogram
	engineRestarts   metric.Int64Counter

	meter            metric.Meter
	engineInFlight   metric.Int64ObservableGauge
	engineQueueDepth metric.Int64ObservableGauge
	gpuUtilization   metric.Float64ObservableGauge
	gpuMemoryUsed    metric.Int64ObservableGauge
	gpuMemoryTotal   metric.Int64ObservableGauge
}

// NewWorker creates the vbatch_* instruments on mp.
func NewWorker(mp metric.MeterProvider) (*Worker, error) {
	m := mp.Meter("github.com/vbatch/vbatch")
	w := &Worker{meter: m}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	w.requests = counter("vbatch.requests", "{request}",
		"Requests the engines finished, by outcome: answered, or the error code of the request's error line.")
	w.promptTokens = counter("vbatch.prompt_tokens", "{token}", "Prompt tokens of the answered requests.")
	w.completionTokens = counter("vbatch.completion_tokens", "{token}", "Completion tokens of the answered requests.")
	w.chunkAttempts = counter("vbatch.chunk.attempts", "{attempt}",
		"GenerateChunk attempts that ended, by outcome: completed, failed, stopped (worker stopping) or cancelled.")
	w.chunkRetries = counter("vbatch.chunk.retries", "{attempt}",
		"GenerateChunk attempts that were retries (Temporal attempt 2 or later) of a chunk.")
	w.engineRestarts = counter("vbatch.engine.restarts", "{restart}", "Engine processes that died and were restarted, by engine slot.")
	var err error
	w.chunkDuration, err = m.Float64Histogram("vbatch.chunk.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of GenerateChunk attempts, by outcome."), metric.WithExplicitBucketBoundaries(chunkBuckets...))
	errs = append(errs, err)
	w.engineInFlight, err = m.Int64ObservableGauge("vbatch.engine.in_flight_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests submitted to the engine slot's engine that have no outcome yet (running or queued inside the engine)."))
	errs = append(errs, err)
	w.engineQueueDepth, err = m.Int64ObservableGauge("vbatch.engine.queue_depth", metric.WithUnit("{chunk}"),
		metric.WithDescription("Chunks leased to the engine slot: being fed to its engine or waiting for it."))
	errs = append(errs, err)
	w.gpuUtilization, err = m.Float64ObservableGauge("vbatch.gpu.utilization", metric.WithUnit("%"),
		metric.WithDescription("GPU utilisation from NVML, latest reading (about once a second)."))
	errs = append(errs, err)
	w.gpuMemoryUsed, err = m.Int64ObservableGauge("vbatch.gpu.memory.used", metric.WithUnit("By"),
		metric.WithDescription("GPU memory in use from NVML, latest reading."))
	errs = append(errs, err)
	w.gpuMemoryTotal, err = m.Int64ObservableGauge("vbatch.gpu.memory.total", metric.WithUnit("By"),
		metric.WithDescription("GPU memory in all from NVML."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return w, nil
}

// RequestDone counts one finished request: answered when errCode is empty, else
// failed with that code. A request generated again by a later attempt (its answer
// was lost with a checkpoint) counts again: these count the engines' work.
func (w *Worker) RequestDone(ctx context.Context, errCode string, promptTokens, completionTokens int) {
	if w == nil {
		return
	}
	outcome := errCode
	if outcome == "" {
		outcome = OutcomeAnswered
	}
	w.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
	if errCode == "" {
		w.promptTokens.Add(ctx, int64(promptTokens))
		w.completionTokens.Add(ctx, int64(completionTokens))
	}
}

// ChunkAttemptDone records a GenerateChunk attempt that ended with outcome after d;
// retry says Temporal started it after an earlier attempt failed.
func (w *Worker) ChunkAttemptDone(ctx context.Context, outcome string, retry bool, d time.Duration) {
	if w == nil {
		return
	}
	attrs := metric.WithAttributes(attribute.String("outcome", outcome))
	w.chunkAttempts.Add(ctx, 1, attrs)
	w.chunkDuration.Record(ctx, d.Seconds(), attrs)
	if retry {
		w.chunkRetries.Add(ctx, 1)
	}
}

// EngineRestarted counts a restart of the engine of slot.
func (w *Worker) EngineRestarted(slot int) {
	if w == nil {
		return
	}
	w.engineRestarts.Add(context.Background(), 1, metric.WithAttributes(attribute.Int("slot", slot)))
}

// EngineLoad is what an engine slot is doing at the moment of a scrape.
type EngineLoad struct {
	Slot             int
	InFlightRequests int64
	Chunks           int
}

// Observe reports the engines' load (read at each scrape) and, where monitor is
// not nil, the latest NVML reading of each GPU, until the returned stop is called.
func (w *Worker) Observe(engines func() []EngineLoad, monitor *gpu.Monitor) (stop func(), err error) {
	if w == nil {
		return func() {}, nil
	}
	reg, err := w.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, e := range engines() {
			slot := metric.WithAttributes(attribute.Int("slot", e.Slot))
			o.ObserveInt64(w.engineInFlight, e.InFlightRequests, slot)
			o.ObserveInt64(w.engineQueueDepth, int64(e.Chunks), slot)
		}
		if monitor == nil {
			return nil
		}
		for _, s := range monitor.Latest() {
			dev := metric.WithAttributes(attribute.Int("gpu", s.Index), attribute.String("uuid", s.UUID))
			o.ObserveFloat64(w.gpuUtilization, s.UtilizationPct, dev)
			o.ObserveInt64(w.gpuMemoryUsed, int64(s.MemoryUsedBytes), dev)
			o.ObserveInt64(w.gpuMemoryTotal, int64(s.MemoryTotalBytes), dev)
		}
		return nil
	}, w.engineInFlight, w.engineQueueDepth, w.gpuUtilization, w.gpuMemoryUsed, w.gpuMemoryTotal)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}
