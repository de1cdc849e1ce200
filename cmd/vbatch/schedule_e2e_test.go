//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/workflows"
)

// A schedule with a date-templated input, backfilled over three past nights, runs
// each night on that night's own file into that night's own folder, and each
// night's report compares it with the night before; the night whose file is
// missing ends Failed, saying which file.
func TestScheduleBackfillScoresEachNightFromItsOwnDate(t *testing.T) {
	const (
		model = "e2e/schedule"
		name  = "e2e-nightly"
	)
	startWorkers(t, model, 2)
	base := "s3://" + stack.Bucket + "/nightly"
	requests := map[string]int{"2026-01-01": 45, "2026-01-02": 61} // 2026-01-03 has no file
	for date, n := range requests {
		var lines strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&lines, `{"custom_id":"%s-%03d","messages":[{"role":"user","content":"Rate candidate %d of %s"}],"max_tokens":32}`+"\n", date, i, i, date)
		}
		putObject(t, base+"/candidates/"+date+"/requests.jsonl", []byte(lines.String()))
	}

	out, code := runVbatch(t, time.Minute, nil, "schedule", "create", name, "--cron", "0 2 * * *",
		"--input", base+"/candidates/{{.Date}}/requests.jsonl", "--output", base+"/scores/{{.Date}}/",
		"--model", model, "--chunk-size", "20", "--paused", "--note", "backfill only", "--json")
	if code != 0 {
		t.Fatalf("schedule create exited %d:\n%s", code, out)
	}
	t.Cleanup(func() { runVbatch(t, time.Minute, nil, "schedule", "delete", name) })
	var created scheduleView
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &created); err != nil {
		t.Fatalf("schedule create --json: %v\n%s", err, out)
	}
	if !created.Paused || created.Overlap != "skip" || created.CatchupWindow != "24h0m0s" ||
		created.Run == nil || created.Run.Input != base+"/candidates/{{.Date}}/requests.jsonl" {
		t.Fatalf("created %+v: want paused, overlap skip, catch-up 24h, the input template unresolved", created)
	}
	out, code = runVbatch(t, time.Minute, nil, "schedule", "create", name, "--cron", "0 2 * * *", "--input", base+"/x.jsonl")
	if code == 0 || !strings.Contains(out, "already exists") {
		t.Errorf("creating %s twice: exit %d, want it refused as existing:\n%s", name, code, out)
	}
	out, code = runVbatch(t, time.Minute, nil, "schedule", "create", "e2e-bad", "--cron", "0 2 * * *", "--input", base+"/{{.Day}}/x.jsonl")
	if code == 0 || !strings.Contains(out, "can't evaluate field Day") {
		t.Errorf("a bad template must be refused at create: exit %d\n%s", code, out)
	}

	out, code = runVbatch(t, time.Minute, nil, "schedule", "backfill", name, "--from", "2026-01-01", "--to", "2026-01-03")
	if code != 0 {
		t.Fatalf("schedule backfill exited %d:\n%s", code, out)
	}

	// The three nights start one after another, also while the schedule is paused.
	ctx := context.Background()
	var view scheduleView
	deadline := time.Now().Add(4 * time.Minute)
	for {
		out, code = runVbatch(t, time.Minute, nil, "schedule", "describe", name, "--json")
		if code != 0 {
			t.Fatalf("schedule describe exited %d:\n%s", code, out)
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &view); err != nil {
			t.Fatalf("schedule describe --json: %v\n%s", err, out)
		}
		if len(view.RecentRuns) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backfill did not run three nights in time: %+v", view)
		}
		time.Sleep(time.Second)
	}
	sort.Slice(view.RecentRuns, func(i, j int) bool { return view.RecentRuns[i].Scheduled.Before(view.RecentRuns[j].Scheduled) })
	if view.Cron[0] != "0 2 * * *" {
		t.Errorf("describe shows the cron as %q, want it as created", view.Cron)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	var previous string
	for i, date := range []string{"2026-01-01", "2026-01-02"} {
		r := view.RecentRuns[i]
		if got := r.Scheduled.UTC().Format(time.RFC3339); got != date+"T02:00:00Z" {
			t.Fatalf("run %d was scheduled for %s, want %sT02:00:00Z", i+1, got, date)
		}
		var res workflows.BatchResult
		if err := temporal.GetWorkflow(waitCtx, r.RunID, "").Get(waitCtx, &res); err != nil {
			t.Fatalf("night %s (%s): %v", date, r.RunID, err)
		}
		wantFolder := base + "/scores/" + date + "/" + run.ID(r.RunID)
		if res.Status != workflows.StatusCompleted || res.Answered != requests[date] || res.Errors != 0 ||
			res.Output != wantFolder+"/output.jsonl" {
			t.Fatalf("night %s: %+v, want %d answered into %s, though it ran on %s",
				date, res, requests[date], wantFolder, r.Started.Format(time.DateOnly))
		}
		seen := map[string]int{}
		for _, l := range readJSONL(t, res.Output) {
			id, _ := l["custom_id"].(string)
			if !strings.HasPrefix(id, date+"-") {
				t.Fatalf("night %s answered %s: a line of another night's file", date, id)
			}
			seen[id]++
		}
		for k := 1; k <= requests[date]; k++ {
			if id := fmt.Sprintf("%s-%03d", date, k); seen[id] != 1 {
				t.Errorf("night %s: %s answered %d times, want once", date, id, seen[id])
			}
		}

		var rep report.Report
		if err := blob.ReadJSON(ctx, store, res.Report, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Labels["schedule"] != name || rep.Input != base+"/candidates/"+date+"/requests.jsonl" || !rep.Scheduled.Equal(r.Scheduled) {
			t.Errorf("night %s report: labels %v, input %s, scheduled %s: want schedule=%s, its own date's input and time",
				date, rep.Labels, rep.Input, rep.Scheduled, name)
		}
		switch {
		case previous == "" && rep.Comparison != nil:
			t.Errorf("the first night compares with %s; there is no night before it", rep.Comparison.Previous.RunID)
		case previous != "" && (rep.Comparison == nil || rep.Comparison.Previous.RunID != previous):
			t.Errorf("night %s's report does not compare with the night before (%s): %+v", date, previous, rep.Comparison)
		}
		previous = run.ID(r.RunID)
	}
	var idx report.SeriesIndex
	if err := blob.ReadJSON(ctx, store, base+"/scores/_series/"+name+".json", &idx); err != nil || len(idx.Runs) != 2 {
		t.Errorf("the series index at the output template's fixed part: %v, %d runs; want both nights", err, len(idx.Runs))
	}

	// The night without a file fails at once, saying which file, without retries.
	missing := view.RecentRuns[2]
	_ = temporal.GetWorkflow(waitCtx, missing.RunID, "").Get(waitCtx, nil)
	desc, err := temporal.DescribeWorkflowExecution(ctx, missing.RunID, "")
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_FAILED {
		t.Fatalf("the night without input ended %s, want Failed", st)
	}
	wantMsg := "input " + base + "/candidates/2026-01-03/requests.jsonl does not exist"
	out, code = runVbatch(t, time.Minute, nil, "status", missing.RunID)
	if code == 0 || !strings.Contains(out, wantMsg) {
		t.Errorf("status of the night without input: exit %d, want it to say %q:\n%s", code, wantMsg, out)
	}
	// A retry finds that night's folder from the run's own scheduled time.
	out, code = runVbatch(t, time.Minute, nil, "retry", missing.RunID)
	if wantFolder := base + "/scores/2026-01-03/" + run.ID(missing.RunID) + "/manifest.json"; code == 0 || !strings.Contains(out, wantFolder) {
		t.Errorf("retry of the night without input: exit %d, want it to look for %s:\n%s", code, wantFolder, out)
	}

	// A triggered run stands for the time it was triggered: today, whose file is missing.
	if out, code = runVbatch(t, time.Minute, nil, "schedule", "trigger", name); code != 0 {
		t.Fatalf("schedule trigger: exit %d\n%s", code, out)
	}
	var triggered *scheduledRun
	for deadline := time.Now().Add(time.Minute); triggered == nil; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the triggered run did not start in a minute")
		}
		out, _ = runVbatch(t, time.Minute, nil, "schedule", "describe", name, "--json")
		var v scheduleView
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &v); err != nil {
			t.Fatalf("schedule describe --json: %v\n%s", err, out)
		}
		for _, r := range v.RecentRuns {
			if r.Scheduled.After(view.RecentRuns[2].Scheduled) {
				triggered = &r
			}
		}
	}
	if since := time.Since(triggered.Scheduled); since < 0 || since > 2*time.Minute {
		t.Errorf("the triggered run stands for %s, want about now", triggered.Scheduled)
	}
	_ = temporal.GetWorkflow(waitCtx, triggered.RunID, "").Get(waitCtx, nil)
	wantMsg = "input " + base + "/candidates/" + triggered.Scheduled.UTC().Format(time.DateOnly) + "/requests.jsonl does not exist"
	if out, code = runVbatch(t, time.Minute, nil, "status", triggered.RunID); code == 0 || !strings.Contains(out, wantMsg) {
		t.Errorf("status of the triggered run: exit %d, want it to say %q:\n%s", code, wantMsg, out)
	}

	// A run submitted with the same templates resolves them from its own start.
	today := time.Now().UTC().Format(time.DateOnly)
	putObject(t, base+"/candidates/"+today+"/requests.jsonl", []byte(`{"custom_id":"today-1","prompt":"Rate candidate 1"}`+"\n"))
	out, code = runVbatch(t, 2*time.Minute, nil, "submit", "--input", base+"/candidates/{{.Date}}/requests.jsonl",
		"--output", base+"/scores/{{.Date}}/", "--model", model, "--id", "e2e-submit-today", "--wait", "--json")
	if want := base + "/scores/" + today + "/e2e-submit-today/output.jsonl"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("submit with a templated input: exit %d, want its output at %s:\n%s", code, want, out)
	}

	out, code = runVbatch(t, time.Minute, nil, "schedule", "list")
	t.Logf("vbatch schedule list:\n%s", out)
	if code != 0 || !strings.Contains(out, name) || !strings.Contains(out, "paused") {
		t.Errorf("schedule list: exit %d, want %s paused:\n%s", code, name, out)
	}
	if out, code = runVbatch(t, time.Minute, nil, "schedule", "unpause", name); code != 0 {
		t.Errorf("schedule unpause: exit %d\n%s", code, out)
	}
	if out, code = runVbatch(t, time.Minute, nil, "schedule", "pause", name, "--note", "holiday"); code != 0 {
		t.Errorf("schedule pause: exit %d\n%s", code, out)
	}
	out, _ = runVbatch(t, time.Minute, nil, "schedule", "describe", name)
	t.Logf("vbatch schedule describe %s:\n%s", name, out)
	if !strings.Contains(out, "paused (holiday)") {
		t.Errorf("describe after pause --note holiday:\n%s", out)
	}
	if out, code = runVbatch(t, time.Minute, nil, "schedule", "delete", name); code != 0 {
		t.Errorf("schedule delete: exit %d\n%s", code, out)
	}
	if out, code = runVbatch(t, time.Minute, nil, "schedule", "describe", name); code == 0 || !strings.Contains(out, "no schedule") {
		t.Errorf("describe after delete: exit %d\n%s", code, out)
	}
}
