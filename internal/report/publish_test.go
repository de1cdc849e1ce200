package report

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
)

// Two nightly runs of one series: the second's report compares itself with the
// first, score by score, found through the series index.
func TestPublishComparesWithThePreviousRunOfTheSeries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	output := "file://" + dir
	series := map[string]string{"series": "nightly-candidates"}
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)

	first := writeFixture(t, output, "night-1", t0, nil)
	r1, err := Publish(ctx, first.store, first.layout, first.measure(t, series))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Comparison != nil {
		t.Errorf("the first run of a series has nothing to compare with: %+v", r1.Comparison)
	}
	second := writeFixture(t, output, "night-2", t0.Add(24*time.Hour), map[string]string{"cand-2": "Yes", "cand-9": "Maybe"})
	r2, err := Publish(ctx, second.store, second.layout, second.measure(t, series))
	if err != nil {
		t.Fatal(err)
	}
	c := r2.Comparison
	if c == nil || c.Series != "nightly-candidates" || c.Previous.RunID != "night-1" || c.Current.RunID != "night-2" {
		t.Fatalf("comparison %+v: want night-2 against night-1", c)
	}
	// Six answers carry a recommendation in both runs (cand-3's "Perhaps" too).
	s := c.Scores
	if s == nil || s.Compared != 6 || s.Changed != 2 || s.Unchanged != 4 || s.OnlyCurrent != 0 || s.OnlyPrevious != 0 {
		t.Fatalf("score changes %+v: want 2 of 6 changed", s)
	}
	if len(s.Examples) != 2 || s.Examples[0] != (ScoreChange{"cand-2", "No", "Yes"}) || s.Examples[1] != (ScoreChange{"cand-9", "Strong Yes", "Maybe"}) {
		t.Errorf("examples %+v: want cand-2 No→Yes then cand-9 Strong Yes→Maybe", s.Examples)
	}
	if c.Previous.TokensPerSecond != r1.Tokens.TokensPerSecond || c.Previous.Errors != 3 {
		t.Errorf("previous figures %+v", c.Previous)
	}

	// Publishing the first run again (a regenerated report) does not compare it with
	// the later run, and the index keeps each run once.
	again, err := Remeasure(ctx, first.store, first.layout)
	if err != nil {
		t.Fatal(err)
	}
	if again, err = Publish(ctx, first.store, first.layout, again); err != nil {
		t.Fatal(err)
	}
	if again.Comparison != nil || again.Counts.Answered != 9 || again.Timing.GenerationSeconds != 32 {
		t.Errorf("regenerated first run: comparison %+v, %d answered, %.1f s generation", again.Comparison, again.Counts.Answered, again.Timing.GenerationSeconds)
	}
	var idx SeriesIndex
	if err := blob.ReadJSON(ctx, first.store, SeriesIndexURI(first.layout, "", "nightly-candidates"), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Runs) != 2 || idx.Runs[0].RunID != "night-1" || idx.Runs[1].Report != output+"/night-2/report.json" {
		t.Errorf("series index %+v: want night-1 then night-2", idx.Runs)
	}
	if want := filepath.Join(dir, "_series", "nightly-candidates.json"); !exists(want) {
		t.Errorf("no series index at %s", want)
	}
	for _, name := range []string{"report.json", "report.md", "report.html", "charts/throughput.svg", "charts/timeline.svg",
		"charts/in-flight.svg", "charts/gpu-memory.svg", "charts/gpu-utilization.svg"} {
		if !exists(filepath.Join(dir, "night-2", name)) {
			t.Errorf("night-2/%s was not written", name)
		}
	}
}

func TestCompareSaysWhyScoresWereNotCompared(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	f := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil)
	r := f.measure(t, nil)
	old := r
	old.Files.Output = "file://" + t.TempDir() + "/gone/output.jsonl"
	old.Simulated = true
	c := Compare(ctx, f.store, old, r, "prev")
	if c.Scores != nil || len(c.Notes) != 2 || !strings.Contains(c.Notes[0], "simulated") || !strings.Contains(c.Notes[1], "previous run's output") {
		t.Errorf("comparison %+v: want no scores and notes on the simulated run and the missing output", c)
	}
}

func TestSeriesNameIsTheSeriesLabelElseTheSchedule(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"team": "x"}, ""},
		{map[string]string{"schedule": "nightly"}, "nightly"},
		{map[string]string{"schedule": "nightly", "series": "candidates"}, "candidates"},
	} {
		if got := SeriesName(tc.labels); got != tc.want {
			t.Errorf("SeriesName(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// A schedule's series is in the order of its nights, not of its starts: a night
// backfilled late compares with the night before it, and the next night with the
// night before that one.
func TestPublishOrdersAScheduleByItsNights(t *testing.T) {
	ctx := context.Background()
	output := "file://" + t.TempDir()
	labels := map[string]string{"schedule": "nightly"}
	night := func(day int) time.Time { return time.Date(2026, 11, day, 2, 0, 0, 0, time.UTC) }
	publish := func(runID string, started, scheduled time.Time) *Comparison {
		t.Helper()
		f := writeFixture(t, output, runID, started, nil)
		r := f.measure(t, labels)
		r.Scheduled = scheduled
		r, err := Publish(ctx, f.store, f.layout, r)
		if err != nil {
			t.Fatal(err)
		}
		return r.Comparison
	}
	previous := func(c *Comparison) string {
		if c == nil {
			return "none"
		}
		return c.Previous.RunID
	}
	publish("nov-01", night(1), night(1))
	publish("nov-03", night(3), night(3))
	if c := publish("nov-02", night(4).Add(8*time.Hour), night(2)); previous(c) != "nov-01" {
		t.Errorf("Nov 2, backfilled on Nov 4, compares with %s, want nov-01", previous(c))
	}
	if c := publish("nov-04", night(5), night(4)); previous(c) != "nov-03" {
		t.Errorf("Nov 4, caught up on Nov 5, compares with %s, want nov-03", previous(c))
	}
}
