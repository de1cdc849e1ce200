// Package run owns the S3 layout of one batch run and the formats of the objects in it
// that more than one activity reads: the manifest, the checkpointed answers, the
// per-attempt chunk results and the records of engine deaths. Every key of a run is built here, so the layout of
// DESIGN.md has one home.
package run

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/vbatch/vbatch/internal/blob"
)

// Layout names the objects of one run under <output prefix>/<run id>/.
type Layout struct {
	RunID  string `json:"run_id"`
	Prefix string `json:"prefix"` // the run's folder URI, ending without a slash
}

// NewLayout places run runID under the output prefix.
func NewLayout(outputPrefix, runID string) Layout {
	return Layout{RunID: runID, Prefix: blob.Join(outputPrefix, runID)}
}

// LineID is the envelope id of an input line: unique within a run and across runs.
func (l Layout) LineID(line int) string { return fmt.Sprintf("vb-%s-%d", l.RunID, line) }

func (l Layout) Manifest() string   { return blob.Join(l.Prefix, "manifest.json") }
func (l Layout) PlanErrors() string { return blob.Join(l.Prefix, "plan-errors.jsonl") }
func (l Layout) Output() string     { return blob.Join(l.Prefix, "output.jsonl") }
func (l Layout) Errors() string     { return blob.Join(l.Prefix, "errors.jsonl") }
func (l Layout) ReportJSON() string { return blob.Join(l.Prefix, "report.json") }
func (l Layout) ReportMD() string   { return blob.Join(l.Prefix, "report.md") }

// Chunk is the durable input of chunk i: chunks/00017.jsonl.
func (l Layout) Chunk(i int) string {
	return blob.Join(l.Prefix, "chunks", fmt.Sprintf("%05d.jsonl", i))
}

// ChunkDir holds chunk i's checkpoint parts and attempt results: chunks/00017/.
func (l Layout) ChunkDir(i int) string {
	return blob.Join(l.Prefix, "chunks", fmt.Sprintf("%05d", i)) + "/"
}

// Part is checkpoint part p of attempt a of chunk i: chunks/00017/a03-p0002.jsonl.
// Keys sort by attempt, then part, which is the order in which answers were written.
func (l Layout) Part(i, attempt, part int) string {
	return l.ChunkDir(i) + fmt.Sprintf("a%02d-p%04d.jsonl", attempt, part)
}

// AttemptResult is what attempt a of chunk i reported when it ended: chunks/00017/a03-result.json.
func (l Layout) AttemptResult(i, attempt int) string {
	return l.ChunkDir(i) + fmt.Sprintf("a%02d-result.json", attempt)
}

// Death is what attempt a of chunk i saw when its engine died: chunks/00017/a03-death.json.
func (l Layout) Death(i, attempt int) string {
	return l.ChunkDir(i) + fmt.Sprintf("a%02d-death.json", attempt)
}

// IsPart tells a checkpoint part's URI from the other objects of a chunk folder.
func IsPart(uri string) bool { return partName.MatchString(baseName(uri)) }

// IsAttemptResult tells an attempt result's URI from the other objects of a chunk folder.
func IsAttemptResult(uri string) bool { return resultName.MatchString(baseName(uri)) }

// IsDeath tells an engine death record's URI from the other objects of a chunk folder.
func IsDeath(uri string) bool { return deathName.MatchString(baseName(uri)) }

// PartNumber returns the attempt and part numbers of a checkpoint part's URI.
func PartNumber(uri string) (attempt, part int, ok bool) {
	m := partName.FindStringSubmatch(baseName(uri))
	if m == nil {
		return 0, 0, false
	}
	attempt, _ = strconv.Atoi(m[1])
	part, _ = strconv.Atoi(m[2])
	return attempt, part, true
}

// AttemptNumber returns the attempt number of any attempt-scoped object of a chunk
// folder (a part, a result, a death record).
func AttemptNumber(uri string) (int, bool) {
	m := attemptName.FindStringSubmatch(baseName(uri))
	if m == nil {
		return 0, false
	}
	n, _ := strconv.Atoi(m[1])
	return n, true
}

func baseName(uri string) string { return uri[strings.LastIndex(uri, "/")+1:] }

var (
	partName    = regexp.MustCompile(`^a(\d{2,})-p(\d{4,})\.jsonl$`)
	resultName  = regexp.MustCompile(`^a\d{2,}-result\.json$`)
	deathName   = regexp.MustCompile(`^a\d{2,}-death\.json$`)
	attemptName = regexp.MustCompile(`^a(\d{2,})-`)
	unsafeID    = regexp.MustCompile(`[^A-Za-z0-9._=-]+`)
)

// ID turns a workflow id into a run id that is safe as one S3 key segment. It is a
// pure function of the workflow id, so every attempt of every activity finds the same
// folder.
func ID(workflowID string) string {
	id := strings.Trim(unsafeID.ReplaceAllString(workflowID, "-"), "-.")
	if id == "" {
		return "run"
	}
	return id
}

// DefaultOutput is the output prefix when a run names none: the input's folder.
func DefaultOutput(input string) string {
	if i := strings.LastIndex(input, "/"); i >= 0 {
		return input[:i]
	}
	return input
}
