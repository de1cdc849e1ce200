package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// Workers run with the GOGC their peak RSS was measured with
// (docs/benchmarks.md): with Go's default of 100 the GPU worker's peak grew
// 1.18–1.25× from 5,000 to 200,000 requests, and the control worker's more.
func TestWorkersKeepTheirHeapHeadroomUnlessGOGCIsSet(t *testing.T) {
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	tightenGC()
	if got := debug.SetGCPercent(100); got != workerGCPercent {
		t.Errorf("a worker runs with GOGC %d, want %d", got, workerGCPercent)
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	tightenGC()
	if got := debug.SetGCPercent(100); got != 200 {
		t.Errorf("GOGC=200 in the environment: a worker runs with GOGC %d, want the operator's 200", got)
	}
}
