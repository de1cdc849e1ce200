// Package gpu owns what vbatch knows about the host's NVIDIA GPUs: discovery through
// NVML (go-nvml, loaded with dlopen, so a host without the driver library simply has
// no GPUs), splitting them into one group per engine, the CUDA_VISIBLE_DEVICES value
// that pins an engine to its group, and a telemetry monitor that samples memory,
// utilisation, power and temperature about once a second for chunk results and the
// run's report.
package gpu

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Device is one physical GPU as NVML reports it at discovery.
type Device struct {
	Index            int    `json:"index"` // NVML index (PCI bus order), not necessarily CUDA's
	UUID             string `json:"uuid"`  // GPU-…; what engines are pinned by
	Name             string `json:"name"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	PCIBusID         string `json:"pci_bus_id"`
}

// Unavailable says why this host has no usable GPUs: no NVML library, no driver, no
// devices. It is the expected answer on CPU-only hosts, so callers fall back (to the
// simulator, or to an openai engine) rather than fail.
type Unavailable struct {
	Reason string
}

// Error is the reason alone: every reason already says that no GPUs are usable.
func (e *Unavailable) Error() string { return e.Reason }

// Groups splits devs into consecutive groups of tensorParallel devices, one group per
// engine, in NVML index order (neighbouring indices usually share a PCIe switch or
// NVLink domain, which tensor parallelism wants).
//
// When len(devs) is not a multiple of tensorParallel, the last len(devs)%tensorParallel
// devices (by index) belong to no group and are not an error: a 3-GPU host still runs
// one tp=2 engine. The caller can name them as those devices of devs that appear in no
// group. Fewer devices than tensorParallel is an error, as is tensorParallel < 1.
func Groups(devs []Device, tensorParallel int) ([][]Device, error) {
	if tensorParallel < 1 {
		return nil, fmt.Errorf("tensor_parallel_size must be at least 1, got %d", tensorParallel)
	}
	if len(devs) < tensorParallel {
		return nil, fmt.Errorf("tensor_parallel_size %d needs %d GPUs, this host has %d", tensorParallel, tensorParallel, len(devs))
	}
	sorted := slices.Clone(devs)
	slices.SortStableFunc(sorted, func(a, b Device) int { return a.Index - b.Index })
	groups := make([][]Device, 0, len(sorted)/tensorParallel)
	for i := 0; i+tensorParallel <= len(sorted); i += tensorParallel {
		groups = append(groups, sorted[i:i+tensorParallel:i+tensorParallel])
	}
	return groups, nil
}

// VisibleDevices is the CUDA_VISIBLE_DEVICES value that pins a process to group. It
// names GPUs by UUID rather than index because CUDA's index order (fastest first by
// default) need not match NVML's (PCI bus order).
func VisibleDevices(group []Device) string {
	uuids := make([]string, len(group))
	for i, d := range group {
		uuids[i] = d.UUID
	}
	return strings.Join(uuids, ",")
}

// WriteTable prints devs as an aligned table, as `vbatch gpus` shows them. Write
// errors are ignored: the table is for a terminal.
func WriteTable(w io.Writer, devs []Device) {
	if len(devs) == 0 {
		fmt.Fprintln(w, "no GPUs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tUUID\tNAME\tMEMORY\tPCI BUS")
	for _, d := range devs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.1f GiB\t%s\n", d.Index, d.UUID, d.Name, gib(d.MemoryTotalBytes), d.PCIBusID)
	}
	_ = tw.Flush()
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// Select keeps the devices whose NVML index is listed, in the listed order; none
// listed keeps them all. An index that no device has is an error naming the ones
// that exist.
func Select(devs []Device, indexes []int) ([]Device, error) {
	if len(indexes) == 0 {
		return devs, nil
	}
	byIndex := map[int]Device{}
	for _, d := range devs {
		byIndex[d.Index] = d
	}
	out := make([]Device, 0, len(indexes))
	for _, i := range indexes {
		d, ok := byIndex[i]
		if !ok {
			return nil, fmt.Errorf("no GPU with index %d (this host has %d: indexes 0 to %d)", i, len(devs), len(devs)-1)
		}
		out = append(out, d)
	}
	return out, nil
}
