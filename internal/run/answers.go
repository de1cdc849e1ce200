package run

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/vbatch/vbatch/internal/blob"
)

// ChunkState is what a chunk's folder in S3 says about it. It is the truth about a
// chunk's progress; heartbeat details are only a hint.
type ChunkState struct {
	// Answers holds one answer per custom_id: the first successful one in the
	// order the parts were written, else the first error.
	Answers map[string]Answer
	// Parts counts the checkpoint parts of every attempt.
	Parts int
	// Deaths are the engine deaths the chunk's attempts recorded, oldest first.
	Deaths []EngineDeath
	// LastAttempt is the highest attempt number of any object in the folder; a
	// retry run numbers its own attempts after it.
	LastAttempt int
}

// LoadChunk reads every checkpoint part and death record of chunk i, of every
// attempt. Parts are read in attempt, then part order, which is the order they were
// written in, and the first answer per custom_id is kept — except that a successful
// answer replaces an earlier error, so that a request retried after an engine error
// ends with its answer. A zombie attempt that wrote after a newer one started can
// therefore never duplicate an answer.
func LoadChunk(ctx context.Context, store blob.Store, l Layout, chunk int) (ChunkState, error) {
	objects, err := store.List(ctx, l.ChunkDir(chunk))
	if err != nil {
		return ChunkState{}, fmt.Errorf("list chunk %d: %w", chunk, err)
	}
	type part struct {
		uri           string
		attempt, part int
	}
	var parts []part
	st := ChunkState{Answers: map[string]Answer{}}
	for _, o := range objects {
		if a, ok := AttemptNumber(o.URI); ok {
			st.LastAttempt = max(st.LastAttempt, a)
		}
		switch {
		case IsPart(o.URI):
			a, p, _ := PartNumber(o.URI)
			parts = append(parts, part{o.URI, a, p})
		case IsDeath(o.URI):
			var d EngineDeath
			if err := blob.ReadJSON(ctx, store, o.URI, &d); err != nil {
				return ChunkState{}, fmt.Errorf("read %s: %w", o.URI, err)
			}
			st.Deaths = append(st.Deaths, d)
		}
	}
	// Numeric order: a lexical listing would put attempt 100 before attempt 99.
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].attempt != parts[j].attempt {
			return parts[i].attempt < parts[j].attempt
		}
		return parts[i].part < parts[j].part
	})
	sort.SliceStable(st.Deaths, func(i, j int) bool { return st.Deaths[i].Attempt < st.Deaths[j].Attempt })
	for _, p := range parts {
		if err := readPart(ctx, store, p.uri, st.Answers); err != nil {
			return ChunkState{}, err
		}
	}
	st.Parts = len(parts)
	return st, nil
}

// LoadAnswers is LoadChunk's answers and part count.
func LoadAnswers(ctx context.Context, store blob.Store, l Layout, chunk int) (map[string]Answer, int, error) {
	st, err := LoadChunk(ctx, store, l, chunk)
	if err != nil {
		return nil, 0, err
	}
	return st.Answers, st.Parts, nil
}

func readPart(ctx context.Context, store blob.Store, uri string, into map[string]Answer) error {
	r, err := store.Open(ctx, uri)
	if err != nil {
		return fmt.Errorf("open part: %w", err)
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		var a Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			// A part is written whole or not at all; a bad line is corruption.
			return fmt.Errorf("part %s: %w", uri, err)
		}
		if seen, ok := into[a.CustomID]; !ok || (seen.Error != nil && a.Error == nil) {
			into[a.CustomID] = a
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read part %s: %w", uri, err)
	}
	return nil
}
