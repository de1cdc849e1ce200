package run

// IndexRange is the chunk indexes First through Last, both included.
type IndexRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// RangesOf packs ascending indexes into ranges: thousands of chunk indexes in a
// few bytes of a workflow's input.
func RangesOf(indexes []int) []IndexRange {
	var ranges []IndexRange
	for _, i := range indexes {
		if n := len(ranges); n > 0 && ranges[n-1].Last+1 == i {
			ranges[n-1].Last = i
			continue
		}
		ranges = append(ranges, IndexRange{First: i, Last: i})
	}
	return ranges
}

// Count is the number of indexes in the ranges.
func Count(ranges []IndexRange) int {
	n := 0
	for _, r := range ranges {
		n += r.Last - r.First + 1
	}
	return n
}
