package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
)

// Comparison is this run against the previous run of its series (or any run named
// to `vbatch compare`).
type Comparison struct {
	Series         string        `json:"series,omitempty"`
	PreviousReport string        `json:"previous_report"`
	Previous       RunFigures    `json:"previous"`
	Current        RunFigures    `json:"current"`
	Scores         *ScoreChanges `json:"scores,omitempty"`
	// Notes say what could not be compared, and why.
	Notes []string `json:"notes,omitempty"`
}

// RunFigures are the figures of one run that a comparison sets side by side.
type RunFigures struct {
	RunID             string         `json:"run_id"`
	Status            string         `json:"status"`
	Simulated         bool           `json:"simulated"`
	Started           time.Time      `json:"started"`
	Requests          int            `json:"requests"`
	Answered          int            `json:"answered"`
	Errors            int            `json:"errors"`
	ErrorsByCode      map[string]int `json:"errors_by_code,omitempty"`
	FailedChunks      int            `json:"failed_chunks"`
	Retries           int            `json:"retries"`
	TokensPerSecond   float64        `json:"tokens_per_second"`
	RequestsPerSecond float64        `json:"requests_per_second"`
	GenerationSeconds float64        `json:"generation_seconds"`
	TotalSeconds      float64        `json:"total_seconds"`
	JSONShare         float64        `json:"json_share,omitempty"`   // of answers; 0 when not recorded
	SchemaShare       float64        `json:"schema_share,omitempty"` // of schema-checked answers
}

// ScoreChanges compare the candidate scores (ScoreField of each answer) of the two
// runs, custom_id by custom_id.
type ScoreChanges struct {
	Field        string       `json:"field"`
	Compared     int          `json:"compared"` // custom_ids scored in both runs
	Changed      int          `json:"changed"`
	Unchanged    int          `json:"unchanged"`
	OnlyCurrent  int          `json:"only_current"`          // scored in this run only
	OnlyPrevious int          `json:"only_previous"`         // scored in the previous run only
	Transitions  []Transition `json:"transitions,omitempty"` // the most common first, at most maxTransitions
	// OtherTransitions counts the custom_ids of the transitions left out.
	OtherTransitions int           `json:"other_transitions,omitempty"`
	Examples         []ScoreChange `json:"examples,omitempty"` // the first changes in this run's order
}

// Transition counts the custom_ids whose score went From → To.
type Transition struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count int    `json:"count"`
}

// ScoreChange is one custom_id whose score changed.
type ScoreChange struct {
	CustomID string `json:"custom_id"`
	From     string `json:"from"`
	To       string `json:"to"`
}

const (
	maxScoreExamples = 10
	// maxTransitions bounds the transitions kept: five recommendations make at most
	// twenty, free-text scores could make thousands.
	maxTransitions = 20
)

func figures(r Report) RunFigures {
	f := RunFigures{RunID: r.RunID, Status: r.Status, Simulated: r.Simulated, Started: r.Timing.Started,
		Requests: r.Counts.Requests, Answered: r.Counts.Answered, Errors: r.Counts.Errors, ErrorsByCode: r.Counts.ErrorsByCode,
		FailedChunks: r.Counts.FailedChunks, Retries: r.Counts.Retries, TokensPerSecond: r.Tokens.TokensPerSecond,
		RequestsPerSecond: r.Tokens.RequestsPerSecond, GenerationSeconds: r.Timing.GenerationSeconds, TotalSeconds: r.Timing.TotalSeconds}
	if q := r.Quality; q != nil {
		if q.Answers > 0 {
			f.JSONShare = float64(q.JSON) / float64(q.Answers)
		}
		if q.SchemaChecked > 0 {
			f.SchemaShare = float64(q.SchemaValid) / float64(q.SchemaChecked)
		}
	}
	return f
}

// Compare sets cur against prev: their figures, and the score changes per
// custom_id, read from both runs' output.jsonl (cur's scores come from Measure's
// pass when it has them). What cannot be compared is said in the notes.
func Compare(ctx context.Context, store blob.Store, prev, cur Report, prevReportURI string) Comparison {
	c := Comparison{PreviousReport: prevReportURI, Previous: figures(prev), Current: figures(cur)}
	if prev.Simulated != cur.Simulated {
		c.Notes = append(c.Notes, "one of the two runs was simulated: their throughputs are not comparable")
	}
	prevScores, err := readScores(ctx, store, prev.Files.Output, cur.heartbeat)
	if err != nil {
		c.Notes = append(c.Notes, fmt.Sprintf("scores not compared: previous run's output: %v", err))
		return c
	}
	curScores := cur.scores
	if curScores == nil {
		if curScores, err = readScores(ctx, store, cur.Files.Output, cur.heartbeat); err != nil {
			c.Notes = append(c.Notes, fmt.Sprintf("scores not compared: this run's output: %v", err))
			return c
		}
	}
	if prevScores.len() == 0 || curScores.len() == 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("scores not compared: the answers of %s carry no %q field", whichEmpty(prevScores, curScores), ScoreField))
		return c
	}
	c.Scores = scoreChanges(prevScores, curScores)
	if c.Scores.Changed > 0 {
		// The examples follow this run's output order: read it again, up to the
		// tenth change.
		for _, id := range outputOrder(ctx, store, cur.Files.Output, prevScores, curScores, cur.heartbeat) {
			from, _ := prevScores.get(id)
			to, _ := curScores.get(id)
			c.Scores.Examples = append(c.Scores.Examples, ScoreChange{CustomID: id, From: from, To: to})
		}
	}
	return c
}

func whichEmpty(prev, cur *scoreSet) string {
	switch {
	case prev.len() == 0 && cur.len() == 0:
		return "both runs"
	case prev.len() == 0:
		return "the previous run"
	}
	return "this run"
}

// scoreChanges walks the two runs' scores together in id order.
func scoreChanges(prev, cur *scoreSet) *ScoreChanges {
	s := &ScoreChanges{Field: ScoreField}
	trans := map[[2]string]int{}
	prev.seal()
	cur.seal()
	ps, cs := prev.scores, cur.scores
	i, j := 0, 0
	for i < len(ps) || j < len(cs) {
		order := 0
		switch {
		case i == len(ps):
			order = 1
		case j == len(cs):
			order = -1
		default:
			order = bytes.Compare(ps[i].id[:], cs[j].id[:])
		}
		switch {
		case order < 0:
			s.OnlyPrevious++
			i++
		case order > 0:
			s.OnlyCurrent++
			j++
		default:
			from, to := prev.values[ps[i].value], cur.values[cs[j].value]
			if from == to {
				s.Unchanged++
			} else {
				s.Changed++
				trans[[2]string{from, to}]++
			}
			i++
			j++
		}
	}
	s.Compared = s.Changed + s.Unchanged
	for k, n := range trans {
		s.Transitions = append(s.Transitions, Transition{From: k[0], To: k[1], Count: n})
	}
	sort.Slice(s.Transitions, func(i, j int) bool {
		a, b := s.Transitions[i], s.Transitions[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.From+"→"+a.To < b.From+"→"+b.To
	})
	if len(s.Transitions) > maxTransitions {
		for _, tr := range s.Transitions[maxTransitions:] {
			s.OtherTransitions += tr.Count
		}
		s.Transitions = s.Transitions[:maxTransitions]
	}
	return s
}

// outputOrder returns the first changed custom_ids in the order of an output file.
func outputOrder(ctx context.Context, store blob.Store, uri string, prev, cur *scoreSet, heartbeat func()) []string {
	var ids []string
	stop := errors.New("enough")
	_, _ = eachLine(ctx, store, uri, heartbeat, func(b []byte) error {
		var l struct {
			CustomID string `json:"custom_id"`
		}
		if json.Unmarshal(b, &l) != nil {
			return nil
		}
		from, ok := prev.get(l.CustomID)
		to, _ := cur.get(l.CustomID)
		if ok && from != to && to != "" {
			ids = append(ids, l.CustomID)
			if len(ids) == maxScoreExamples {
				return stop
			}
		}
		return nil
	})
	return ids
}

// readScores reads the ScoreField of every answer of an output file whose text is
// a JSON object with that field as a string.
func readScores(ctx context.Context, store blob.Store, uri string, heartbeat func()) (*scoreSet, error) {
	if uri == "" {
		return nil, errors.New("the report names no output file")
	}
	if _, err := store.Stat(ctx, uri); err != nil {
		return nil, err
	}
	scores := newScoreSet()
	_, err := eachLine(ctx, store, uri, heartbeat, func(b []byte) error {
		var l answerLine
		if json.Unmarshal(b, &l) != nil {
			return nil
		}
		text, _ := l.text()
		var eval map[string]json.RawMessage
		if json.Unmarshal([]byte(text), &eval) != nil {
			return nil
		}
		var s string
		if json.Unmarshal(eval[ScoreField], &s) != nil {
			return nil
		}
		scores.add(l.CustomID, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return scores, nil
}

// SeriesName is the series a run belongs to, for finding the run before it: its
// "series" label, else its "schedule" label (a scheduled run's schedule id), else
// none.
func SeriesName(labels map[string]string) string {
	if s := labels["series"]; s != "" {
		return s
	}
	return labels["schedule"]
}

// SeriesIndex is <output prefix>/_series/<name>.json: the runs of one series and
// where their reports are, so the previous run is found without listing the
// bucket. Publish keeps it.
type SeriesIndex struct {
	Series string        `json:"series"`
	Runs   []SeriesEntry `json:"runs"` // by start time, the newest last
}

// SeriesEntry is one run of a series.
type SeriesEntry struct {
	RunID   string    `json:"run_id"`
	Started time.Time `json:"started"` // a scheduled run's scheduled time, else its start
	Report  string    `json:"report"`  // its report.json
}

// maxSeriesRuns bounds an index: the previous run is all a report needs, a few
// dozen let older runs be regenerated against theirs.
const maxSeriesRuns = 60

var unsafeSeriesName = regexp.MustCompile(`[^A-Za-z0-9._=-]+`)

// SeriesIndexURI is where the index of series name lives: under seriesPrefix
// when given (a scheduled run whose output is templated, one folder a night,
// keeps it at the template's fixed part), else under layout's output prefix.
func SeriesIndexURI(layout run.Layout, seriesPrefix, name string) string {
	safe := strings.Trim(unsafeSeriesName.ReplaceAllString(name, "-"), "-.")
	if safe == "" {
		safe = "series"
	}
	if seriesPrefix == "" {
		seriesPrefix = outputPrefix(layout)
	}
	return blob.Join(seriesPrefix, "_series", safe+".json")
}

// outputPrefix is the folder that holds the run's folder.
func outputPrefix(layout run.Layout) string {
	p := strings.TrimSuffix(layout.Prefix, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return p
}

func readSeries(ctx context.Context, store blob.Store, uri, name string) (SeriesIndex, error) {
	idx := SeriesIndex{Series: name}
	err := blob.ReadJSON(ctx, store, uri, &idx)
	if errors.Is(err, blob.ErrNotFound) {
		return SeriesIndex{Series: name}, nil
	}
	return idx, err
}

// previous is the entry of the run that started last before started, other than runID.
func (idx SeriesIndex) previous(runID string, started time.Time) (SeriesEntry, bool) {
	var best SeriesEntry
	found := false
	for _, e := range idx.Runs {
		if e.RunID == runID || !e.Started.Before(started) {
			continue
		}
		if !found || e.Started.After(best.Started) {
			best, found = e, true
		}
	}
	return best, found
}

// upsert records a run, keeping the newest maxSeriesRuns in start order.
func (idx *SeriesIndex) upsert(e SeriesEntry) {
	idx.Runs = slices.DeleteFunc(idx.Runs, func(x SeriesEntry) bool { return x.RunID == e.RunID })
	idx.Runs = append(idx.Runs, e)
	sort.SliceStable(idx.Runs, func(i, j int) bool { return idx.Runs[i].Started.Before(idx.Runs[j].Started) })
	if len(idx.Runs) > maxSeriesRuns {
		idx.Runs = idx.Runs[len(idx.Runs)-maxSeriesRuns:]
	}
}
