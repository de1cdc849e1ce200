package report

import (
	"context"
	"fmt"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// The report's files, relative to the folder they are written in.
const (
	JSONName     = "report.json"
	MarkdownName = "report.md"
	HTMLName     = "report.html"
	ChartsDir    = "charts" // one SVG per chart; report.md links them
)

// Publish writes the report of the run in layout's folder. When the run belongs to
// a series (SeriesName) and r has no comparison yet, it first compares r with the
// run of the series that started last before it, found through the series index
// (SeriesIndexURI). It writes report.json, report.md, report.html and charts/*.svg,
// then records the run in the index. Publishing the same run again is harmless:
// the index holds each run once and the files are replaced. It returns the report
// as written.
func Publish(ctx context.Context, store blob.Store, layout run.Layout, r Report) (Report, error) {
	name := SeriesName(r.Labels)
	var idx SeriesIndex
	if name != "" {
		var err error
		if idx, err = readSeries(ctx, store, SeriesIndexURI(layout, r.SeriesPrefix, name), name); err != nil {
			return r, fmt.Errorf("read series index: %w", err)
		}
		if r.Comparison == nil {
			r.Comparison = comparePrevious(ctx, store, idx, r)
		}
	}
	r, err := WriteFiles(ctx, store, layout.Prefix, r)
	if err != nil {
		return r, err
	}
	if name != "" {
		idx.upsert(SeriesEntry{RunID: r.RunID, Started: r.seriesTime(), Report: blob.Join(layout.Prefix, JSONName)})
		if err := blob.WriteJSON(ctx, store, SeriesIndexURI(layout, r.SeriesPrefix, name), idx); err != nil {
			return r, fmt.Errorf("write series index: %w", err)
		}
	}
	return r, nil
}

// seriesTime places the run in its series: when it was scheduled, else when it
// started. A night backfilled today is compared with the night before it, not
// with the run that happened to start last.
func (r Report) seriesTime() time.Time {
	if !r.Scheduled.IsZero() {
		return r.Scheduled
	}
	return r.Timing.Started
}

// comparePrevious compares r with the previous run of its series; nil when it is
// the first.
func comparePrevious(ctx context.Context, store blob.Store, idx SeriesIndex, r Report) *Comparison {
	prev, ok := idx.previous(r.RunID, r.seriesTime())
	if !ok {
		return nil
	}
	var p Report
	if err := blob.ReadJSON(ctx, store, prev.Report, &p); err != nil {
		return &Comparison{Series: idx.Series, PreviousReport: prev.Report, Current: figures(r),
			Notes: []string{fmt.Sprintf("the previous run %s has no readable report: %v", prev.RunID, err)}}
	}
	c := Compare(ctx, store, p, r, prev.Report)
	c.Series = idx.Series
	return &c
}

// WriteFiles renders r and writes report.json, report.md, report.html and the
// charts under prefix: a run's folder, or any folder (file:// for a local one).
func WriteFiles(ctx context.Context, store blob.Store, prefix string, r Report) (Report, error) {
	charts := Charts(r)
	r.Files.Report = []string{JSONName, MarkdownName, HTMLName}
	for _, c := range charts {
		if c.Recorded() {
			r.Files.Report = append(r.Files.Report, ChartsDir+"/"+c.Name)
		}
	}
	md, err := markdownWith(r, charts)
	if err != nil {
		return r, err
	}
	page, err := htmlWith(r, charts)
	if err != nil {
		return r, err
	}
	for _, c := range charts {
		if !c.Recorded() {
			continue
		}
		if err := store.Put(ctx, blob.Join(prefix, ChartsDir, c.Name), c.SVG); err != nil {
			return r, err
		}
	}
	if err := store.Put(ctx, blob.Join(prefix, MarkdownName), md); err != nil {
		return r, err
	}
	if err := store.Put(ctx, blob.Join(prefix, HTMLName), page); err != nil {
		return r, err
	}
	// report.json last: a reader that finds it finds the others too.
	if err := blob.WriteJSON(ctx, store, blob.Join(prefix, JSONName), r); err != nil {
		return r, fmt.Errorf("write report: %w", err)
	}
	return r, nil
}

// Remeasure measures the run in layout's folder again, taking what only the
// workflow knew (status, timings, labels, notes) from the report.json there. It
// does not write anything; Publish does.
func Remeasure(ctx context.Context, store blob.Store, layout run.Layout) (Report, error) {
	var old Report
	if err := blob.ReadJSON(ctx, store, blob.Join(layout.Prefix, JSONName), &old); err != nil {
		return Report{}, fmt.Errorf("read the run's report.json (a run without one has not reached its Report step): %w", err)
	}
	r, err := Measure(ctx, store, layout, InputsFrom(old))
	if err != nil {
		return Report{}, err
	}
	r.Notes = old.Notes
	return r, nil
}

// InputsFrom recovers a report's workflow inputs from the report itself.
func InputsFrom(r Report) Inputs {
	in := Inputs{RunID: r.RunID, Status: r.Status, Input: r.Input, Model: r.Model, Labels: r.Labels,
		SeriesPrefix: r.SeriesPrefix, Scheduled: r.Scheduled,
		Lines: r.Counts.Requests, Valid: r.Counts.Valid, FailedChunks: r.Counts.FailedChunks,
		Started: r.Timing.Started, Finished: r.Timing.Finished, Cache: r.Cache}
	if !in.Started.IsZero() {
		in.Generation = in.Started.Add(duration(r.Timing.PlanSeconds))
		in.MergeStarted = in.Generation.Add(duration(r.Timing.GenerationSeconds))
	}
	return in
}

func duration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
