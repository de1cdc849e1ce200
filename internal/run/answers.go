package run

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/vbatch/vbatch/internal/batchfile"
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
	parts, deaths, lastAttempt, err := listChunk(ctx, store, l, chunk)
	if err != nil {
		return ChunkState{}, err
	}
	st := ChunkState{Answers: map[string]Answer{}, Parts: len(parts), LastAttempt: lastAttempt}
	for _, uri := range deaths {
		var d EngineDeath
		if err := blob.ReadJSON(ctx, store, uri, &d); err != nil {
			return ChunkState{}, fmt.Errorf("read %s: %w", uri, err)
		}
		st.Deaths = append(st.Deaths, d)
	}
	sort.SliceStable(st.Deaths, func(i, j int) bool { return st.Deaths[i].Attempt < st.Deaths[j].Attempt })
	for _, p := range parts {
		if err := readPart(ctx, store, p.URI, st.Answers); err != nil {
			return ChunkState{}, err
		}
	}
	return st, nil
}

// listChunk lists chunk i's folder: its parts in the order they were written
// (attempt, then part), its death records, and the highest attempt of any object.
func listChunk(ctx context.Context, store blob.Store, l Layout, chunk int) (parts []blob.Info, deaths []string, lastAttempt int, err error) {
	objects, err := store.List(ctx, l.ChunkDir(chunk))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list chunk %d: %w", chunk, err)
	}
	type part struct {
		blob.Info
		attempt, part int
	}
	var numbered []part
	for _, o := range objects {
		if a, ok := AttemptNumber(o.URI); ok {
			lastAttempt = max(lastAttempt, a)
		}
		switch {
		case IsPart(o.URI):
			a, p, _ := PartNumber(o.URI)
			numbered = append(numbered, part{o, a, p})
		case IsDeath(o.URI):
			deaths = append(deaths, o.URI)
		}
	}
	// Numeric order: a lexical listing would put attempt 100 before attempt 99.
	sort.Slice(numbered, func(i, j int) bool {
		if numbered[i].attempt != numbered[j].attempt {
			return numbered[i].attempt < numbered[j].attempt
		}
		return numbered[i].part < numbered[j].part
	})
	for _, p := range numbered {
		parts = append(parts, p.Info)
	}
	return parts, deaths, lastAttempt, nil
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
		if seen, ok := into[a.CustomID]; keeps(seen, ok, a) {
			into[a.CustomID] = a
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read part %s: %w", uri, err)
	}
	return nil
}

// keeps says whether a, read after seen (if ok), is the answer to keep: the first
// one, unless a success follows an error.
func keeps(seen Answer, ok bool, a Answer) bool {
	return !ok || (seen.Error != nil && a.Error == nil)
}

// TextAnswer is an Answer whose text stays the JSON string it was written as:
// Merge copies it into the output line (batchfile.AppendSuccessTextJSON) without
// decoding it into a string and encoding it again, which was most of its CPU.
// Answer.Text is empty; Text is nil where the part has no text.
type TextAnswer struct {
	Answer
	Text json.RawMessage `json:"text,omitempty"`
}

// LoadTextAnswers is LoadAnswers for Merge: the same answers of plan's chunk, with
// their texts as JSON (TextAnswer). The parts are fetched and decoded at once, each
// on its own goroutine, and kept in the order they were written, as LoadChunk keeps
// them. The texts are slices of the parts' bytes: release gives those buffers back
// for other chunks' parts once the texts are no longer read, so that Merge does
// not allocate every part's bytes anew (half of its garbage).
//
// The chunk's first part (attempt 1, part 1: no key sorts before it) is fetched
// first. When it answers every request of the plan without an error, no later
// part can change an answer (keeps), and the folder is not listed: a chunk whose
// answers fit one part, as a fast engine's do, costs one request instead of a
// listing and then a fetch. Otherwise the folder is listed and the other parts
// fetched, the first one being kept.
func LoadTextAnswers(ctx context.Context, store blob.Store, l Layout, plan ChunkPlan) (map[string]TextAnswer, func(), error) {
	var read []partRead // in the order the parts were written
	release := func() {
		for _, r := range read {
			// Zeroed, so that a text read after its release is garbage for every
			// check, never another chunk's answer under this request's custom_id.
			clear(r.buf.Bytes())
			partBuffers.Put(r.buf)
		}
		read = nil
	}
	firstURI := l.Part(plan.Index, 1, 1)
	first, firstErr := readTextPart(ctx, store, blob.Info{URI: firstURI})
	read = append(read, first)
	switch {
	case firstErr == nil && settles(plan, first.answers):
		return keptAnswers(read), release, nil
	case firstErr != nil && !errors.Is(firstErr, blob.ErrNotFound):
		release()
		return nil, nil, firstErr
	}
	parts, _, _, err := listChunk(ctx, store, l, plan.Index)
	if err != nil {
		release()
		return nil, nil, err
	}
	if firstErr == nil && len(parts) > 0 && parts[0].URI == firstURI {
		parts = parts[1:] // read already
	} else {
		read[0].answers = nil
	}
	more := make([]partRead, len(parts))
	var fetching errgroup.Group
	fetching.SetLimit(partsAtOnce)
	for i, p := range parts {
		fetching.Go(func() (err error) {
			more[i], err = readTextPart(ctx, store, p)
			return err
		})
	}
	err = fetching.Wait()
	read = append(read, more...)
	if err != nil {
		release()
		return nil, nil, err
	}
	return keptAnswers(read), release, nil
}

// settles says whether a chunk's first part holds its final answers: one answer
// without an error for each of plan's requests, each on its own line of the
// chunk's range.
func settles(plan ChunkPlan, first []TextAnswer) bool {
	if len(first) != plan.Requests || plan.LastLine < plan.FirstLine {
		return false
	}
	lines := make([]bool, plan.LastLine-plan.FirstLine+1)
	ids := make(map[string]bool, len(first))
	for _, a := range first {
		if a.Error != nil || a.Kind == "" || a.Line < plan.FirstLine || a.Line > plan.LastLine ||
			lines[a.Line-plan.FirstLine] || ids[a.CustomID] {
			return false
		}
		lines[a.Line-plan.FirstLine], ids[a.CustomID] = true, true
	}
	return true
}

// keptAnswers is the answer kept for each custom_id of parts read in the order
// they were written.
func keptAnswers(parts []partRead) map[string]TextAnswer {
	answers := map[string]TextAnswer{}
	for _, part := range parts {
		for _, a := range part.answers {
			if seen, ok := answers[a.CustomID]; keeps(seen.Answer, ok, a.Answer) {
				answers[a.CustomID] = a
			}
		}
	}
	return answers
}

// partsAtOnce bounds the parts of one chunk that LoadTextAnswers reads at once: a
// chunk checkpointed every few answers has hundreds.
const partsAtOnce = 4

// unlistedPartGuess is the buffer a part is first read into when its size is not
// known: a chunk of 256 short answers, which a fast engine writes as one part.
const unlistedPartGuess = 128 << 10

// partRead is a part's answers, whose texts are slices of buf.
type partRead struct {
	answers []TextAnswer
	buf     *bytes.Buffer
}

// partBuffers hold parts' bytes between one chunk's answers and another's.
var partBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readTextPart reads a part whole, into a buffer of partBuffers: the answers'
// texts are slices of it, not copies. The buffer comes back even when the read
// fails, for the caller to give back.
func readTextPart(ctx context.Context, store blob.Store, part blob.Info) (partRead, error) {
	uri := part.URI
	buf := partBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	read := partRead{buf: buf}
	r, err := store.Open(ctx, uri)
	if err != nil {
		return read, fmt.Errorf("open part: %w", err)
	}
	defer r.Close()
	// The size listed, or a guess for the first part, fetched unlisted.
	buf.Grow(cmp.Or(int(part.Size), unlistedPartGuess) + bytes.MinRead)
	if _, err := buf.ReadFrom(r); err != nil {
		return read, fmt.Errorf("read part %s: %w", uri, err)
	}
	data := buf.Bytes()
	read.answers = make([]TextAnswer, 0, bytes.Count(data, []byte{'\n'})+1)
	var rest []byte
	for line := range bytes.Lines(data) {
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		var a TextAnswer
		if a, rest, err = decodeTextAnswer(line, rest); err != nil {
			// A part is written whole or not at all; a bad line is corruption.
			return read, fmt.Errorf("part %s: %w", uri, err)
		}
		read.answers = append(read.answers, a)
	}
	return read, nil
}

// textKey is how encoding/json writes Answer.Text's key, after the fields before
// it (numbers and strings).
var textKey = []byte(`,"text":"`)

// decodeTextAnswer decodes one line of a part. The text, most of its bytes, is
// checked to be a string literal (batchfile.ValidStringEnd) and replaced by "" for encoding/json,
// which then decodes a few small fields instead of scanning the text twice (once
// to check the line, once to decode it). The key's first match is the text's: a
// string cannot hold its unescaped quotes, and the match must come before any
// '{' or '[' but the line's first, so it is a key of the line's object; and no key
// after it may be another name of the text (encoding/json keeps the last). A line
// of another shape is decoded whole. rest is scratch space, returned for the next line.
func decodeTextAnswer(line, rest []byte) (TextAnswer, []byte, error) {
	var a TextAnswer
	if i := bytes.Index(line, textKey); i > 0 && line[0] == '{' && !bytes.ContainsAny(line[1:i], "{[") {
		start := i + len(textKey) - 1
		if end := batchfile.ValidStringEnd(line, start); end > 0 && !mayNameText(line[end:]) {
			rest = append(append(append(rest[:0], line[:start]...), `""`...), line[end:]...)
			if err := json.Unmarshal(rest, &a); err == nil && string(a.Text) == `""` {
				a.Text = line[start:end:end]
				return a, rest, nil
			}
		}
	}
	var whole Answer
	if err := json.Unmarshal(line, &whole); err != nil {
		return TextAnswer{}, rest, err
	}
	a = TextAnswer{Answer: whole}
	if a.Answer.Text != "" {
		a.Answer.Text = ""
		a.Text, _ = json.Marshal(whole.Text) // a string always encodes
	}
	return a, rest, nil
}

// mayNameText says whether b may hold a key that encoding/json matches to "text":
// it matches keys case-insensitively, and a key may be escaped.
func mayNameText(b []byte) bool {
	if bytes.IndexByte(b, '\\') >= 0 {
		return true
	}
	for i := 0; i+4 <= len(b); i++ {
		if b[i]|0x20 == 't' && b[i+1]|0x20 == 'e' && b[i+2]|0x20 == 'x' && b[i+3]|0x20 == 't' {
			return true
		}
	}
	return false
}
