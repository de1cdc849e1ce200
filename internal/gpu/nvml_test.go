//go:build cgo

package gpu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/dl"
)

// nvmlLoadable says whether this host has the NVML library, independently of the
// code under test.
func nvmlLoadable() bool {
	lib := dl.New(nvmlLibrary, dl.RTLD_LAZY)
	if lib.Open() != nil {
		return false
	}
	_ = lib.Close()
	return true
}

// TestDiscover runs on every host: without NVML it must report why, without
// panicking; with NVML (the GPU test machine) it must report real GPUs and readings.
func TestDiscover(t *testing.T) {
	devs, err := Discover()
	if !nvmlLoadable() {
		var u *Unavailable
		if !errors.As(err, &u) {
			t.Fatalf("Discover without NVML = %v, %v; want *Unavailable", devs, err)
		}
		if !strings.Contains(u.Reason, "libnvidia-ml.so.1") || !strings.Contains(err.Error(), "no GPUs") {
			t.Fatalf("reason %q does not say that the NVIDIA library is missing", err)
		}
		t.Logf("Discover: %v", err)
		// Monitoring devices that cannot be read fails the same way, again without a panic.
		_, err = StartMonitor(context.Background(), []Device{{UUID: "GPU-00000000-0000-0000-0000-000000000000"}}, time.Second)
		if !errors.As(err, &u) {
			t.Fatalf("StartMonitor without NVML = %v, want *Unavailable", err)
		}
		return
	}

	if err != nil {
		var u *Unavailable
		if errors.As(err, &u) {
			t.Skipf("NVML is present but reports no usable GPUs: %s", u.Reason)
		}
		t.Fatalf("Discover: %v", err)
	}
	for i, d := range devs {
		if d.Index != i || !strings.HasPrefix(d.UUID, "GPU-") || d.Name == "" || d.MemoryTotalBytes == 0 || d.PCIBusID == "" {
			t.Errorf("device %d = %+v, want index, GPU- UUID, name, memory and bus id", i, d)
		}
	}
	if src, err := openNVMLSource(devs); err == nil {
		t.Logf("NVML memory info v2 (used as nvidia-smi counts it): %v", src.memoryV2)
		_ = src.Close()
	}
	m, err := StartMonitor(context.Background(), devs, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("StartMonitor: %v", err)
	}
	time.Sleep(time.Second)
	m.Stop()
	for _, s := range m.Summary(nil, time.Time{}, time.Time{}) {
		t.Logf("GPU %d %s: %d samples, memory %d/%d MiB, util %.0f%%, %.0f W, %.0f C", s.Index, s.UUID,
			s.Samples, s.MemoryPeakBytes>>20, s.MemoryTotalBytes>>20, s.UtilizationMeanPct, s.PowerMeanWatts, s.TemperatureMaxC)
		if s.Samples < 3 || s.MemoryTotalBytes == 0 || s.TemperatureMaxC <= 0 {
			t.Errorf("summary %+v: want at least 3 samples with total memory and a temperature", s)
		}
	}
	if err := m.Err(); err != nil {
		t.Errorf("monitor error: %v", err)
	}
}
