//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlLibrary is the file go-nvml dlopens; named in messages so an operator knows what
// is missing.
const nvmlLibrary = "libnvidia-ml.so.1"

// initNVML loads and initialises NVML. Every other nvml call must come after it has
// succeeded: go-nvml calls into symbols that do not exist when the library failed to
// load, which crashes the process instead of returning an error.
func initNVML() error {
	ret := nvml.Init()
	switch ret {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return &Unavailable{Reason: "NVIDIA driver library (" + nvmlLibrary + ") not found: no GPUs on this host"}
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return &Unavailable{Reason: "NVIDIA driver is not loaded: no GPUs usable on this host"}
	case nvml.ERROR_NO_PERMISSION:
		return &Unavailable{Reason: "no permission to use the NVIDIA driver (NVML init): no GPUs usable by this process"}
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return &Unavailable{Reason: "NVIDIA driver library and kernel module versions differ (a driver upgrade without reboot?): no GPUs usable"}
	default:
		return &Unavailable{Reason: "NVML init failed: " + ret.Error() + ": no GPUs usable"}
	}
}

// Discover lists the host's GPUs in NVML index order. When NVML or GPUs are absent the
// error is an *Unavailable saying why; any other error means NVML works but a GPU
// could not be read, which is a host problem worth stopping for.
func Discover() ([]Device, error) {
	if err := initNVML(); err != nil {
		return nil, err
	}
	defer nvml.Shutdown()

	count, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, &Unavailable{Reason: "NVML could not count GPUs: " + ret.Error() + ": no GPUs usable"}
	}
	if count == 0 {
		return nil, &Unavailable{Reason: "NVIDIA driver is loaded but reports no GPUs on this host"}
	}
	devs := make([]Device, 0, count)
	for i := range count {
		d, err := readDevice(i)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// readDevice reads what discovery reports for GPU i. Only the UUID is required, since
// engines are pinned by it; the rest is descriptive and left empty if NVML refuses.
func readDevice(i int) (Device, error) {
	h, ret := nvml.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("NVML GPU %d: get handle: %w", i, ret)
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("NVML GPU %d: read UUID: %w", i, ret)
	}
	d := Device{Index: i, UUID: uuid}
	if name, ret := h.GetName(); ret == nvml.SUCCESS {
		d.Name = name
	}
	if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryTotalBytes = mem.Total
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.PCIBusID = cString(pci.BusId[:])
	}
	return d, nil
}

// cString converts a NUL-terminated C char array, as NVML structs hold them.
func cString(chars []int8) string {
	b := make([]byte, 0, len(chars))
	for _, c := range chars {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// StartMonitor samples devs through NVML every interval (1 s when interval <= 0) until
// ctx ends or Stop is called. With no devs it starts a monitor that records nothing
// and never touches NVML, so GPU-less hosts need no special case.
func StartMonitor(ctx context.Context, devs []Device, interval time.Duration) (*Monitor, error) {
	if len(devs) == 0 {
		return NewMonitor(ctx, emptySource{}, interval), nil
	}
	src, err := openNVMLSource(devs)
	if err != nil {
		return nil, err
	}
	return NewMonitor(ctx, src, interval), nil
}

// nvmlSource reads telemetry of a fixed set of GPUs; it holds one NVML initialisation
// (NVML reference-counts them) for its lifetime.
type nvmlSource struct {
	devs    []Device
	handles []nvml.Device
	// memoryV2 says the driver has nvmlDeviceGetMemoryInfo_v2, whose "used" leaves
	// out the memory the driver reserves for itself (about 0.5 GiB on an H100) and so
	// matches nvidia-smi. Older drivers lack it, and calling a missing symbol through
	// go-nvml crashes, so it is looked up first.
	memoryV2 bool
}

func openNVMLSource(devs []Device) (*nvmlSource, error) {
	if err := initNVML(); err != nil {
		return nil, err
	}
	s := &nvmlSource{
		devs:     devs,
		handles:  make([]nvml.Device, len(devs)),
		memoryV2: nvml.Extensions().LookupSymbol("nvmlDeviceGetMemoryInfo_v2") == nil,
	}
	for i, d := range devs {
		h, ret := nvml.DeviceGetHandleByUUID(d.UUID)
		if ret != nvml.SUCCESS {
			nvml.Shutdown()
			return nil, fmt.Errorf("NVML GPU %s: get handle: %w", d.UUID, ret)
		}
		s.handles[i] = h
	}
	return s, nil
}

func (s *nvmlSource) Devices() []Device { return s.devs }

// Read reads every device once. A field the board does not support (power on some
// boards) stays zero; other failures also leave the field zero but are returned,
// joined, so the monitor can report that readings are incomplete.
func (s *nvmlSource) Read() ([]Sample, error) {
	now := time.Now()
	out := make([]Sample, len(s.devs))
	var errs []error
	check := func(d Device, what string, ret nvml.Return) bool {
		if ret == nvml.SUCCESS {
			return true
		}
		if ret != nvml.ERROR_NOT_SUPPORTED {
			errs = append(errs, fmt.Errorf("GPU %d (%s) %s: %w", d.Index, d.UUID, what, ret))
		}
		return false
	}
	for i, h := range s.handles {
		d := s.devs[i]
		smp := Sample{Time: now, Index: d.Index, UUID: d.UUID, MemoryTotalBytes: d.MemoryTotalBytes}
		if s.memoryV2 {
			if mem, ret := h.GetMemoryInfo_v2(); check(d, "memory", ret) {
				smp.MemoryUsedBytes, smp.MemoryTotalBytes = mem.Used, mem.Total
			}
		} else if mem, ret := h.GetMemoryInfo(); check(d, "memory", ret) {
			smp.MemoryUsedBytes, smp.MemoryTotalBytes = mem.Used, mem.Total
		}
		if u, ret := h.GetUtilizationRates(); check(d, "utilization", ret) {
			smp.UtilizationPct = float64(u.Gpu)
		}
		if mw, ret := h.GetPowerUsage(); check(d, "power", ret) {
			smp.PowerWatts = float64(mw) / 1000
		}
		if c, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); check(d, "temperature", ret) {
			smp.TemperatureC = float64(c)
		}
		out[i] = smp
	}
	return out, errors.Join(errs...)
}

func (s *nvmlSource) Close() error {
	if ret := nvml.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %w", ret)
	}
	return nil
}
