package activities

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// chat is a chat request with the given leading messages' contents (system
// prompts) and a user message of its own.
func chat(id string, line int, leading ...string) batchfile.Request {
	var msgs []map[string]string
	for _, c := range leading {
		msgs = append(msgs, map[string]string{"role": "system", "content": c})
	}
	msgs = append(msgs, map[string]string{"role": "user", "content": "question " + id})
	b, _ := json.Marshal(msgs)
	return batchfile.Request{CustomID: id, Line: line, Kind: batchfile.KindChat, Messages: b}
}

func TestGroupByPrefixKeepsEachTemplateTogetherInInputOrder(t *testing.T) {
	prompts := []string{"rubric A", "rubric B", "rubric C"}
	var reqs []batchfile.Request
	for i := range 9 {
		reqs = append(reqs, chat(fmt.Sprintf("q%d", i), i+1, prompts[i%3]))
	}
	// A request with two leading messages differs from one with only the first.
	reqs = append(reqs, chat("q9", 10, "rubric A", "few-shot"), chat("q10", 11, "rubric B"))
	got := ids(groupByPrefix(reqs))
	assert.Equal(t, []string{"q0", "q3", "q6", "q1", "q4", "q7", "q10", "q2", "q5", "q8", "q9"}, got,
		"groups in the order of their first request, each in input order")
}

func TestGroupByPrefixLeavesUnsharedPromptsInInputOrder(t *testing.T) {
	var reqs []batchfile.Request
	for i := range 5 {
		reqs = append(reqs, chat(fmt.Sprintf("q%d", i), i+1)) // a user message alone
	}
	assert.Equal(t, []string{"q0", "q1", "q2", "q3", "q4"}, ids(groupByPrefix(reqs)))

	completions := []batchfile.Request{
		{CustomID: "a1", Kind: batchfile.KindCompletion, Prompt: strings.Repeat("A", 300) + " one"},
		{CustomID: "b1", Kind: batchfile.KindCompletion, Prompt: strings.Repeat("B", 300) + " one"},
		{CustomID: "a2", Kind: batchfile.KindCompletion, Prompt: strings.Repeat("A", 300) + " two"},
	}
	assert.Equal(t, []string{"a1", "a2", "b1"}, ids(groupByPrefix(completions)),
		"completion prompts group by their first bytes")
}

func TestGenerateChunkFeedsTheEngineGroupedByPrefixUnlessAskedNotTo(t *testing.T) {
	f := newChunk(t, 6)
	var lines []string
	f.reqs = nil
	for i := range 6 {
		r := chat(fmt.Sprintf("r%02d", i+1), i+1, []string{"rubric A", "rubric B"}[i%2])
		f.reqs = append(f.reqs, r)
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	f.put(t, f.layout.Chunk(f.chunk.Index), strings.Join(lines, "\n")+"\n")

	e := &fakeEngine{}
	g := &GPU{Store: f.store, Engines: e, Model: "m", Worker: "w"}
	res, err := runWithRetries(t, g, f.input(100), 1)
	require.NoError(t, err)
	assert.Equal(t, 6, res.Answered)
	require.Len(t, e.Calls(), 1)
	assert.Equal(t, []string{"r01", "r03", "r05", "r02", "r04", "r06"}, e.Calls()[0])

	// A second chunk folder, fed in input order.
	f2 := newChunk(t, 6)
	f2.put(t, f2.layout.Chunk(f2.chunk.Index), strings.Join(lines, "\n")+"\n")
	e2 := &fakeEngine{}
	in := f2.input(100)
	in.KeepInputOrder = true
	_, err = runWithRetries(t, &GPU{Store: f2.store, Engines: e2, Model: "m", Worker: "w"}, in, 1)
	require.NoError(t, err)
	assert.Equal(t, []string{"r01", "r02", "r03", "r04", "r05", "r06"}, e2.Calls()[0])
	assert.Len(t, f2.state(t).Answers, 6, "every answer checkpointed")
}
