//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// Requests with 32 system prompts interleaved, on sim engines whose KV cache holds
// the blocks of about 7 requests: fed in input order a system prompt is mostly
// evicted before it comes back; grouped by prefix within each chunk (the default)
// it is reused at once. The report's prefix-cache hit rate shows the difference.
func TestPrefixGroupingRaisesTheCacheHitRate(t *testing.T) {
	const model, n = "e2e/prefix", 1200
	startWorkers(t, model, 2, "--sim-kv-cache-tokens", "8192")
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: n, Seed: 5, SystemPrompts: 32}); err != nil {
		t.Fatal(err)
	}
	input := fmt.Sprintf("s3://%s/prefix/requests.jsonl", stack.Bucket)
	putObject(t, input, in.Bytes())

	hitRate := func(id string, keepInputOrder bool) float64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		wf, err := temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.ControlTaskQueue},
			workflows.WorkflowType, workflows.BatchInput{Input: input, Model: model, ChunkSize: 300, Engines: 1, KeepInputOrder: keepInputOrder})
		if err != nil {
			t.Fatal(err)
		}
		var res workflows.BatchResult
		if err := wf.Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		if res.Answered != n || res.Errors != 0 {
			t.Fatalf("%s: %d answered, %d errors; want all %d answered", id, res.Answered, res.Errors, n)
		}
		var r report.Report
		if err := blob.ReadJSON(ctx, store, run.NewLayout(run.DefaultOutput(input), run.ID(id)).ReportJSON(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Tokens.Cached <= 0 || r.Tokens.Cached >= r.Tokens.Prompt {
			t.Errorf("%s: %d of %d prompt tokens cached: the sim's prefix cache did not report", id, r.Tokens.Cached, r.Tokens.Prompt)
		}
		return r.Tokens.PrefixCacheHitRate
	}
	grouped := hitRate("prefix-grouped", false)
	inputOrder := hitRate("prefix-input-order", true)
	t.Logf("PREFIX | %d requests, 32 system prompts, sim KV cache 8,192 tokens | hit rate grouped %.3f | input order %.3f", n, grouped, inputOrder)
	if grouped < inputOrder+0.15 {
		t.Errorf("prefix-cache hit rate %.3f grouped by prefix, %.3f in input order: want grouping to gain at least 0.15", grouped, inputOrder)
	}
}
