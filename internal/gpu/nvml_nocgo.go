//go:build !cgo

package gpu

import (
	"context"
	"time"
)

// Without cgo go-nvml cannot be built, and a binary built that way (a static control
// worker, say) has no GPUs rather than failing to build.
const noCgoReason = "vbatch was built without cgo (CGO_ENABLED=0), so it cannot load NVML: no GPUs usable"

// Discover reports no GPUs: this build cannot reach NVML.
func Discover() ([]Device, error) {
	return nil, &Unavailable{Reason: noCgoReason}
}

// StartMonitor starts a monitor that records nothing when devs is empty; with devices
// it fails, since this build cannot read them.
func StartMonitor(ctx context.Context, devs []Device, interval time.Duration) (*Monitor, error) {
	if len(devs) > 0 {
		return nil, &Unavailable{Reason: noCgoReason}
	}
	return NewMonitor(ctx, emptySource{}, interval), nil
}
