//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// The report of a simulated run, measured again with `vbatch report --regenerate`,
// agrees section by section with what output.jsonl and errors.jsonl hold; the next
// run of the same series is compared with it score by score; report.html renders
// its charts in headless Chromium with no network.
func TestReportAgreesWithOutputAndErrors(t *testing.T) {
	const model, n = "e2e/report", 300
	startWorkers(t, model, 2)
	dir := t.TempDir()

	first := runReportWorkload(t, model, "e2e-report-1", 7)
	out, code := runVbatch(t, 2*time.Minute, nil, "report", "e2e-report-1", "--regenerate", "--format", "all", "--out", filepath.Join(dir, "r1"))
	if code != 0 {
		t.Fatalf("vbatch report --regenerate exited %d:\n%s", code, out)
	}
	r1 := readLocalReport(t, filepath.Join(dir, "r1"))
	md, err := os.ReadFile(filepath.Join(dir, "r1", "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	checkSections(t, string(md))
	want := expectedFigures(t, first)

	c := r1.Counts
	if c.Requests != n+4 || c.Answered != want.answered || c.Errors != len(want.errors) || want.answered != n {
		t.Errorf("counts %+v: want %d lines, %d answered (output.jsonl), %d errors (errors.jsonl)", c, n+4, want.answered, len(want.errors))
	}
	if !sameMap(c.ErrorsByCode, want.byCode) || !sameMap(r1.Reliability.ErrorsByCode, want.byCode) {
		t.Errorf("errors by code %v, errors.jsonl has %v", c.ErrorsByCode, want.byCode)
	}
	if r1.Tokens.Prompt != want.prompt || r1.Tokens.Completion != want.completion {
		t.Errorf("tokens %d + %d, output.jsonl has %d + %d", r1.Tokens.Prompt, r1.Tokens.Completion, want.prompt, want.completion)
	}
	if s := r1.TokenStats; s == nil || s.Total.P50 != want.p50 || s.Total.P95 != want.p95 || s.Total.Max != want.max {
		t.Errorf("token stats %+v, output.jsonl gives p50 %d p95 %d max %d", s, want.p50, want.p95, want.max)
	}
	q := r1.Quality
	if q == nil || q.Answers != want.answered || q.JSON != want.json || q.SchemaChecked != want.answered ||
		q.SchemaValid != want.schemaValid || q.Truncated != want.truncated {
		t.Errorf("quality %+v: output.jsonl has %d answers, %d JSON, %d that meet their schema, %d truncated",
			q, want.answered, want.json, want.schemaValid, want.truncated)
	}
	if !r1.Simulated || !strings.Contains(r1.Title, "SIMULATED") || !strings.Contains(string(md), "tokens/s (simulated)") ||
		strings.Count(string(md), "tokens/s") != strings.Count(string(md), "tokens/s (simulated)") {
		t.Errorf("a sim run's report must say simulated in its title and on every throughput: %q", r1.Title)
	}
	for _, figure := range []string{thousands(want.prompt), thousands(want.completion), thousands(want.prompt + want.completion),
		fmt.Sprintf("| %s | %d |", "duplicate_custom_id", want.byCode["duplicate_custom_id"])} {
		if !strings.Contains(string(md), figure) {
			t.Errorf("report.md does not show %q", figure)
		}
	}
	if len(r1.Series.TokensPerSecond) == 0 || len(r1.Series.InFlight) != 2 || len(r1.Chunks) != r1.Counts.Chunks || len(r1.Chunks) < 6 {
		t.Errorf("series: %d throughput points, %d engines in flight, %d chunk attempts; want both series and one attempt for each of the %d chunks (at least 6)",
			len(r1.Series.TokensPerSecond), len(r1.Series.InFlight), len(r1.Chunks), r1.Counts.Chunks)
	}
	// Publish wrote the same report into the run's folder.
	var inRun report.Report
	if err := blob.ReadJSON(context.Background(), store, first.Report, &inRun); err != nil {
		t.Fatal(err)
	}
	if inRun.Quality == nil || inRun.Quality.SchemaValid != want.schemaValid || len(inRun.Files.Report) < 6 {
		t.Errorf("the run's own report.json was not published again: quality %+v, files %v", inRun.Quality, inRun.Files.Report)
	}

	// The second night of the series: other résumés, so other scores.
	second := runReportWorkload(t, model, "e2e-report-2", 8)
	out, code = runVbatch(t, 2*time.Minute, nil, "report", "e2e-report-2", "--regenerate", "--format", "all", "--out", filepath.Join(dir, "r2"))
	if code != 0 {
		t.Fatalf("vbatch report --regenerate exited %d:\n%s", code, out)
	}
	r2 := readLocalReport(t, filepath.Join(dir, "r2"))
	changed, unchanged := scoreChanges(t, first.Output, second.Output)
	cmp := r2.Comparison
	if cmp == nil || cmp.Previous.RunID != "e2e-report-1" || cmp.Scores == nil || cmp.Scores.Changed != changed ||
		cmp.Scores.Unchanged != unchanged || changed == 0 {
		t.Fatalf("comparison %+v: want e2e-report-1 as the previous run, %d changed and %d unchanged scores", cmp, changed, unchanged)
	}
	out, code = runVbatch(t, time.Minute, nil, "compare", "e2e-report-1", "e2e-report-2", "--json")
	if code != 0 {
		t.Fatalf("vbatch compare exited %d:\n%s", code, out)
	}
	var viaCLI report.Comparison
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &viaCLI); err != nil || viaCLI.Scores == nil || viaCLI.Scores.Changed != changed {
		t.Errorf("vbatch compare: %v\n%s", err, out)
	}
	out, _ = runVbatch(t, time.Minute, nil, "compare", "e2e-report-1", "e2e-report-2")
	if !strings.Contains(out, fmt.Sprintf("%d changed", changed)) {
		t.Errorf("vbatch compare does not say %d changed:\n%s", changed, out)
	}

	screenshotReport(t, filepath.Join(dir, "r2", "report.html"))
}

// runReportWorkload runs n synthetic candidates plus 4 bad lines in series
// "e2e-report": 10 requests carry a schema their answers cannot meet, 10 a
// max_tokens too small for a whole answer.
func runReportWorkload(t *testing.T, model, id string, seed int64) workflows.BatchResult {
	t.Helper()
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: 300, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i, line := range strings.Split(strings.TrimSpace(in.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		body := l["body"].(map[string]any)
		switch {
		case i >= 10 && i < 20:
			body["response_format"] = map[string]any{"type": "json_schema", "json_schema": map[string]any{
				"name": "scored", "schema": map[string]any{"type": "object", "required": []string{"score"}}}}
		case i >= 20 && i < 30:
			body["max_tokens"] = 20
		}
		b, _ := json.Marshal(l)
		lines = append(lines, string(b))
		if i == 50 {
			lines = append(lines, `{"custom_id": "broken",`, lines[0]) // invalid_json, duplicate_custom_id
		}
	}
	lines = append(lines, `{"messages":[{"role":"user","content":"no id"}]}`,
		`{"custom_id":"emb","method":"POST","url":"/v1/embeddings","body":{"input":"x"}}`)
	input := fmt.Sprintf("s3://%s/report-e2e/%s.jsonl", stack.Bucket, id)
	putObject(t, input, []byte(strings.Join(lines, "\n")+"\n"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.ControlTaskQueue},
		workflows.WorkflowType, workflows.BatchInput{Input: input, Model: model, ChunkSize: 50,
			Labels: map[string]string{"series": "e2e-report"}})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.BatchResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// figures are what output.jsonl and errors.jsonl say, counted here.
type figures struct {
	answered, json, schemaValid, truncated int
	prompt, completion                     int64
	p50, p95, max                          int
	errors                                 []map[string]any
	byCode                                 map[string]int
}

func expectedFigures(t *testing.T, res workflows.BatchResult) figures {
	t.Helper()
	f := figures{byCode: map[string]int{}}
	var totals []int
	for i, l := range readJSONL(t, res.Output) {
		body := l["response"].(map[string]any)["body"].(map[string]any)
		choice := body["choices"].([]any)[0].(map[string]any)
		content := choice["message"].(map[string]any)["content"].(string)
		usage := body["usage"].(map[string]any)
		p, c := int(usage["prompt_tokens"].(float64)), int(usage["completion_tokens"].(float64))
		f.prompt += int64(p)
		f.completion += int64(c)
		totals = append(totals, p+c)
		isJSON := json.Valid([]byte(content))
		if isJSON {
			f.json++
		}
		if choice["finish_reason"] == "length" {
			f.truncated++
		}
		// Requests 11-20 asked for a "score" no candidate evaluation has; the others
		// for synth's evaluation schema.
		var id int
		fmt.Sscanf(l["custom_id"].(string), "cand-%d", &id)
		if (id < 11 || id > 20) && isEvaluation(content) {
			f.schemaValid++
		}
		f.answered = i + 1
	}
	slices.Sort(totals)
	rank := func(p float64) int { return totals[max(int(float64(len(totals))*p/100+0.999999), 1)-1] }
	f.p50, f.p95, f.max = rank(50), rank(95), totals[len(totals)-1]
	f.errors = readJSONL(t, res.ErrorsURI)
	for _, e := range f.errors {
		f.byCode[e["error"].(map[string]any)["code"].(string)]++
	}
	return f
}

// isEvaluation checks an answer against synth's evaluation schema by hand: every
// field there, no other, each rating and recommendation one of the schema's values.
func isEvaluation(content string) bool {
	type rated struct {
		Rating    *string `json:"rating"`
		Reasoning *string `json:"reasoning"`
	}
	var e struct {
		Recommendation *string `json:"recommendation"`
		Reasoning      *string `json:"reasoning"`
		Analysis       *struct {
			Educational *rated `json:"educational_pedigree"`
			Company     *rated `json:"company_pedigree"`
			Trajectory  *rated `json:"trajectory"`
			SWE         *struct {
				Value     *bool   `json:"value"`
				Reasoning *string `json:"reasoning"`
			} `json:"is_software_engineer"`
		} `json:"analysis"`
	}
	d := json.NewDecoder(strings.NewReader(content))
	d.DisallowUnknownFields()
	if d.Decode(&e) != nil || e.Recommendation == nil || e.Reasoning == nil || e.Analysis == nil {
		return false
	}
	if !slices.Contains([]string{"Strong Yes", "Yes", "Maybe", "No", "Strong No"}, *e.Recommendation) {
		return false
	}
	for _, r := range []*rated{e.Analysis.Educational, e.Analysis.Company, e.Analysis.Trajectory} {
		if r == nil || r.Rating == nil || r.Reasoning == nil || !slices.Contains([]string{"Great", "Good", "Okay", "Poor"}, *r.Rating) {
			return false
		}
	}
	return e.Analysis.SWE != nil && e.Analysis.SWE.Value != nil && e.Analysis.SWE.Reasoning != nil
}

// scoreChanges counts the custom_ids whose recommendation differs between two outputs.
func scoreChanges(t *testing.T, a, b string) (changed, unchanged int) {
	t.Helper()
	scores := func(uri string) map[string]string {
		out := map[string]string{}
		for _, l := range readJSONL(t, uri) {
			content := l["response"].(map[string]any)["body"].(map[string]any)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
			var eval struct{ Recommendation *string }
			if json.Unmarshal([]byte(content), &eval) == nil && eval.Recommendation != nil {
				out[l["custom_id"].(string)] = *eval.Recommendation
			}
		}
		return out
	}
	prev, cur := scores(a), scores(b)
	for id, s := range cur {
		if p, ok := prev[id]; ok {
			if p == s {
				unchanged++
			} else {
				changed++
			}
		}
	}
	return changed, unchanged
}

var reportSections = []string{"Hardware", "Model and engine configuration", "Memory breakdown", "Run configuration",
	"Performance", "Token statistics", "Context-window utilisation", "Observed concurrency", "Scaling projection",
	"Reliability", "Output quality", "Sample answer", "Comparison with the previous run", "Files generated"}

func checkSections(t *testing.T, md string) {
	t.Helper()
	for _, s := range reportSections {
		if !strings.Contains(md, "\n## "+s+"\n") {
			t.Errorf("report.md has no section %q", s)
		}
	}
	for _, chart := range []string{"throughput.svg", "timeline.svg", "in-flight.svg"} {
		if !strings.Contains(md, "](charts/"+chart+")") {
			t.Errorf("report.md does not link charts/%s", chart)
		}
	}
	if !strings.Contains(md, "PROJECTION FROM MEASURED THROUGHPUT") {
		t.Error("the scaling projection is not labelled as a projection")
	}
}

// screenshotReport opens report.html in Debian's chromium, headless and with every
// network path closed, and checks the screenshot shows the charts' colours. Without
// chromium the test says so and skips this step, unless VBATCH_REQUIRE_CHROMIUM is
// set (task e2e:report sets it).
func screenshotReport(t *testing.T, page string) {
	t.Helper()
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?i)<script|<link|<img|src=|url\(|@import|href="(https?:)?//`).Find(html); m != nil {
		t.Errorf("report.html refers to something outside itself: %q", m)
	}
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("VBATCH_REQUIRE_CHROMIUM") != "" {
			t.Fatal("chromium is not installed: apt-get install chromium (task e2e:report does)")
		}
		t.Log("chromium is not installed; the screenshot step is skipped (task e2e:report installs it)")
		return
	}
	shot := os.Getenv("VBATCH_REPORT_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "report.png")
	}
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(shot)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--user-data-dir="+t.TempDir(),
		// No name resolves and every request goes to a closed port: the page has only itself.
		"--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
		"--hide-scrollbars", "--window-size=1280,4800", "--screenshot="+shot, "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// The throughput and in-flight lines (#2563eb) and the timeline's completed
	// chunks (#60a5fa) must be on screen, drawn, not just described.
	for _, c := range []struct {
		name    string
		r, g, b uint8
		min     int
	}{{"chart lines", 0x25, 0x63, 0xeb, 300}, {"timeline bars", 0x60, 0xa5, 0xfa, 1000}} {
		if got := countColour(img, c.r, c.g, c.b); got < c.min {
			t.Errorf("screenshot %s has %d pixels of the %s' colour, want at least %d", shot, got, c.name, c.min)
		}
	}
	t.Logf("screenshot of report.html: %s", shot)
}

func countColour(img image.Image, r, g, b uint8) int {
	near := func(x uint32, y uint8) bool { d := int(x>>8) - int(y); return d >= -6 && d <= 6 }
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr, r) && near(pg, g) && near(pb, b) {
				n++
			}
		}
	}
	return n
}

func readLocalReport(t *testing.T, dir string) report.Report {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func sameMap(a, b map[string]int) bool {
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

func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
