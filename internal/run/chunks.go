package run

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
)

// EachRequest streams the requests of chunk i's input object (chunks/00017.jsonl) in
// input order. A missing chunk is an error wrapping blob.ErrNotFound.
func EachRequest(ctx context.Context, store blob.Store, l Layout, i int, fn func(batchfile.Request) error) error {
	return eachChunkLine(ctx, store, l, i, func(line []byte) error {
		var req batchfile.Request
		if err := json.Unmarshal(line, &req); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		return fn(req)
	})
}

// RequestRef is what Merge needs of a chunk's request: which request it is, where
// it goes in the output and which shape its answer takes.
type RequestRef struct {
	CustomID string         `json:"custom_id"`
	Line     int            `json:"line"`
	Kind     batchfile.Kind `json:"kind"`
}

// RequestRefs reads the requests of chunk i's input object as refs, in input order.
// Plan writes custom_id, line and kind first on each line, so they are read from the
// line's start and the rest — the messages or prompt, most of the bytes — is never
// parsed: decoding it was most of Merge's time. A line that starts otherwise is
// decoded whole. A missing chunk is an error wrapping blob.ErrNotFound.
func RequestRefs(ctx context.Context, store blob.Store, l Layout, i int) ([]RequestRef, error) {
	var refs []RequestRef
	err := eachChunkLine(ctx, store, l, i, func(line []byte) error {
		ref, ok := refOfLineStart(line)
		if !ok {
			if err := json.Unmarshal(line, &ref); err != nil {
				return fmt.Errorf("chunk %d: %w", i, err)
			}
		}
		refs = append(refs, ref)
		return nil
	})
	return refs, err
}

// refOfLineStart reads a line that starts {"custom_id":"…","line":N,"kind":"…",
// as encoding/json writes a batchfile.Request; ok is false for any other start.
func refOfLineStart(b []byte) (ref RequestRef, ok bool) {
	const idKey, lineKey, kindKey = `{"custom_id":`, `,"line":`, `,"kind":"`
	if !bytes.HasPrefix(b, []byte(idKey)) {
		return ref, false
	}
	b = b[len(idKey):]
	end := stringEnd(b)
	if end < 0 {
		return ref, false
	}
	if bytes.IndexByte(b[:end], '\\') < 0 {
		ref.CustomID = string(b[1 : end-1])
	} else if json.Unmarshal(b[:end], &ref.CustomID) != nil {
		return ref, false
	}
	b = b[end:]
	if !bytes.HasPrefix(b, []byte(lineKey)) {
		return ref, false
	}
	b = b[len(lineKey):]
	digits := 0
	for digits < len(b) && b[digits] >= '0' && b[digits] <= '9' {
		digits++
	}
	var err error
	if ref.Line, err = strconv.Atoi(string(b[:digits])); err != nil {
		return ref, false
	}
	b = b[digits:]
	if !bytes.HasPrefix(b, []byte(kindKey)) {
		return ref, false
	}
	b = b[len(kindKey):]
	kind := bytes.IndexAny(b, `"\`)
	if kind < 0 || b[kind] != '"' {
		return ref, false
	}
	ref.Kind = batchfile.Kind(b[:kind])
	return ref, true
}

// stringEnd is the length of the JSON string at b's start, quotes included, or -1.
func stringEnd(b []byte) int {
	if len(b) == 0 || b[0] != '"' {
		return -1
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

func eachChunkLine(ctx context.Context, store blob.Store, l Layout, i int, fn func([]byte) error) error {
	src, err := store.Open(ctx, l.Chunk(i))
	if err != nil {
		return fmt.Errorf("open chunk %d: %w", i, err)
	}
	defer src.Close()
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read chunk %d: %w", i, err)
	}
	return nil
}
