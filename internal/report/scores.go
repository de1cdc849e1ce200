package report

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"strings"
)

// scoreSet is the candidate scores of a run's answers by custom_id, kept compact
// because it lives from Measure's pass to the comparison, and two of them (this
// run's and the previous run's) live together: each custom_id is its SHA-256 cut
// to 128 bits (as the batchfile reader keeps them; two ids meet by chance with a
// probability of about 10⁻²⁷), each score an index into the distinct values. That
// is 20 bytes an answer rather than the ~70 of a map of strings.
type scoreSet struct {
	scores []scored // by id once sealed
	values []string // the distinct score values, one copy each
	index  map[string]uint32
	sealed bool
}

type scored struct {
	id    scoreID
	value uint32
}

type scoreID [16]byte

func scoreKey(customID string) scoreID {
	sum := sha256.Sum256([]byte(customID))
	return scoreID(sum[:16])
}

func newScoreSet() *scoreSet { return &scoreSet{index: map[string]uint32{}} }

// add records customID's score; a later score of the same custom_id replaces it.
func (s *scoreSet) add(customID, value string) {
	v, ok := s.index[value]
	if !ok {
		// A copy, so a million answers that score "Yes" share one string rather
		// than each keeping its line's bytes alive.
		value = strings.Clone(value)
		v = uint32(len(s.values))
		s.values = append(s.values, value)
		s.index[value] = v
	}
	s.scores = append(s.scores, scored{id: scoreKey(customID), value: v})
	s.sealed = false
}

// seal sorts the scores by id, keeping the last score of each id.
func (s *scoreSet) seal() {
	if s.sealed {
		return
	}
	slices.SortStableFunc(s.scores, func(a, b scored) int { return bytes.Compare(a.id[:], b.id[:]) })
	kept := s.scores[:0]
	for i, x := range s.scores {
		if i+1 < len(s.scores) && s.scores[i+1].id == x.id {
			continue
		}
		kept = append(kept, x)
	}
	s.scores = slices.Clip(kept)
	s.sealed = true
}

// len is the number of custom_ids scored.
func (s *scoreSet) len() int {
	if s == nil {
		return 0
	}
	s.seal()
	return len(s.scores)
}

// get is customID's score.
func (s *scoreSet) get(customID string) (string, bool) {
	if s == nil {
		return "", false
	}
	s.seal()
	id := scoreKey(customID)
	i, ok := slices.BinarySearchFunc(s.scores, id, func(x scored, id scoreID) int { return bytes.Compare(x.id[:], id[:]) })
	if !ok {
		return "", false
	}
	return s.values[s.scores[i].value], true
}
