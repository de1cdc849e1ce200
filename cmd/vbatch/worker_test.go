package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// Each worker role runs with the GOGC its peak RSS was measured with
// (docs/benchmarks.md): with Go's default of 100 the GPU worker's peak grew
// 1.18–1.25× from 5,000 to 200,000 requests, and the control worker's more.
func TestWorkerRolesKeepTheirHeapHeadroomUnlessGOGCIsSet(t *testing.T) {
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	for role, want := range map[string]int{roleControl: controlGCPercent, roleGPU: gpuGCPercent, roleAll: gpuGCPercent} {
		debug.SetGCPercent(100)
		tightenGC(role)
		if got := debug.SetGCPercent(100); got != want {
			t.Errorf("--role %s runs with GOGC %d, want %d", role, got, want)
		}
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	tightenGC(roleGPU)
	if got := debug.SetGCPercent(100); got != 200 {
		t.Errorf("GOGC=200 in the environment: --role gpu runs with GOGC %d, want the operator's 200", got)
	}
}
