package engine

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// runnerFiles are runner.py, the modules it imports, direct.py (the direct-feed
// baseline that RunDirect starts) and the model configs of load_format=dummy,
// shipped inside the binary so a GPU host needs only python3 and its engine
// packages, never a checkout of this repository. The runner's tests and its
// contract stand-in for vllm stay out.
//
//go:embed runner/runner.py runner/protocol.py runner/vllm_backend.py runner/hf_backend.py
//go:embed runner/direct.py models
var runnerFiles embed.FS

var (
	runnerOnce sync.Once
	runnerPath string
	runnerErr  error
)

// runnerScriptPath writes the runner to a private temporary folder once per worker
// process (runner/* at its top, models/ beside them, as runner.py expects) and
// returns the path of runner.py; every engine it starts runs that one copy.
func runnerScriptPath() (string, error) {
	runnerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vbatch-runner-")
		if err != nil {
			runnerErr = fmt.Errorf("write engine runner: %w", err)
			return
		}
		if err := writeRunnerFiles(dir); err != nil {
			runnerErr = fmt.Errorf("write engine runner to %s: %w", dir, err)
			return
		}
		runnerPath = filepath.Join(dir, "runner.py")
	})
	return runnerPath, runnerErr
}

func writeRunnerFiles(dir string) error {
	return fs.WalkDir(runnerFiles, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := runnerFiles.ReadFile(name)
		if err != nil {
			return err
		}
		dest := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(name, "runner/")))
		if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(dest, data, 0o600); err != nil {
			return fmt.Errorf("%s: %w", path.Base(name), err)
		}
		return nil
	})
}
