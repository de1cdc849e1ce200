package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"go.uber.org/zap"
)

// heapPeakEnv names a folder where a worker writes a heap profile each time its
// heap reaches a new peak (checked every 200 ms): the last file is what the
// process held at its largest, for finding what makes peak RSS grow. Unset, off.
// Hidden on purpose: a measuring aid for `vbatch bench`, not a setting.
const heapPeakEnv = "VBATCH_HEAP_PEAK_DIR"

// watchHeapPeak writes heap-peak profiles of role into $VBATCH_HEAP_PEAK_DIR
// until ctx ends.
func (a *app) watchHeapPeak(ctx context.Context, role string) {
	dir := os.Getenv(heapPeakEnv)
	if dir == "" {
		return
	}
	go func() {
		var peak uint64
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse <= peak+peak/20 { // a new peak by 5 %: not one file a tick
				continue
			}
			peak = ms.HeapInuse
			path := filepath.Join(dir, fmt.Sprintf("%s-%d-heap.pprof", role, os.Getpid()))
			if err := writeHeapProfile(path); err != nil {
				a.log.Warn("heap peak profile", zap.Error(err))
				return
			}
			a.log.Info("heap peak", zap.Uint64("heap_inuse", ms.HeapInuse), zap.Uint64("heap_sys", ms.HeapSys), zap.String("profile", path))
		}
	}()
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
