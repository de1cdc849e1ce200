package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// DirectConfig runs direct.py: a backend fed a whole request file in one process,
// without vbatch around it. It is the baseline that pipeline throughput is held to.
type DirectConfig struct {
	Python   string
	Backend  string
	Model    string
	Settings Settings
	Sim      SimConfig
	Env      []string // e.g. CUDA_VISIBLE_DEVICES
	Input    string   // a local JSONL file of OpenAI-Batch lines
	Logger   *zap.Logger
}

// DirectSummary is direct.py's summary line.
type DirectSummary struct {
	Backend          string         `json:"backend"`
	Simulated        bool           `json:"simulated"`
	Model            string         `json:"model"`
	Requests         int            `json:"requests"`
	Results          int            `json:"results"`
	Errors           map[string]int `json:"errors"`
	PromptTokens     int64          `json:"prompt_tokens"`
	CompletionTokens int64          `json:"completion_tokens"`
	Seconds          float64        `json:"seconds"`
	TokensPerSecond  float64        `json:"tokens_per_second"`
	LoadSeconds      float64        `json:"load_seconds"`
	Ready            map[string]any `json:"ready"`
}

// RunDirect runs the embedded direct.py with the same runner configuration that
// StartProcess would give the backend, and returns its summary.
func RunDirect(ctx context.Context, cfg DirectConfig) (DirectSummary, error) {
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	script, err := runnerScriptPath()
	if err != nil {
		return DirectSummary{}, err
	}
	rc := runnerConfig{Backend: cfg.Backend, Model: cfg.Model, Settings: cfg.Settings}
	if cfg.Backend == BackendSim {
		rc.Sim = &cfg.Sim
	}
	rcJSON, err := json.Marshal(rc)
	if err != nil {
		return DirectSummary{}, err
	}
	cmd := exec.CommandContext(ctx, cfg.Python, "-u", filepath.Join(filepath.Dir(script), "direct.py"),
		"--backend", cfg.Backend, "--model", cfg.Model, "--input", cfg.Input, "--config", string(rcJSON))
	cmd.Env = append(os.Environ(), cfg.Env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return DirectSummary{}, err
	}
	if err := cmd.Start(); err != nil {
		return DirectSummary{}, fmt.Errorf("start direct.py: %w", err)
	}
	var tail []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		cfg.Logger.Info(sc.Text())
		if tail = append(tail, sc.Text()); len(tail) > stderrTailLen {
			tail = tail[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		return DirectSummary{}, fmt.Errorf("direct.py: %w; last log lines:\n%s", err, strings.Join(tail, "\n"))
	}
	var s DirectSummary
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &s); err != nil {
		return DirectSummary{}, fmt.Errorf("direct.py summary: %w: %q", err, stdout.String())
	}
	return s, nil
}
