package gpu

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)

const gib1 = 1 << 30

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func TestSummaryMath(t *testing.T) {
	devs := devices(2)
	m := newMonitor(devs, defaultRetention(time.Second))
	// GPU-a: three readings; GPU-b: one, without power (unsupported on its board).
	m.record(at(0), []Sample{
		{Time: at(0), UUID: "GPU-a", MemoryUsedBytes: 10 * gib1, MemoryTotalBytes: 80 * gib1, UtilizationPct: 0, PowerWatts: 100, TemperatureC: 40},
		{Time: at(0), UUID: "GPU-b", MemoryUsedBytes: 1 * gib1, MemoryTotalBytes: 80 * gib1, UtilizationPct: 50, TemperatureC: 35},
	}, nil)
	m.record(at(1), []Sample{{Time: at(1), UUID: "GPU-a", MemoryUsedBytes: 70 * gib1, MemoryTotalBytes: 80 * gib1, UtilizationPct: 100, PowerWatts: 700, TemperatureC: 70}}, nil)
	m.record(at(2), []Sample{{Time: at(2), UUID: "GPU-a", MemoryUsedBytes: 40 * gib1, MemoryTotalBytes: 80 * gib1, UtilizationPct: 80, PowerWatts: 400, TemperatureC: 60}}, nil)

	got := m.Summary(nil, time.Time{}, time.Time{})
	if len(got) != 2 {
		t.Fatalf("Summary returned %d GPUs, want 2", len(got))
	}
	a, b := got[0], got[1]
	if a.UUID != "GPU-a" || a.Samples != 3 {
		t.Fatalf("first summary = %+v, want GPU-a from 3 samples", a)
	}
	if a.MemoryPeakBytes != 70*gib1 || a.MemoryMeanBytes != 40*gib1 || a.MemoryTotalBytes != 80*gib1 {
		t.Errorf("GPU-a memory peak/mean/total = %d/%d/%d GiB, want 70/40/80",
			a.MemoryPeakBytes/gib1, a.MemoryMeanBytes/gib1, a.MemoryTotalBytes/gib1)
	}
	if a.UtilizationMeanPct != 60 || a.UtilizationMaxPct != 100 {
		t.Errorf("GPU-a utilisation mean/max = %v/%v, want 60/100", a.UtilizationMeanPct, a.UtilizationMaxPct)
	}
	if a.PowerMeanWatts != 400 || a.TemperatureMaxC != 70 {
		t.Errorf("GPU-a power mean = %v W, temperature max = %v C; want 400 W, 70 C", a.PowerMeanWatts, a.TemperatureMaxC)
	}
	if b.UUID != "GPU-b" || b.Samples != 1 || b.PowerMeanWatts != 0 || b.UtilizationMeanPct != 50 {
		t.Errorf("GPU-b summary = %+v, want 1 sample, 50%% utilisation, 0 W", b)
	}

	// A window selects samples by time; a UUID filter selects GPUs.
	got = m.Summary([]string{"GPU-a"}, at(1), at(2))
	if len(got) != 1 || got[0].Samples != 2 || got[0].UtilizationMeanPct != 90 || got[0].MemoryPeakBytes != 70*gib1 {
		t.Errorf("Summary(GPU-a, 1s..2s) = %+v, want 2 samples, 90%% mean utilisation, 70 GiB peak", got)
	}
	got = m.Summary([]string{"GPU-b", "GPU-unknown"}, at(1), time.Time{})
	if len(got) != 1 || got[0].UUID != "GPU-b" || got[0].Samples != 0 || got[0].MemoryTotalBytes != devs[1].MemoryTotalBytes {
		t.Errorf("Summary(GPU-b after its only sample) = %+v, want one empty summary with the device's total memory", got)
	}

	series := m.Series([]string{"GPU-a"}, at(1), time.Time{})
	if len(series) != 2 || !series[0].Time.Equal(at(1)) || series[1].MemoryUsedBytes != 40*gib1 || series[1].Index != 0 {
		t.Errorf("Series(GPU-a from 1s) = %+v, want the readings at 1s and 2s", series)
	}
}

func TestRetentionIsBoundedAndKeepsPeaks(t *testing.T) {
	// 10 samples at full resolution, then 10-second means, at most 3 of them.
	m := newMonitor(devices(1), retention{fineCap: 10, coarseStep: 10 * time.Second, coarseCap: 3})
	for i := range 100 {
		mem := uint64(i)
		if i == 55 {
			mem = 1000 // a spike that will survive only inside a downsampled point
		}
		m.record(at(i), []Sample{{Time: at(i), UUID: "GPU-a", MemoryUsedBytes: mem, UtilizationPct: float64(i)}}, nil)
	}
	tr := m.tracks[0]
	if len(tr.fine.buf) != 10 || len(tr.coarse.buf) != 3 {
		t.Fatalf("kept %d samples and %d downsampled points, want at most 10 and 3", len(tr.fine.buf), len(tr.coarse.buf))
	}

	series := m.Series(nil, time.Time{}, time.Time{})
	// Kept: the 10 s buckets from 50, 60 and 70 s, the bucket from 80 s still being
	// filled, and the samples of 90..99 s.
	if len(series) != 14 {
		t.Fatalf("Series has %d points, want 3 downsampled + 1 partial + 10 samples = 14", len(series))
	}
	for i := 1; i < len(series); i++ {
		if !series[i].Time.After(series[i-1].Time) {
			t.Fatalf("Series is not in time order at %d: %v then %v", i, series[i-1].Time, series[i].Time)
		}
	}
	if first := series[0]; !first.Time.Equal(at(50).Add(4500*time.Millisecond)) || first.UtilizationPct != 54.5 {
		t.Errorf("first downsampled point = %v util %v, want the 50..59 s mean at 54.5 s", first.Time, first.UtilizationPct)
	}
	if last := series[13]; !last.Time.Equal(at(99)) || last.MemoryUsedBytes != 99 {
		t.Errorf("last point = %+v, want the 99 s sample unchanged", last)
	}

	s := m.Summary(nil, time.Time{}, time.Time{})[0]
	if s.Samples != 50 {
		t.Errorf("Summary counts %d samples, want the 50 still represented (50..99)", s.Samples)
	}
	if s.MemoryPeakBytes != 1000 {
		t.Errorf("peak memory = %d, want the 1000 spike kept through downsampling", s.MemoryPeakBytes)
	}
	if math.Abs(s.UtilizationMeanPct-74.5) > 1e-9 {
		t.Errorf("mean utilisation = %v, want 74.5 (mean of 50..99)", s.UtilizationMeanPct)
	}
	// The ring has wrapped many times; the newest reading is still the 99 s one.
	if latest := m.Latest(); len(latest) != 1 || latest[0].MemoryUsedBytes != 99 || !latest[0].Time.Equal(at(99)) {
		t.Errorf("Latest = %+v, want the 99 s sample", latest)
	}
	if latest := newMonitor(devices(2), defaultRetention(time.Second)).Latest(); len(latest) != 0 {
		t.Errorf("Latest of a monitor that read nothing = %+v, want none", latest)
	}
}

func TestDefaultRetention(t *testing.T) {
	tests := []struct {
		interval time.Duration
		fine     int
	}{
		{time.Second, 21600},            // 6 h
		{5 * time.Second, 4320},         // still 6 h
		{100 * time.Millisecond, 21600}, // capped: 36 min
		{24 * time.Hour, 1},
	}
	for _, tt := range tests {
		r := defaultRetention(tt.interval)
		if r.fineCap != tt.fine || r.coarseCap != 7*24*60 || r.coarseStep != time.Minute {
			t.Errorf("defaultRetention(%v) = %+v, want %d samples and a week of minutes", tt.interval, r, tt.fine)
		}
	}
}

// fakeSource hands out readings whose utilisation counts up, and fails one read.
type fakeSource struct {
	mu     sync.Mutex
	reads  int
	closed int
	failAt int
}

func (f *fakeSource) Devices() []Device { return devices(2) }

func (f *fakeSource) Read() ([]Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := []Sample{
		{UUID: "GPU-a", UtilizationPct: float64(f.reads), MemoryUsedBytes: gib1},
		{UUID: "GPU-b", UtilizationPct: float64(f.reads)},
	}
	if f.reads == f.failAt {
		return out[:1], errors.New("GPU 1 (GPU-b) memory: ERROR_GPU_IS_LOST")
	}
	return out, nil
}

func (f *fakeSource) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeSource) counts() (reads, closed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads, f.closed
}

func TestMonitorSamplesUntilStopped(t *testing.T) {
	src := &fakeSource{failAt: 2}
	m := NewMonitor(context.Background(), src, 5*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s := m.Summary([]string{"GPU-a"}, time.Time{}, time.Time{}); s[0].Samples >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("monitor took over 5 s to record 5 samples at a 5 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.Stop()
	m.Stop() // idempotent
	reads, closed := src.counts()
	if closed != 1 {
		t.Fatalf("source closed %d times, want 1", closed)
	}
	sum := m.Summary(nil, time.Time{}, time.Time{})
	if sum[0].Samples != reads || sum[1].Samples != reads-1 {
		t.Errorf("samples = %d/%d after %d reads, want every read kept (GPU-b missing from the failed one)", sum[0].Samples, sum[1].Samples, reads)
	}
	if sum[0].MemoryPeakBytes != gib1 {
		t.Errorf("GPU-a peak memory = %d, want 1 GiB", sum[0].MemoryPeakBytes)
	}
	series := m.Series([]string{"GPU-a"}, time.Time{}, time.Time{})
	if series[0].Time.IsZero() || series[0].Index != 0 {
		t.Errorf("first sample %+v: want a time stamped by the monitor", series[0])
	}
	time.Sleep(20 * time.Millisecond)
	if after, _ := src.counts(); after != reads {
		t.Errorf("source read %d times after Stop", after-reads)
	}
	if err := m.Err(); err != nil {
		t.Errorf("Err after a good last read = %v, want nil", err)
	}
}

func TestMonitorStopsWithContext(t *testing.T) {
	src := &fakeSource{failAt: 1}
	ctx, cancel := context.WithCancel(context.Background())
	m := NewMonitor(ctx, src, time.Hour)
	cancel()
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		t.Fatal("monitor still running 5 s after its context ended")
	}
	if _, closed := src.counts(); closed != 1 {
		t.Fatalf("source closed %d times, want 1", closed)
	}
	// The first read failed for GPU-b and there was no later one.
	if err := m.Err(); err == nil {
		t.Error("Err = nil, want the failed read's error")
	}
}

func TestStartMonitorWithoutDevices(t *testing.T) {
	m, err := StartMonitor(context.Background(), nil, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("StartMonitor(no devices) = %v, want a monitor that records nothing", err)
	}
	time.Sleep(30 * time.Millisecond)
	m.Stop()
	if s := m.Summary(nil, time.Time{}, time.Time{}); len(s) != 0 {
		t.Fatalf("Summary = %+v, want none", s)
	}
}
