// Package devstacktest starts a devstack for a test and applies the team's
// rule for missing server binaries: skip with the reason on a developer
// machine, fail under CI=true, where a skipped integration test would hide a
// broken setup.
package devstacktest

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vbatch/vbatch/internal/devstack"
)

// BinDir returns the folder with the temporal and versitygw binaries, or
// skips (fails under CI=true) the test when they are missing.
func BinDir(t testing.TB) string {
	t.Helper()
	dir, err := devstack.FindBinDir()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("integration test needs the dev servers: %v", err)
		}
		t.Skipf("skipping integration test: %v", err)
	}
	return dir
}

// Start starts a stack with its state in a fresh t.TempDir() (unless
// opts.Dir is set) and stops it when the test ends. Temporal runs headless.
func Start(t testing.TB, opts devstack.Options) *devstack.Stack {
	t.Helper()
	opts.BinDir = BinDir(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Headless = true
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start dev stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop dev stack: %v", err)
		}
	})
	return st
}
