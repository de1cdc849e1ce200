package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/workflow"
)

// Phases of a run, in order.
const (
	PhasePlanning   = "planning"
	PhaseGenerating = "generating"
	PhaseMerging    = "merging"
	PhaseReporting  = "reporting"
	PhaseDone       = "done"
)

// Progress is what the progress query answers and what the UI's current details show.
type Progress struct {
	Phase           string    `json:"phase"`
	Status          string    `json:"status,omitempty"` // once done
	Model           string    `json:"model"`
	ChunksTotal     int       `json:"chunks_total"`
	ChunksDone      int       `json:"chunks_done"`
	ChunksRunning   int       `json:"chunks_running"`
	ChunksFailed    int       `json:"chunks_failed"`
	Requests        int       `json:"requests"`
	RequestsDone    int       `json:"requests_done"`
	RequestsFailed  int       `json:"requests_failed"`
	CacheHits       int       `json:"cache_hits,omitempty"` // requests answered from the answer cache
	Tokens          int64     `json:"tokens"`
	TokensPerSecond float64   `json:"tokens_per_second"`
	ETASeconds      float64   `json:"eta_seconds"`
	Started         time.Time `json:"started"`
	Updated         time.Time `json:"updated"`

	generationStarted time.Time
}

// publish refreshes the derived figures and the UI's current details. It uses
// workflow time only, so replays see the same values.
func (b *batch) publish(ctx workflow.Context) {
	p := &b.progress
	p.Updated = workflow.Now(ctx)
	if !p.generationStarted.IsZero() {
		if elapsed := p.Updated.Sub(p.generationStarted).Seconds(); elapsed > 0 {
			p.TokensPerSecond = float64(p.Tokens) / elapsed
			if p.ChunksDone > 0 && p.ChunksTotal > p.ChunksDone {
				p.ETASeconds = elapsed / float64(p.ChunksDone) * float64(p.ChunksTotal-p.ChunksDone-p.ChunksFailed)
			} else {
				p.ETASeconds = 0
			}
		}
	}
	workflow.SetCurrentDetails(ctx, p.Markdown())
}

// Markdown renders the progress as the table the Temporal UI shows in current details.
// It is built from fmt.Sprintf alone, which workflowcheck knows to be deterministic.
func (p Progress) Markdown() string {
	parts := []string{
		fmt.Sprintf("**vbatch** · %s · %s\n\n", p.Model, p.Phase),
		"| | done | running | failed | total |\n|---|---:|---:|---:|---:|\n",
		fmt.Sprintf("| chunks | %d | %d | %d | %d |\n", p.ChunksDone, p.ChunksRunning, p.ChunksFailed, p.ChunksTotal),
		fmt.Sprintf("| requests | %d | | %d | %d |\n\n", p.RequestsDone, p.RequestsFailed, p.Requests),
		fmt.Sprintf("tokens: %d · %.0f tokens/s", p.Tokens, p.TokensPerSecond),
	}
	if p.CacheHits > 0 {
		parts = append(parts, fmt.Sprintf(" · %d from the answer cache", p.CacheHits))
	}
	if p.ETASeconds > 0 {
		parts = append(parts, fmt.Sprintf(" · ETA %s", (time.Duration(p.ETASeconds)*time.Second).String()))
	}
	if p.Status != "" {
		parts = append(parts, fmt.Sprintf(" · **%s**", p.Status))
	}
	// The UI sizes the details frame without the last paragraph's margin and clips
	// it: a last paragraph of one no-break space keeps the tokens line whole.
	return strings.Join(parts, "") + "\n\n\u00a0\n"
}
