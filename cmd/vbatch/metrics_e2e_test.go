//go:build integration

package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/metrics/metricstest"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// A GPU worker started with --metrics-addr serves Prometheus metrics: while a run
// works, its engines show requests in flight and the counters grow; afterwards the
// request and token counters equal the run's result, beside the Temporal SDK's
// own metrics.
func TestWorkerServesPrometheusMetrics(t *testing.T) {
	const model, n, chunkSize = "e2e/metrics", 400, 50
	// A slow simulated GPU, so that the run lasts long enough to be scraped mid-way.
	_, gpu := startWorkers(t, model, 2, "--metrics-addr", "127.0.0.1:0", "--sim-tokens-per-second", "5000", "--chunks-per-engine", "4")
	url := regexp.MustCompile(`http://[0-9.:]+/metrics`).FindString(gpu.out.String())
	if url == "" {
		t.Fatalf("the worker did not log where it serves metrics:\n%s", tail(gpu.out.String(), 20))
	}
	before := metricstest.Scrape(t, url)
	if sumSeries(before, "vbatch_requests_total", "") != 0 || len(seriesOf(before, "vbatch_engine_queue_depth")) != 2 {
		t.Fatalf("before any run: want no requests counted and a queue depth for each of the 2 engine slots:\n%s", dump(before, "vbatch_"))
	}

	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: n, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	input := "s3://" + stack.Bucket + "/metrics/requests.jsonl"
	putObject(t, input, in.Bytes())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run, err := temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "e2e-metrics", TaskQueue: workflows.ControlTaskQueue},
		workflows.WorkflowType, workflows.BatchInput{Input: input, Model: model, ChunkSize: chunkSize, Engines: 2})
	if err != nil {
		t.Fatal(err)
	}

	// During the run: some requests done, not all, and an engine busy.
	var during map[string]float64
	for {
		during = metricstest.Scrape(t, url)
		done := sumSeries(during, "vbatch_requests_total", "")
		if done > 0 && done < n && sumSeries(during, "vbatch_engine_in_flight_requests", "") > 0 {
			break
		}
		if done >= n || ctx.Err() != nil {
			t.Fatalf("never saw the run half done with requests in flight; last scrape:\n%s", dump(during, "vbatch_"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("mid-run scrape: %v of %d requests done, %v in flight, %v chunks on the engines", sumSeries(during, "vbatch_requests_total", ""), n,
		sumSeries(during, "vbatch_engine_in_flight_requests", ""), sumSeries(during, "vbatch_engine_queue_depth", ""))
	if sumSeries(during, "vbatch_engine_queue_depth", "") == 0 || sumSeries(during, "vbatch_prompt_tokens_total", "") == 0 {
		t.Errorf("mid-run: want chunks queued on the engines and prompt tokens counted:\n%s", dump(during, "vbatch_"))
	}
	if sumSeries(during, "temporal_request_total", "") == 0 {
		t.Errorf("mid-run: the Temporal SDK's temporal_request_total is missing or zero:\n%s", dump(during, "temporal_"))
	}

	var res workflows.BatchResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	// Plan cuts the tail finer, so there are at least n/chunkSize chunks.
	if res.Status != workflows.StatusCompleted || res.Answered != n || res.Chunks < n/chunkSize {
		t.Fatalf("result %+v, want %d answered in %d chunks or more", res, n, n/chunkSize)
	}

	after := metricstest.Scrape(t, url)
	exact := []struct {
		series, labels string
		want           float64
	}{
		{"vbatch_requests_total", `outcome="answered"`, float64(res.Answered)},
		{"vbatch_requests_total", "", float64(res.Answered + res.Errors)},
		{"vbatch_prompt_tokens_total", "", float64(res.PromptTokens)},
		{"vbatch_completion_tokens_total", "", float64(res.CompletionTokens)},
		{"vbatch_chunk_attempts_total", `outcome="completed"`, float64(res.Chunks)},
		{"vbatch_chunk_duration_seconds_count", "", float64(res.Chunks)},
		{"vbatch_chunk_retries_total", "", 0},
		{"vbatch_engine_in_flight_requests", "", 0},
		{"vbatch_engine_queue_depth", "", 0},
		// Every chunk attempt is an activity the SDK timed, on this worker's task queue.
		{"temporal_activity_execution_latency_seconds_count", `activity_type="GenerateChunk"`, float64(res.Chunks)},
	}
	for _, e := range exact {
		if got := sumSeries(after, e.series, e.labels); got != e.want {
			t.Errorf("after the run: %s{%s} = %v, want %v", e.series, e.labels, got, e.want)
		}
	}
	if res.PromptTokens == 0 || res.CompletionTokens == 0 {
		t.Errorf("the run counted no tokens: %+v", res)
	}
	if sumSeries(after, "temporal_request_total", "") <= sumSeries(during, "temporal_request_total", "") {
		t.Error("temporal_request_total did not grow while the run went on")
	}
	if t.Failed() {
		t.Logf("final scrape:\n%s", dump(after, "vbatch_")+dump(after, "temporal_activity"))
	}
}

// seriesOf returns the series of one metric name.
func seriesOf(m map[string]float64, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

// sumSeries adds the series of name whose labels contain label ("" for all).
func sumSeries(m map[string]float64, name, label string) float64 {
	var sum float64
	for k, v := range seriesOf(m, name) {
		if strings.Contains(k, label) {
			sum += v
		}
	}
	return sum
}

func dump(m map[string]float64, prefix string) string {
	var b strings.Builder
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && !strings.Contains(k, "_bucket{") {
			b.WriteString(k + " " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
		}
	}
	return b.String()
}
