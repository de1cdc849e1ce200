package run

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"github.com/vbatch/vbatch/internal/blob"
)

// LoadAnswers reads every checkpoint part of chunk i, of every attempt, and keeps
// the first answer per custom_id in the order the parts were written. A zombie
// attempt that wrote after a newer one started can therefore never duplicate an
// answer. It returns the answers and the number of parts read.
func LoadAnswers(ctx context.Context, store blob.Store, l Layout, chunk int) (map[string]Answer, int, error) {
	objects, err := store.List(ctx, l.ChunkDir(chunk))
	if err != nil {
		return nil, 0, fmt.Errorf("list chunk %d: %w", chunk, err)
	}
	answers := map[string]Answer{}
	parts := 0
	for _, o := range objects {
		if !IsPart(o.URI) {
			continue
		}
		parts++
		if err := readPart(ctx, store, o.URI, answers); err != nil {
			return nil, 0, err
		}
	}
	return answers, parts, nil
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
		if _, seen := into[a.CustomID]; !seen {
			into[a.CustomID] = a
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read part %s: %w", uri, err)
	}
	return nil
}
