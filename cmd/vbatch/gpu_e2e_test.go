//go:build integration

package main

import (
	"strings"
	"testing"
	"time"
)

// On a host without GPUs, a vllm or transformers worker says what is missing and
// what to do, and exits non-zero instead of hanging or crashing.
func TestRealEngineWorkerWithoutGPUSaysWhatToDo(t *testing.T) {
	for _, eng := range []string{"vllm", "transformers"} {
		t.Run(eng, func(t *testing.T) {
			out, code := runVbatch(t, time.Minute, nil, "worker", "--role", "gpu", "--engine", eng)
			if code == 0 {
				t.Fatalf("exit 0 on a host without GPUs:\n%s", out)
			}
			for _, want := range []string{"--engine " + eng + " needs NVIDIA GPUs", "none were found", "--engine sim"} {
				if !strings.Contains(out, want) {
					t.Errorf("output does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
				t.Errorf("output holds a stack trace:\n%s", out)
			}
		})
	}
}
