package main

import (
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
)

// A backfill's dates are whole days in the schedule's zone, so --from D --to D
// runs D's night and no other.
func TestBackfillDatesAreWholeDaysInTheScheduleZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in       string
		endOfDay bool
		want     string
	}{
		{"2026-11-01", false, "2026-10-31T22:59:59Z"}, // a second before midnight in Berlin (UTC+1)
		{"2026-11-01", true, "2026-11-01T22:59:59Z"},  // its last second
		{"2026-07-01", false, "2026-06-30T21:59:59Z"}, // summer time (UTC+2)
		{"2026-11-01T02:00:00Z", false, "2026-11-01T02:00:00Z"},
		{"2026-11-01T02:00:00+09:00", true, "2026-10-31T17:00:00Z"},
	}
	for _, tc := range cases {
		got, err := parseWhen(tc.in, berlin, tc.endOfDay)
		if err != nil {
			t.Fatalf("parseWhen(%q): %v", tc.in, err)
		}
		if s := got.UTC().Format(time.RFC3339); s != tc.want {
			t.Errorf("parseWhen(%q, end of day %v) = %s, want %s", tc.in, tc.endOfDay, s, tc.want)
		}
	}
	if _, err := parseWhen("yesterday", berlin, false); err == nil || !strings.Contains(err.Error(), "neither a date") {
		t.Errorf("parseWhen(yesterday): %v, want it refused", err)
	}
}

func TestOverlapPoliciesByTheirShortNames(t *testing.T) {
	for name, want := range map[string]enumspb.ScheduleOverlapPolicy{
		"skip":       enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		"buffer_one": enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE,
		"buffer_all": enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL,
		"allow_all":  enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL,
	} {
		got, err := overlapPolicy(name)
		if err != nil || got != want || overlapName(got) != name {
			t.Errorf("overlapPolicy(%q) = %v, %v; name back %q", name, got, err, overlapName(got))
		}
	}
	for _, bad := range []string{"unspecified", "sometimes", ""} {
		if _, err := overlapPolicy(bad); err == nil || !strings.Contains(err.Error(), "buffer_one") {
			t.Errorf("overlapPolicy(%q): %v, want it refused with the names", bad, err)
		}
	}
}
