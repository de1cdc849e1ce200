// Package metrics owns what a vbatch worker tells Prometheus: one OpenTelemetry
// MeterProvider exported at /metrics, carrying the Temporal SDK's metrics (through
// its OpenTelemetry handler) and vbatch's own, named vbatch_* (requests, tokens,
// engine load, chunk attempts, GPU telemetry, engine restarts).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.uber.org/zap"
)

// temporalScope is the meter the Temporal SDK's metrics are recorded on.
const temporalScope = "temporal-sdk-go"

// secondsBuckets are the histogram buckets of the SDK's latencies, which it records
// in seconds; OpenTelemetry's default buckets (0 to 10,000) suit milliseconds.
var secondsBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Exporter is a worker process's metrics: a MeterProvider whose readings Prometheus
// scrapes from Handler, beside the Go runtime's and the process's own.
type Exporter struct {
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	log      *zap.Logger
	stop     func(context.Context) error // the server's shutdown, once serving
}

// NewExporter starts an empty provider; instruments appear on /metrics as they are
// created and recorded.
func NewExporter(log *zap.Logger) (*Exporter, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(registry),
		// Prometheus names (dots to underscores, unit and _total suffixes), spelled
		// out so that a change of the library's default does not rename our metrics.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exporter),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "vbatch"))),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram, Scope: instrumentation.Scope{Name: temporalScope}},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: secondsBuckets}},
		)),
	)
	return &Exporter{provider: provider, registry: registry, log: log}, nil
}

// MeterProvider is where vbatch's instruments live (see NewWorker).
func (e *Exporter) MeterProvider() metric.MeterProvider { return e.provider }

// Temporal is the handler to set as client.Options.MetricsHandler: the SDK's
// metrics (temporal_*) on the same provider.
func (e *Exporter) Temporal() client.MetricsHandler {
	return temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{
		Meter: e.provider.Meter(temporalScope),
		// The SDK counters only go up; as monotonic counters they become
		// Prometheus counters (_total) that rate() understands.
		UseMonotonicCounters: true,
		// The handler's default is to panic; a metric that cannot be recorded
		// must not take a worker down.
		OnError: func(err error) { e.log.Warn("cannot record a Temporal SDK metric", zap.Error(err)) },
	})
}

// Handler serves the Prometheus text format.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{Registry: e.registry})
}

// Serve serves /metrics on addr (HOST:PORT; port 0 picks a free one) until Close,
// and returns the address it listens on.
func (e *Exporter) Serve(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", e.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	e.stop = func(ctx context.Context) error { return srv.Shutdown(ctx) }
	return ln.Addr().String(), nil
}

// Close stops the server (if Serve started one) and the provider.
func (e *Exporter) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e.stop != nil {
		_ = e.stop(ctx)
	}
	_ = e.provider.Shutdown(ctx)
}
