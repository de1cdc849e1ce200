package activities

import (
	"crypto/sha256"
	"encoding/json"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// A batch often interleaves a few prompt templates: several system prompts, or the
// same few-shot examples before each question. vLLM's prefix cache keeps the KV of
// prompt blocks it computed and reuses them for a request that begins with the same
// tokens, but only while they are still cached. Feeding a chunk's requests grouped
// by their prefix keeps each template's blocks hot while its requests run, instead
// of letting the other templates evict them in between.

// completionPrefixBytes is how much of a completion prompt names its template.
const completionPrefixBytes = 256

// prefixKey names what a request's prompt begins with: all its messages but the
// last (the system prompt and any leading turns), or the first bytes of a
// completion prompt. Requests with the same key share that prefix exactly.
func prefixKey(r batchfile.Request) [sha256.Size]byte {
	if r.Kind == batchfile.KindCompletion || len(r.Messages) == 0 {
		return sha256.Sum256([]byte(r.Prompt[:min(len(r.Prompt), completionPrefixBytes)]))
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(r.Messages, &msgs); err != nil || len(msgs) < 2 {
		return [sha256.Size]byte{} // one message, or none: no shared prefix to keep
	}
	h := sha256.New()
	for _, m := range msgs[:len(msgs)-1] {
		h.Write(m)
		h.Write([]byte{0})
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// groupByPrefix orders reqs so that requests with the same prefix key are
// adjacent. Groups come in the order of their first request, and each keeps its
// requests in input order, so the order is stable and a request's neighbours are
// as they were wherever prefixes do not matter.
func groupByPrefix(reqs []batchfile.Request) []batchfile.Request {
	if len(reqs) < 3 {
		return reqs
	}
	index := map[[sha256.Size]byte]int{}
	var groups [][]batchfile.Request
	for _, r := range reqs {
		k := prefixKey(r)
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], r)
	}
	if len(groups) == 1 {
		return reqs
	}
	out := make([]batchfile.Request, 0, len(reqs))
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}
