package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/bench"
)

// heapPeakEnv names a folder where a worker writes a heap profile each time its
// heap reaches a new peak, and logs the runtime's memory classes each time its
// peak resident set grows (both checked every 100 ms): what the process held at
// its largest, for finding what makes peak RSS grow. Unset, off. Hidden on
// purpose: a measuring aid for `vbatch bench`, not a setting.
const heapPeakEnv = "VBATCH_HEAP_PEAK_DIR"

// watchHeapPeak writes heap-peak profiles of role into $VBATCH_HEAP_PEAK_DIR
// until ctx ends.
func (a *app) watchHeapPeak(ctx context.Context, role string) {
	dir := os.Getenv(heapPeakEnv)
	if dir == "" {
		return
	}
	go func() {
		var heapPeak int64
		var residentPeak int64
		classes := memoryClasses()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if resident, err := bench.PeakRSS(os.Getpid()); err == nil && resident > residentPeak+1<<20 {
				residentPeak = resident
				a.logMemoryClasses(resident, classes)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if inuse := int64(ms.HeapInuse); inuse > heapPeak+heapPeak/20 { // a new peak by 5 %: not one file a tick
				heapPeak = inuse
				path := filepath.Join(dir, fmt.Sprintf("%s-%d-heap.pprof", role, os.Getpid()))
				if err := writeHeapProfile(path); err != nil {
					a.log.Warn("heap peak profile", zap.Error(err))
					return
				}
				a.log.Info("heap peak", zap.Uint64("heap_inuse", ms.HeapInuse), zap.Uint64("heap_sys", ms.HeapSys), zap.String("profile", path))
			}
		}
	}()
}

// logMemoryClasses logs what the runtime's memory is at a new resident peak:
// live and dead heap objects, freed heap not yet returned to the OS, stacks,
// the runtime's own structures.
func (a *app) logMemoryClasses(resident int64, classes []metrics.Sample) {
	metrics.Read(classes)
	fields := []zap.Field{zap.Int64("peak_rss", resident)}
	fields = append(fields, processStatus()...)
	for _, c := range classes {
		fields = append(fields, zap.Uint64(strings.TrimPrefix(c.Name, "/memory/classes/"), c.Value.Uint64()))
	}
	a.log.Info("resident peak", fields...)
}

// processStatus is the kernel's split of the resident set now: anonymous memory
// (the heap, stacks, C allocations) against file pages (the binary's code and
// data), and the number of threads, each of which has a C stack.
func processStatus() []zap.Field {
	names := []string{"RssAnon", "RssFile", "Threads"}
	status, err := bench.ProcStatus(os.Getpid(), names...)
	if err != nil {
		return nil
	}
	var fields []zap.Field
	for _, name := range names {
		if v, ok := status[name]; ok {
			fields = append(fields, zap.String(name, v))
		}
	}
	return fields
}

// memoryClasses are the leaves of the runtime's /memory/classes metrics.
func memoryClasses() []metrics.Sample {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") && d.Name != "/memory/classes/total:bytes" && d.Kind == metrics.KindUint64 {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	return samples
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
