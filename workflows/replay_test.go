package workflows

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"
)

// TestReplayShippedHistories replays histories recorded from released versions of
// BatchInference on a real Temporal server (testdata/history-*.json, written by
// `temporal workflow show -o json`). A change that would make a running workflow
// take another path on its next task fails here; such a change goes behind
// workflow.GetVersion, and a history of the new version is added beside these.
func TestReplayShippedHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/history-*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata/")
	}
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflow(BatchInference)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := replayer.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}
