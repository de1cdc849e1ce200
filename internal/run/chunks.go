package run

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
)

// EachRequest streams the requests of chunk i's input object (chunks/00017.jsonl) in
// input order. A missing chunk is an error wrapping blob.ErrNotFound.
func EachRequest(ctx context.Context, store blob.Store, l Layout, i int, fn func(batchfile.Request) error) error {
	src, err := store.Open(ctx, l.Chunk(i))
	if err != nil {
		return fmt.Errorf("open chunk %d: %w", i, err)
	}
	defer src.Close()
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		var req batchfile.Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		if err := fn(req); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read chunk %d: %w", i, err)
	}
	return nil
}
