package engine

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// runnerScript is runner.py, shipped inside the binary so a GPU host needs only
// python3 and its engine packages, never a checkout of this repository.
//
//go:embed runner/runner.py
var runnerScript []byte

var (
	runnerOnce sync.Once
	runnerPath string
	runnerErr  error
)

// runnerScriptPath writes runner.py to a private temporary folder once per worker
// process; every engine it starts runs that one copy.
func runnerScriptPath() (string, error) {
	runnerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vbatch-runner-")
		if err != nil {
			runnerErr = fmt.Errorf("write engine runner: %w", err)
			return
		}
		path := filepath.Join(dir, "runner.py")
		if err := os.WriteFile(path, runnerScript, 0o600); err != nil {
			runnerErr = fmt.Errorf("write engine runner: %w", err)
			return
		}
		runnerPath = path
	})
	return runnerPath, runnerErr
}
