//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/devstack"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// A synthetic candidate batch submitted with the CLI runs through Temporal on two
// simulated GPUs: one output line per request, in input order, and a report.
func TestSubmitAnswersEveryRequestInInputOrder(t *testing.T) {
	const model, n = "e2e/submit", 1200
	startWorkers(t, model, 2)
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: n, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	input := "s3://" + stack.Bucket + "/submit/requests.jsonl"
	putObject(t, input, in.Bytes())

	out, code := runVbatch(t, 5*time.Minute, nil, "submit", "--input", input, "--model", model,
		"--chunk-size", "100", "--id", "e2e-submit", "--wait", "--json")
	if code != 0 {
		t.Fatalf("submit exited %d:\n%s", code, out)
	}
	var res workflows.BatchResult
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("submit --json printed no result: %v\n%s", err, out)
	}
	// Chunks of at most 100 lines, more of them where the tail is cut finer.
	layout := run.NewLayout(run.DefaultOutput(input), run.ID("e2e-submit"))
	chunks := plannedChunks(t, layout, n, 100)
	// Nobody said how many engines: Plan counted the GPU worker's two, from the
	// identity it polls with, and cut the tail for them.
	var manifest run.Manifest
	if err := blob.ReadJSON(context.Background(), store, layout.Manifest(), &manifest); err != nil || manifest.Engines != 2 {
		t.Errorf("the plan was cut for %d engines (%v), want the GPU worker's 2", manifest.Engines, err)
	}
	if res.Status != workflows.StatusCompleted || res.Answered != n || res.Errors != 0 || res.Chunks != len(chunks) || res.Chunks < 12 {
		t.Fatalf("result %+v, want %d answered in the plan's %d chunks (at least 12), completed", res, n, len(chunks))
	}
	if !res.Simulated {
		t.Error("a run on the sim engine must say it was simulated")
	}
	// The UI's summary of the run names its input, model and request count.
	desc, err := temporal.DescribeWorkflow(context.Background(), "e2e-submit", "")
	if err != nil {
		t.Fatal(err)
	}
	summary, err := desc.GetStaticSummary()
	if want := "vbatch " + input + " · " + model + " · 1,200 requests"; err != nil || summary != want {
		t.Errorf("the run's summary is %q (%v), want %q", summary, err, want)
	}
	lines := readJSONL(t, res.Output)
	if len(lines) != n {
		t.Fatalf("output.jsonl has %d lines, want %d", len(lines), n)
	}
	var prompt, completion int64
	for i, l := range lines {
		if want := fmt.Sprintf("cand-%05d", i+1); l["custom_id"] != want {
			t.Fatalf("output line %d is %v, want %s: output must be in input order", i+1, l["custom_id"], want)
		}
		body := l["response"].(map[string]any)["body"].(map[string]any)
		content := body["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
		var eval map[string]any
		if err := json.Unmarshal([]byte(content), &eval); err != nil || eval["recommendation"] == nil {
			t.Fatalf("answer %d is not a candidate evaluation: %v\n%s", i+1, err, content)
		}
		usage := body["usage"].(map[string]any)
		prompt += int64(usage["prompt_tokens"].(float64))
		completion += int64(usage["completion_tokens"].(float64))
	}
	if prompt != res.PromptTokens || completion != res.CompletionTokens {
		t.Errorf("tokens in output %d+%d, result says %d+%d", prompt, completion, res.PromptTokens, res.CompletionTokens)
	}
	if avg := float64(prompt) / n; avg < 650 || avg > 950 {
		t.Errorf("average prompt %.0f tokens, want near the seed's 790", avg)
	}
	if errs := readJSONL(t, res.ErrorsURI); len(errs) != 0 {
		t.Errorf("errors.jsonl has %d lines, want none", len(errs))
	}

	var rep report.Report
	if err := blob.ReadJSON(context.Background(), store, res.Report, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Counts.Answered != n || rep.Tokens.Prompt != prompt || rep.Tokens.Completion != completion || !rep.Simulated {
		t.Errorf("report disagrees with output: %+v %+v simulated=%v", rep.Counts, rep.Tokens, rep.Simulated)
	}
	if !strings.Contains(rep.Title, "SIMULATED") || len(rep.Engines) != 2 || rep.Tokens.TokensPerSecond <= 0 {
		t.Errorf("report title %q, %d engines, %.0f tokens/s: want SIMULATED, 2 engines, a throughput", rep.Title, len(rep.Engines), rep.Tokens.TokensPerSecond)
	}

	// Submitting the same id again returns the same run, not a second one.
	out, code = runVbatch(t, time.Minute, nil, "submit", "--input", input, "--model", model, "--id", "e2e-submit", "--wait", "--json")
	if code != 0 || !strings.Contains(out, `"run_id": "e2e-submit"`) {
		t.Fatalf("resubmitting the same id: exit %d\n%s", code, out)
	}
}

// The temporal CLI starts a run with the input field alone; every other field has its default.
func TestTemporalCLIStartsARunWithInputAlone(t *testing.T) {
	startWorkers(t, workflows.DefaultModel, 2)
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: 300, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	input := "s3://" + stack.Bucket + "/cli/requests.jsonl"
	putObject(t, input, in.Bytes())

	binDir, _ := devstack.FindBinDir()
	cli := exec.Command(filepath.Join(binDir, "temporal"), "workflow", "start", "--address", stack.TemporalAddress,
		"--type", "BatchInference", "--task-queue", "vbatch", "--workflow-id", "e2e-cli",
		"--input", fmt.Sprintf(`{"input":%q}`, input))
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("temporal workflow start: %v\n%s", err, out)
	}
	var res workflows.BatchResult
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := temporal.GetWorkflow(ctx, "e2e-cli", "").Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	chunks := plannedChunks(t, run.NewLayout(run.DefaultOutput(input), run.ID("e2e-cli")), 300, workflows.DefaultChunkSize)
	if res.Status != workflows.StatusCompleted || res.Answered != 300 || res.Chunks != len(chunks) || res.Chunks < 2 {
		t.Fatalf("result %+v: want 300 answered in the plan's %d chunks of the default size or less", res, len(chunks))
	}
	if want := "s3://" + stack.Bucket + "/cli/e2e-cli/output.jsonl"; res.Output != want {
		t.Errorf("output %s, want the default beside the input: %s", res.Output, want)
	}
	body := readJSONL(t, res.Output)[0]["response"].(map[string]any)["body"].(map[string]any)
	if body["model"] != workflows.DefaultModel {
		t.Errorf("model %v, want the default %s", body["model"], workflows.DefaultModel)
	}
}

// Every kind of bad line becomes one error record with its code and line number;
// every other line is answered; status --json shows the counts.
func TestBadInputLinesAreReportedAndTheRestAnswered(t *testing.T) {
	const model = "e2e/bad"
	startWorkers(t, model, 2)
	valid := func(id string) string {
		return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"Rate candidate %s"}],"max_tokens":64}}`, id, id)
	}
	lines := []string{
		valid("ok-1"),
		`{"custom_id": "broken",`,
		`[1, 2, 3]`,
		`{"messages":[{"role":"user","content":"no id"}]}`,
		valid("ok-1"),
		`{"custom_id":"empty","messages":[]}`,
		`{"custom_id":"emb","method":"POST","url":"/v1/embeddings","body":{"input":"x"}}`,
		"{\"custom_id\":\"utf8\",\"prompt\":\"caf\xe9\"}",
		`{"custom_id":"huge","prompt":"` + strings.Repeat("a", 1<<20+10) + `"}`,
		valid("ok-2"),
		`{"custom_id":"short","prompt":"Complete: the best engineers"}`,
		valid("ok-3"),
	}
	wantErr := map[int]string{
		2: batchfile.CodeInvalidJSON, 3: batchfile.CodeNotObject, 4: batchfile.CodeMissingCustomID,
		5: batchfile.CodeDuplicateCustomID, 6: batchfile.CodeEmptyPrompt, 7: batchfile.CodeUnknownURL,
		8: batchfile.CodeInvalidUTF8, 9: batchfile.CodeLineTooLong,
	}
	input := "s3://" + stack.Bucket + "/bad/requests.jsonl"
	putObject(t, input, []byte(strings.Join(lines, "\n")+"\n"))

	out, code := runVbatch(t, 3*time.Minute, nil, "submit", "--input", input, "--model", model, "--id", "e2e-bad", "--wait")
	if code != 0 {
		t.Fatalf("submit exited %d:\n%s", code, out)
	}
	out, code = runVbatch(t, time.Minute, nil, "status", "e2e-bad", "--json")
	if code != 0 {
		t.Fatalf("status exited %d:\n%s", code, out)
	}
	var res workflows.BatchResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if res.Requests != len(lines) || res.Answered != 4 || res.Errors != len(wantErr) || res.Status != workflows.StatusCompleted {
		t.Fatalf("status %+v: want %d requests, 4 answered, %d errors, completed", res, len(lines), len(wantErr))
	}
	for code, n := range map[string]int{batchfile.CodeInvalidJSON: 1, batchfile.CodeLineTooLong: 1, batchfile.CodeDuplicateCustomID: 1} {
		if res.ErrorsByCode[code] != n {
			t.Errorf("errors_by_code[%s] = %d, want %d", code, res.ErrorsByCode[code], n)
		}
	}

	errs := readJSONL(t, res.ErrorsURI)
	if len(errs) != len(wantErr) {
		t.Fatalf("errors.jsonl has %d lines, want %d", len(errs), len(wantErr))
	}
	prev := 0
	for _, e := range errs {
		detail := e["error"].(map[string]any)
		line := int(detail["line"].(float64))
		if line <= prev {
			t.Errorf("errors.jsonl is not in input order: line %d after %d", line, prev)
		}
		prev = line
		if detail["code"] != wantErr[line] {
			t.Errorf("line %d: code %v, want %s (%v)", line, detail["code"], wantErr[line], detail["message"])
		}
		if msg, _ := detail["message"].(string); msg == "" {
			t.Errorf("line %d: error without a message", line)
		}
	}
	var ids []string
	for _, l := range readJSONL(t, res.Output) {
		ids = append(ids, l["custom_id"].(string))
	}
	if got := strings.Join(ids, ","); got != "ok-1,ok-2,short,ok-3" {
		t.Errorf("output custom_ids %s, want ok-1,ok-2,short,ok-3", got)
	}
}

// Mistakes on the command line end with a clear message and a non-zero status,
// never a stack trace or a hang.
func TestCLIErrorsAreClear(t *testing.T) {
	startWorkers(t, "e2e/cli-errors", 1)
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing input object", nil,
			[]string{"submit", "--input", "s3://" + stack.Bucket + "/nothing/here.jsonl", "--model", "e2e/cli-errors"},
			"input s3://" + stack.Bucket + "/nothing/here.jsonl does not exist"},
		{"unknown model", nil,
			[]string{"submit", "--input", "s3://" + stack.Bucket + "/cli-errors/requests.jsonl", "--model", "no/such-model"},
			`no GPU worker serves model "no/such-model"`},
		{"Temporal unreachable", []string{"TEMPORAL_ADDRESS=127.0.0.1:1"},
			[]string{"submit", "--input", "s3://" + stack.Bucket + "/cli-errors/requests.jsonl"},
			"cannot reach Temporal at 127.0.0.1:1"},
		{"S3 unreachable", []string{"AWS_ENDPOINT_URL_S3=http://127.0.0.1:1"},
			[]string{"submit", "--input", "s3://" + stack.Bucket + "/cli-errors/requests.jsonl"},
			"cannot read input"},
		{"unknown run", nil, []string{"status", "no-such-run"}, `no run "no-such-run"`},
	}
	putObject(t, "s3://"+stack.Bucket+"/cli-errors/requests.jsonl", []byte(`{"custom_id":"a","prompt":"x"}`+"\n"))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runVbatch(t, 90*time.Second, c.env, c.args...)
			if code == 0 {
				t.Fatalf("exit 0, want an error:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output does not say %q:\n%s", c.want, out)
			}
			if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
				t.Errorf("output holds a stack trace:\n%s", out)
			}
		})
	}
}

// `vbatch demo --warmup N` first runs N other requests an engine through the same
// engines as a run of its own; the measured run, and the summary, hold only the
// requested ones.
func TestDemoWarmsUpInARunOfItsOwn(t *testing.T) {
	bin, err := devstack.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	summaryPath := filepath.Join(dir, "summary.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vbatchBin, "demo", "--engine", "sim", "--gpus", "2", "--n", "40", "--warmup", "25",
		"--max-tokens", "64", "--summary", summaryPath)
	cmd.Dir = dir // the demo's own stack keeps its state under the working directory
	cmd.Env = append(cmd.Environ(), "VBATCH_BIN_DIR="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vbatch demo --warmup: %v\n%s", err, tail(string(out), 30))
	}
	var summary demoResult
	data, err := os.ReadFile(summaryPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &summary); err != nil {
		t.Fatal(err)
	}
	if id := summary.Result.RunID; strings.HasSuffix(id, "-warmup") || summary.Report.Counts.Answered != 40 {
		t.Errorf("summary of run %s with %d answered: want the measured run's 40", id, summary.Report.Counts.Answered)
	}
	// Two simulated GPUs, two engines: 25 requests each.
	if !strings.Contains(string(out), "-warmup: 50 answered") {
		t.Errorf("the demo does not say what the warm-up ran:\n%s", tail(string(out), 30))
	}
	// versitygw keeps s3://BUCKET/KEY at .vbatch/demo/s3/BUCKET/KEY.
	runs, err := filepath.Glob(filepath.Join(dir, ".vbatch", "demo", "s3", "*", "demo", "demo-*", "output.jsonl"))
	if err != nil || len(runs) != 2 {
		t.Fatalf("runs with an output: %v (%v), want the warm-up's and the measured one's", runs, err)
	}
	for _, path := range runs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := 40
		if strings.HasSuffix(filepath.Dir(path), "-warmup") {
			want = 50
		}
		if got := bytes.Count(data, []byte("\n")); got != want {
			t.Errorf("%s: %d answers, want %d", path, got, want)
		}
	}
}
