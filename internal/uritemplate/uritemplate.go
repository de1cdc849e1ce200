// Package uritemplate resolves the {{…}} fields of a run's input and output URIs
// from the time the run stands for, so that one schedule serves every night:
// s3://b/candidates/{{.Date}}/requests.jsonl reads that night's file. Workflow
// code calls it, so it must stay deterministic: it reads no clock and no
// environment.
package uritemplate

import (
	"fmt"
	"strings"
	"text/template"
	"time"

	// Zones come with the binary, so that a worker without the host's zoneinfo
	// resolves the same dates as every other.
	_ "time/tzdata"
)

// Fields are what a template may use.
type Fields struct {
	// Date is the run's day, YYYY-MM-DD, in the run's time zone.
	Date string
	// Time is the run's time in its time zone: {{.Time.Format "2006/01/02"}}.
	Time time.Time
	// Schedule is the id of the schedule that started the run; empty for a run
	// started otherwise.
	Schedule string
}

// NewFields are the fields of a run that stands for time t, in timezone (an IANA
// name such as Europe/Berlin; empty is UTC), started by schedule (may be empty).
func NewFields(t time.Time, timezone, schedule string) (Fields, error) {
	loc, err := Location(timezone)
	if err != nil {
		return Fields{}, err
	}
	t = t.In(loc)
	return Fields{Date: t.Format(time.DateOnly), Time: t, Schedule: schedule}, nil
}

// Location is the zone of an IANA name; empty is UTC. It reads the host's
// zoneinfo, else the copy embedded in the binary: the same rules wherever the
// zone's rules have not changed between the two (workflowcheck cannot know that).
//
//workflowcheck:ignore
func Location(timezone string) (*time.Location, error) {
	if timezone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(timezone)
	if err != nil {
		return nil, fmt.Errorf("timezone %q is not an IANA zone name such as Europe/Berlin: %w", timezone, err)
	}
	return loc, nil
}

// IsTemplate says whether s has fields to resolve.
func IsTemplate(s string) bool { return strings.Contains(s, "{{") }

// Resolve fills the fields of uri; a uri without any is returned as it is. The
// same uri and fields give the same result: text/template's reflection and map
// walks, which workflowcheck reports, do not change what it prints.
//
//workflowcheck:ignore
func Resolve(uri string, f Fields) (string, error) {
	if !IsTemplate(uri) {
		return uri, nil
	}
	t, err := template.New("uri").Option("missingkey=error").Parse(uri)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", uri, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, f); err != nil {
		return "", fmt.Errorf("template %q (fields: .Date, .Time, .Schedule): %w", uri, err)
	}
	return b.String(), nil
}

// FixedPrefix is the folder of a template that no field changes: what comes
// before its first {{, up to the last slash there. s3://b/scores/{{.Date}}/ has
// s3://b/scores. Runs of one schedule keep what they share there.
func FixedPrefix(tmpl string) string {
	fixed, _, _ := strings.Cut(tmpl, "{{")
	if i := strings.LastIndex(fixed, "/"); i >= 0 {
		fixed = fixed[:i]
	}
	return strings.TrimSuffix(fixed, "/")
}
