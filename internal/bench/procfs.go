package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PeakRSS reads a live process's peak resident set (VmHWM) from /proc, in bytes.
// It works on Linux only; elsewhere it returns an error.
func PeakRSS(pid int) (int64, error) {
	status, err := ProcStatus(pid, "VmHWM")
	if err != nil {
		return 0, err
	}
	v, ok := status["VmHWM"]
	if !ok {
		return 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status: VmHWM %q: %w", pid, v, err)
	}
	return kb * 1024, nil
}

// ProcStatus reads the named fields of a live process's /proc/PID/status, as the
// kernel writes them ("1234 kB"); a field the kernel does not write is absent.
func ProcStatus(pid int, names ...string) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if ok && slices.Contains(names, name) {
			fields[name] = strings.TrimSpace(value)
		}
	}
	return fields, nil
}

// Children lists the processes whose parent is pid, from /proc/*/stat.
func Children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process ended
		}
		// The command name is in parentheses and may hold spaces: fields after it
		// are state, then the parent's pid.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		if child, err := strconv.Atoi(filepath.Base(filepath.Dir(path))); err == nil {
			out = append(out, child)
		}
	}
	return out
}

// Peaks are the peak resident sets that a Watcher saw.
type Peaks struct {
	ControlBytes int64 `json:"control_worker_peak_bytes"`
	GPUBytes     int64 `json:"gpu_worker_peak_bytes"`
	// RunnerBytes is the largest peak of one engine process (the sim runner, a
	// child of the GPU worker); Runners is how many the watcher saw.
	RunnerBytes int64 `json:"runner_peak_bytes"`
	Runners     int   `json:"runners"`
	// ControlRose is the two samples between which the control worker's peak
	// came within peakSlack of its final value: when it was reached, to the
	// sampling interval. The slack keeps a page or two touched later (the
	// report, the shutdown) from claiming a peak another phase set.
	ControlRose Window `json:"-"`
}

// peakSlack is how close to its final value a peak counts as reached.
const peakSlack = 1 << 20

// rise is a sample that saw the control worker's peak grow, and to what.
type rise struct {
	between Window
	bytes   int64
}

// reached is when a peak that ended at final was reached: the first rise that
// came within peakSlack of it.
func reached(rises []rise, final int64) Window {
	for _, r := range rises {
		if r.bytes >= final-peakSlack {
			return r.between
		}
	}
	return Window{}
}

// Watcher samples the peak RSS of the control worker, the GPU worker and the GPU
// worker's engine processes. VmHWM is the kernel's own high-water mark, so sampling
// only has to catch each process alive once; engine processes are found as the GPU
// worker's children at every sample.
type Watcher struct {
	control, gpu int
	stop         chan struct{}
	done         sync.WaitGroup
	mu           sync.Mutex
	peaks        Peaks
	runners      map[int]int64
	lastSample   time.Time
	controlRises []rise
}

// Watch starts sampling every interval until Stop.
func Watch(controlPID, gpuPID int, interval time.Duration) *Watcher {
	w := &Watcher{control: controlPID, gpu: gpuPID, stop: make(chan struct{}), runners: map[int]int64{}}
	w.sample()
	w.done.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
			}
		}
	})
	return w
}

func (w *Watcher) sample() {
	control, _ := PeakRSS(w.control)
	gpu, _ := PeakRSS(w.gpu)
	children := Children(w.gpu)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if control > w.peaks.ControlBytes {
		w.peaks.ControlBytes = control
		w.controlRises = append(w.controlRises, rise{between: Window{Start: w.lastSample, End: now}, bytes: control})
	}
	w.lastSample = now
	w.peaks.GPUBytes = max(w.peaks.GPUBytes, gpu)
	for _, pid := range children {
		if rss, err := PeakRSS(pid); err == nil {
			w.runners[pid] = max(w.runners[pid], rss)
		}
	}
}

// Stop takes a last sample (call it while the processes still live) and returns
// the peaks.
func (w *Watcher) Stop() Peaks {
	close(w.stop)
	w.done.Wait()
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.peaks
	p.ControlRose = reached(w.controlRises, p.ControlBytes)
	p.Runners = len(w.runners)
	for _, rss := range w.runners {
		p.RunnerBytes = max(p.RunnerBytes, rss)
	}
	return p
}
