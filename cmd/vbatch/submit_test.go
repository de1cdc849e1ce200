package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/workflows"
)

// The summary the Temporal UI shows for a submitted run names its input, its model
// and how many requests it holds; a count that fails leaves the number out and
// says why in the log, and the run still starts.
func TestRunSummaryCountsTheRequests(t *testing.T) {
	dir := t.TempDir()
	var lines strings.Builder
	for i := range 1234 {
		lines.WriteString(`{"custom_id":"c","prompt":"x"}` + "\n")
		if i%100 == 0 {
			lines.WriteString("\n  \r\n") // blank lines are no requests
		}
	}
	many := writeInput(t, dir, "many.jsonl", lines.String())
	one := writeInput(t, dir, "one.jsonl", `{"custom_id":"c","prompt":"x"}`)

	store, err := blob.New(context.Background(), blob.Config{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	a := &app{log: zap.New(core)}
	for _, tc := range []struct {
		store blob.Store
		input string
		want  string
	}{
		{store, many, "vbatch " + many + " · google/gemma-3-4b-it · 1,234 requests"},
		{store, one, "vbatch " + one + " · google/gemma-3-4b-it · 1 request"},
		{failingStore{store}, many, "vbatch " + many + " · google/gemma-3-4b-it"},
	} {
		if got := a.runSummary(context.Background(), tc.store, workflows.BatchInput{Input: tc.input, Model: workflows.DefaultModel}); got != tc.want {
			t.Errorf("summary %q, want %q", got, tc.want)
		}
	}
	warned := logs.FilterMessage("the run's summary leaves out the request count").All()
	if len(warned) != 1 || !strings.Contains(warned[0].ContextMap()["error"].(string), "connection reset") {
		t.Errorf("a failed count must be logged once with its reason; logged %v", logs.All())
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 5000: "5,000", 200000: "200,000", 1234567: "1,234,567"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

func writeInput(t *testing.T, dir, name, data string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return "file://" + path
}

// failingStore's objects break off after their first bytes, like a dropped connection.
type failingStore struct{ blob.Store }

func (s failingStore) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	r, err := s.Store.Open(ctx, uri)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(r, 100), errReader{errors.New("connection reset")}), r}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
