package gpu

import (
	"bytes"
	"strings"
	"testing"
)

func devices(n int) []Device {
	devs := make([]Device, n)
	for i := range devs {
		devs[i] = Device{Index: i, UUID: "GPU-" + string(rune('a'+i)), Name: "NVIDIA H100 80GB HBM3", MemoryTotalBytes: 85520809984}
	}
	return devs
}

func uuidsOf(groups [][]Device) [][]string {
	out := make([][]string, len(groups))
	for i, g := range groups {
		for _, d := range g {
			out[i] = append(out[i], d.UUID)
		}
	}
	return out
}

func TestGroups(t *testing.T) {
	shuffled := devices(4)
	shuffled[0], shuffled[3] = shuffled[3], shuffled[0]
	tests := []struct {
		name    string
		devs    []Device
		tp      int
		want    [][]string
		wantErr string
	}{
		{name: "one engine per GPU", devs: devices(4), tp: 1, want: [][]string{{"GPU-a"}, {"GPU-b"}, {"GPU-c"}, {"GPU-d"}}},
		{name: "pairs", devs: devices(4), tp: 2, want: [][]string{{"GPU-a", "GPU-b"}, {"GPU-c", "GPU-d"}}},
		{name: "grouped by index whatever the input order", devs: shuffled, tp: 2, want: [][]string{{"GPU-a", "GPU-b"}, {"GPU-c", "GPU-d"}}},
		{name: "leftover GPU is left out", devs: devices(3), tp: 2, want: [][]string{{"GPU-a", "GPU-b"}}},
		{name: "all in one group", devs: devices(8), tp: 8, want: [][]string{{"GPU-a", "GPU-b", "GPU-c", "GPU-d", "GPU-e", "GPU-f", "GPU-g", "GPU-h"}}},
		{name: "too few GPUs", devs: devices(2), tp: 4, wantErr: "tensor_parallel_size 4 needs 4 GPUs, this host has 2"},
		{name: "no GPUs", devs: nil, tp: 1, wantErr: "tensor_parallel_size 1 needs 1 GPUs, this host has 0"},
		{name: "zero tp", devs: devices(2), tp: 0, wantErr: "tensor_parallel_size must be at least 1, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups, err := Groups(tt.devs, tt.tp)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Groups error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Groups: %v", err)
			}
			got := uuidsOf(groups)
			if len(got) != len(tt.want) {
				t.Fatalf("groups = %v, want %v", got, tt.want)
			}
			for i := range got {
				if strings.Join(got[i], ",") != strings.Join(tt.want[i], ",") {
					t.Fatalf("groups = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestGroupsDoesNotReorderCallersSlice(t *testing.T) {
	devs := devices(2)
	devs[0], devs[1] = devs[1], devs[0]
	if _, err := Groups(devs, 1); err != nil {
		t.Fatal(err)
	}
	if devs[0].UUID != "GPU-b" {
		t.Fatalf("Groups sorted the caller's slice: %v", devs)
	}
}

func TestVisibleDevices(t *testing.T) {
	if got := VisibleDevices(devices(2)); got != "GPU-a,GPU-b" {
		t.Fatalf("VisibleDevices = %q, want %q", got, "GPU-a,GPU-b")
	}
	if got := VisibleDevices(devices(1)); got != "GPU-a" {
		t.Fatalf("VisibleDevices = %q, want %q", got, "GPU-a")
	}
	if got := VisibleDevices(nil); got != "" {
		t.Fatalf("VisibleDevices(nil) = %q, want empty", got)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	devs := devices(2)
	devs[1].PCIBusID = "00000000:1B:00.0"
	WriteTable(&buf, devs)
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table has %d lines, want header + 2:\n%s", len(lines), buf.String())
	}
	for _, col := range []string{"INDEX", "UUID", "NAME", "MEMORY"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q lacks %s", lines[0], col)
		}
	}
	want := []string{"1", "GPU-b", "NVIDIA H100 80GB HBM3", "79.6 GiB", "00000000:1B:00.0"}
	for _, w := range want {
		if !strings.Contains(lines[2], w) {
			t.Errorf("row %q lacks %q", lines[2], w)
		}
	}
	// Columns line up: the UUID starts at the same offset in every row.
	if strings.Index(lines[1], "GPU-a") != strings.Index(lines[2], "GPU-b") || strings.Index(lines[0], "UUID") != strings.Index(lines[1], "GPU-a") {
		t.Errorf("columns are not aligned:\n%s", buf.String())
	}

	buf.Reset()
	WriteTable(&buf, nil)
	if buf.String() != "no GPUs\n" {
		t.Fatalf("WriteTable(nil) = %q, want %q", buf.String(), "no GPUs\n")
	}
}

func TestSelectKeepsTheListedGPUs(t *testing.T) {
	devs := []Device{{Index: 0, UUID: "GPU-a"}, {Index: 1, UUID: "GPU-b"}, {Index: 2, UUID: "GPU-c"}}
	all, err := Select(devs, nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("no indexes: %v %v, want all three", all, err)
	}
	some, err := Select(devs, []int{2, 0})
	if err != nil || len(some) != 2 || some[0].UUID != "GPU-c" || some[1].UUID != "GPU-a" {
		t.Fatalf("indexes 2,0: %v %v", some, err)
	}
	if _, err := Select(devs, []int{3}); err == nil || !strings.Contains(err.Error(), "no GPU with index 3") {
		t.Fatalf("index 3: %v, want an error naming it", err)
	}
}
