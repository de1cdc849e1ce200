//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/vbatch/vbatch/workflows"
)

// A run started from the Temporal UI's Start Workflow form with the input alone
// shows its progress table in Current Details while it runs, and answers for every
// request. Debian's chromium, driven by playwright-core (e2e/ui/start-from-ui.mjs),
// plays the user. It runs where VBATCH_E2E_UI is set (task e2e:ui sets it after
// installing chromium and the npm package); the suite's stack then serves the UI.
func TestStartFromTemporalUI(t *testing.T) {
	if os.Getenv("VBATCH_E2E_UI") == "" {
		t.Skip("needs the Temporal UI, chromium and e2e/ui's node_modules: run `go tool task e2e:ui`")
	}
	if stack.UIAddress == "" {
		t.Fatal("the stack started without the Temporal UI")
	}
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: apt-get install chromium (task e2e:ui does)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: apt-get install nodejs npm (task e2e:ui does)")
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "e2e", "ui", "start-from-ui.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(script), "node_modules", "playwright-core")); err != nil {
		t.Fatal("playwright-core is not installed: npm ci in e2e/ui (task e2e:ui does)")
	}

	// 1,000 requests in 4 default-size chunks on one simulated GPU, two chunks at a
	// time: the run is still generating for a while after its first chunks are done.
	const id, n = "e2e-ui", 1000
	startWorkers(t, workflows.DefaultModel, 1, "--sim-tokens-per-second", "25000")
	input := "s3://" + stack.Bucket + "/ui/requests.jsonl"
	if out, code := runVbatch(t, time.Minute, nil, "sample", "candidates", "--n", strconv.Itoa(n), "--out", input); code != 0 {
		t.Fatalf("vbatch sample exited %d:\n%s", code, out)
	}

	shot := os.Getenv("VBATCH_UI_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "workflow.png")
	}
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	failureShot := strings.TrimSuffix(shot, ".png") + "-failure.png" // what the page showed when the script gave up
	_ = os.Remove(shot)
	_ = os.Remove(failureShot)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, script, "--ui", stack.UIAddress, "--namespace", stack.Namespace,
		"--workflow-id", id, "--input", input, "--screenshot", shot, "--chromium", browser)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	t.Logf("start-from-ui.mjs:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("driving the Temporal UI failed: %v (the page as it was: %s)\n%s", err, failureShot, stdout.String())
	}
	var seen struct {
		CurrentDetails string `json:"current_details"`
		Screenshot     string `json:"screenshot"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &seen); err != nil {
		t.Fatalf("start-from-ui.mjs printed no result: %v\n%s", err, stdout.String())
	}

	// The page showed the progress table of a run under way: the model, the phase,
	// chunks and requests done out of the totals, the throughput.
	d := seen.CurrentDetails
	chunks := regexp.MustCompile(`chunks\s+(\d+)\s+(\d+)\s+0\s+(\d+)\b`).FindStringSubmatch(d)
	requests := regexp.MustCompile(`requests\s+(\d+)\s+0\s+1000\b`).FindStringSubmatch(d)
	if !strings.Contains(d, "vbatch · "+workflows.DefaultModel+" · generating") || chunks == nil || requests == nil ||
		!strings.Contains(d, "tokens/s") {
		t.Fatalf("Current Details on the run's page are not its progress table:\n%s", d)
	}
	if done, _ := strconv.Atoi(requests[1]); done <= 0 || done >= n {
		t.Errorf("the page showed %d of %d requests done; want a run under way", done, n)
	}
	checkScreenshot(t, seen.Screenshot)

	// The UI started the workflow with the input alone.
	hist := temporal.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	first, err := hist.Next()
	if err != nil {
		t.Fatal(err)
	}
	attrs := first.GetWorkflowExecutionStartedEventAttributes()
	payloads := attrs.GetInput().GetPayloads()
	if attrs.GetTaskQueue().GetName() != workflows.ControlTaskQueue || attrs.GetWorkflowType().GetName() != workflows.WorkflowType ||
		len(payloads) != 1 || string(payloads[0].GetData()) != fmt.Sprintf(`{"input":%q}`, input) {
		t.Errorf("the UI started %s on %s with %d payloads %q; want BatchInference on vbatch with {\"input\":%q} alone",
			attrs.GetWorkflowType().GetName(), attrs.GetTaskQueue().GetName(), len(payloads), payloads, input)
	}

	var res workflows.BatchResult
	if err := temporal.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != workflows.StatusCompleted || res.Requests != n || !res.Simulated {
		t.Fatalf("result %+v: want %d requests, completed, simulated", res, n)
	}
	// Plan cuts the tail finer than the default 256 lines: 4 chunks or more, and
	// the page showed the plan's total.
	if total, _ := strconv.Atoi(chunks[3]); res.Chunks < 4 || total != res.Chunks {
		t.Errorf("the page showed %d chunks in all, the run had %d: want the same, at least 4", total, res.Chunks)
	}
	// Every custom_id of the input is in exactly one of output.jsonl and errors.jsonl.
	count := map[string]int{}
	for _, l := range readJSONL(t, input) {
		count[l["custom_id"].(string)] = 0
	}
	if len(count) != n {
		t.Fatalf("the input has %d distinct custom_ids, want %d", len(count), n)
	}
	answered := readJSONL(t, res.Output)
	for _, l := range append(answered, readJSONL(t, res.ErrorsURI)...) {
		id, _ := l["custom_id"].(string)
		if _, ok := count[id]; !ok {
			t.Fatalf("custom_id %q is not in the input", id)
		}
		count[id]++
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("custom_id %s is in output and errors %d times, want once", id, c)
		}
	}
	if len(answered) != res.Answered {
		t.Errorf("output.jsonl has %d lines, the result says %d answered", len(answered), res.Answered)
	}
	t.Logf("screenshot of the run's Current Details: %s", seen.Screenshot)
}

// checkScreenshot checks that the screenshot is a PNG of a whole page, not an
// empty or broken file.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 600 {
		t.Errorf("screenshot %s is %dx%d, want the whole page", path, b.Dx(), b.Dy())
	}
}
