package workers

import (
	"fmt"
	"os"
	"runtime"
	"testing"
)

func TestCPUThreadsAreSharedAmongEngines(t *testing.T) {
	t.Setenv("OMP_NUM_THREADS", "3")
	if _, ok := cpuThreadsPerEngine(4); ok {
		t.Fatal("an OMP_NUM_THREADS the operator set must be kept")
	}
}

func TestCPUThreadsPerEngineWithoutOperatorSetting(t *testing.T) {
	if _, set := os.LookupEnv("OMP_NUM_THREADS"); set {
		t.Skip("OMP_NUM_THREADS is set in this environment")
	}
	got, ok := cpuThreadsPerEngine(4)
	want := fmt.Sprintf("OMP_NUM_THREADS=%d", max(1, runtime.NumCPU()/4))
	if !ok || got != want {
		t.Fatalf("cpuThreadsPerEngine(4) = %q, %v; want %q", got, ok, want)
	}
	if _, ok := cpuThreadsPerEngine(1); ok {
		t.Fatal("one engine keeps torch's default")
	}
}
