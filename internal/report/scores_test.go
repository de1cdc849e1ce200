package report

import "testing"

func TestTokenCountsGiveNearestRankPercentilesOfEveryAnswer(t *testing.T) {
	var c tokenCounts
	// 20 answers: 10 of 100 tokens, 8 of 200, one of 250, one of 900.
	for range 10 {
		c.add(100)
	}
	for range 8 {
		c.add(200)
	}
	c.add(250)
	c.add(900)
	got := c.distribution()
	// Nearest rank: p50 is the 10th answer (100), p95 the 19th (250).
	want := Distribution{Mean: (1000 + 1600 + 250 + 900) / 20.0, P50: 100, P95: 250, Max: 900}
	if got != want {
		t.Errorf("distribution %+v, want %+v", got, want)
	}
	if c.n != 20 {
		t.Errorf("%d answers counted, want 20", c.n)
	}
}

func TestScoreChangesCountEachCustomIDOfBothRuns(t *testing.T) {
	prev, cur := newScoreSet(), newScoreSet()
	for id, s := range map[string]string{"a": "Yes", "b": "No", "c": "Yes", "d": "Maybe"} {
		prev.add(id, s)
	}
	cur.add("a", "Yes")
	cur.add("b", "No")
	cur.add("c", "No")
	cur.add("e", "No")
	cur.add("b", "Yes") // a later answer of b replaces its score
	got := scoreChanges(prev, cur)
	if got.Compared != 3 || got.Changed != 2 || got.Unchanged != 1 || got.OnlyCurrent != 1 || got.OnlyPrevious != 1 {
		t.Errorf("score changes %+v, want 3 compared, 2 changed, 1 unchanged, 1 only current, 1 only previous", got)
	}
	want := map[Transition]bool{{From: "No", To: "Yes", Count: 1}: true, {From: "Yes", To: "No", Count: 1}: true}
	for _, tr := range got.Transitions {
		if !want[tr] {
			t.Errorf("unexpected transition %+v", tr)
		}
		delete(want, tr)
	}
	if len(want) > 0 {
		t.Errorf("transitions %+v, missing %+v", got.Transitions, want)
	}
	if s, ok := cur.get("b"); !ok || s != "Yes" {
		t.Errorf("b scores %q (%v) in this run, want Yes", s, ok)
	}
	if _, ok := cur.get("d"); ok {
		t.Error("d has a score in this run, which never scored it")
	}
	if len(cur.values) != 2 {
		t.Errorf("%d distinct values kept, want 2 (Yes, No)", len(cur.values))
	}
}
