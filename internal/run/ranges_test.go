package run

import (
	"reflect"
	"testing"
)

func TestRangesOfPacksRunsOfIndexes(t *testing.T) {
	got := RangesOf([]int{0, 1, 2, 5, 7, 8})
	want := []IndexRange{{0, 2}, {5, 5}, {7, 8}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RangesOf = %v, want %v", got, want)
	}
	if n := Count(got); n != 6 {
		t.Fatalf("Count = %d, want 6", n)
	}
	if RangesOf(nil) != nil {
		t.Fatal("RangesOf(nil) is not empty")
	}
}
