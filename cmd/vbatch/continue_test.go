//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// A run of 30 chunks that continues as new every 8 chunks goes through several
// executions of one workflow id and still answers every request exactly once, in
// input order, in the folder of its first execution.
func TestContinueAsNewKeepsEveryRequest(t *testing.T) {
	const model, n, id = "e2e/continue", 600, "e2e-continue"
	startWorkers(t, model, 2)
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: n, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	input := "s3://" + stack.Bucket + "/continue/requests.jsonl"
	putObject(t, input, in.Bytes())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.ControlTaskQueue},
		workflows.WorkflowType, workflows.BatchInput{Input: input, Model: model, ChunkSize: 20, ContinueAsNewEvery: 8, MaxInFlightChunks: 4})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.BatchResult
	// GetWorkflow with no run id follows the chain of continued executions to its end.
	if err := temporal.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	// Chunks of at most 20 lines, cut finer toward the end: 30 or more.
	if res.Status != workflows.StatusCompleted || res.Answered != n || res.Errors != 0 || res.Chunks < 30 {
		t.Fatalf("result %+v: want %d answered in 30 chunks or more, completed", res, n)
	}
	if want := "s3://" + stack.Bucket + "/continue/" + id + "/output.jsonl"; res.Output != want {
		t.Errorf("output %s, want the first execution's folder %s", res.Output, want)
	}
	lines := readJSONL(t, res.Output)
	if len(lines) != n {
		t.Fatalf("output.jsonl has %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("cand-%05d", i+1); l["custom_id"] != want {
			t.Fatalf("output line %d is %v, want %s", i+1, l["custom_id"], want)
		}
	}

	executions, err := temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId = %q", id),
	})
	if err != nil {
		t.Fatal(err)
	}
	continued := 0
	for _, e := range executions.Executions {
		if e.Status == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
			continued++
		}
	}
	// 8 chunks per execution plus the ones still running when it drains (at most
	// 4): one hand-over per 8 to 12 chunks.
	if lo, hi := (res.Chunks-1)/12, (res.Chunks-1)/8; continued < lo || continued > hi || continued < 2 {
		t.Errorf("%d executions continued as new for %d chunks, want %d to %d (of %d listed)", continued, res.Chunks, lo, hi, len(executions.Executions))
	}
}
