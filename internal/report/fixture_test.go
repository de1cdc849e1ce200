package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
)

// fixtureRun is a small run folder written the way Plan, GenerateChunk and Merge
// write theirs: 12 input lines (2 rejected by Plan) in 3 chunks on 2 engines, one
// engine death and retry, one attempt that left no result, answers that pass and
// fail each quality check.
type fixtureRun struct {
	store  blob.Store
	layout run.Layout
	t0     time.Time
}

// fixtureAnswer is one request of the fixture and what happened to it.
type fixtureAnswer struct {
	id, format          string // format: schema, object, text
	prompt, completion  int
	text, finish        string
	at                  int // created, seconds after t0
	chunk               int
	errCode, errMessage string // an errors.jsonl line instead of an answer
}

func evaluation(rec string) string {
	rating := map[string]string{"rating": "Good", "reasoning": "steady"}
	b, _ := json.Marshal(map[string]any{"recommendation": rec, "reasoning": "because",
		"analysis": map[string]any{"educational_pedigree": rating, "company_pedigree": rating, "trajectory": rating,
			"is_software_engineer": map[string]any{"value": true, "reasoning": "titles"}}})
	return string(b)
}

// fixtureAnswers are the fixture's valid requests in input order. scores replaces
// the recommendation of the valid evaluations by custom_id.
func fixtureAnswers(scores map[string]string) []fixtureAnswer {
	rec := func(id, def string) string {
		if s, ok := scores[id]; ok {
			return s
		}
		return def
	}
	return []fixtureAnswer{
		{id: "cand-1", format: "schema", prompt: 100, completion: 40, text: evaluation(rec("cand-1", "Yes")), finish: "stop", at: 12, chunk: 0},
		{id: "cand-2", format: "schema", prompt: 120, completion: 50, text: evaluation(rec("cand-2", "No")), finish: "stop", at: 13, chunk: 0},
		// Parses, but "Perhaps" is not in the schema's enum.
		{id: "cand-3", format: "schema", prompt: 110, completion: 45, text: evaluation("Perhaps"), finish: "stop", at: 14, chunk: 0},
		// JSON, but not the object json_object asks for.
		{id: "cand-4", format: "object", prompt: 90, completion: 10, text: "[1, 2]", finish: "stop", at: 15, chunk: 0},
		{id: "cand-5", format: "text", prompt: 80, completion: 20, text: "Plain prose, no JSON.", finish: "stop", at: 25, chunk: 1},
		{id: "cand-6", format: "schema", chunk: 1, errCode: batchfile.CodeEngineError, errMessage: "CUDA out of memory. Tried to allocate 2.00 GiB"},
		// Cut at max_tokens: not JSON, fails its schema.
		{id: "cand-7", format: "schema", prompt: 130, completion: 64, text: `{"recommendation": "Ye`, finish: "length", at: 26, chunk: 1},
		{id: "cand-8", format: "schema", prompt: 100, completion: 30, text: evaluation(rec("cand-8", "Maybe")), finish: "stop", at: 33, chunk: 2},
		{id: "cand-9", format: "schema", prompt: 140, completion: 70, text: evaluation(rec("cand-9", "Strong Yes")), finish: "stop", at: 34, chunk: 2},
		{id: "cand-10", format: "schema", prompt: 105, completion: 35, text: evaluation(rec("cand-10", "Yes")), finish: "stop", at: 35, chunk: 2},
	}
}

// Input lines 3 and 9 are rejected by Plan; the rest are fixtureAnswers in order.
var fixtureLines = []int{1, 2, 4, 5, 6, 7, 8, 10, 11, 12}

func writeFixture(t *testing.T, output, runID string, t0 time.Time, scores map[string]string) fixtureRun {
	t.Helper()
	ctx := context.Background()
	store, err := blob.New(ctx, blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := fixtureRun{store: store, layout: run.NewLayout(output, runID), t0: t0}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	schemaFormat, _ := json.Marshal(map[string]any{"type": "json_schema",
		"json_schema": map[string]any{"name": "evaluation", "strict": true, "schema": synth.EvaluationSchema()}})
	maxTokens, temperature := 64, 0.7

	chunks := map[int]*bytes.Buffer{0: {}, 1: {}, 2: {}}
	var out, errs bytes.Buffer
	writeLine := func(buf *bytes.Buffer, l batchfile.OutputLine) {
		b, err := l.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	planError := func(line int, code string) {
		writeLine(&errs, batchfile.Failure(f.layout.LineID(line), "", line, 0, code, "rejected by plan"))
	}
	for i, a := range fixtureAnswers(scores) {
		line := fixtureLines[i]
		if line == 4 {
			planError(3, batchfile.CodeInvalidJSON)
		}
		if line == 10 {
			planError(9, batchfile.CodeMissingCustomID)
		}
		req := batchfile.Request{CustomID: a.id, Line: line, Kind: batchfile.KindChat,
			Messages: json.RawMessage(fmt.Sprintf(`[{"role":"system","content":"rubric"},{"role":"user","content":"Resume of %s"}]`, a.id)),
			Sampling: batchfile.Sampling{MaxTokens: &maxTokens, Temperature: &temperature}}
		switch a.format {
		case "schema":
			req.Sampling.ResponseFormat = schemaFormat
		case "object":
			req.Sampling.ResponseFormat = json.RawMessage(`{"type":"json_object"}`)
		}
		b, _ := json.Marshal(req)
		chunks[a.chunk].Write(append(b, '\n'))
		if a.errCode != "" {
			writeLine(&errs, batchfile.Failure(f.layout.LineID(line), a.id, line, 500, a.errCode, a.errMessage))
			continue
		}
		// Every answer but the first found the rubric in the prefix cache: 60 tokens.
		cached := 60
		if i == 0 {
			cached = 0
		}
		writeLine(&out, batchfile.Success(f.layout.LineID(line), a.id, f.layout.LineID(line), batchfile.Answer{
			Kind: batchfile.KindChat, Model: "m", Created: t0.Unix() + int64(a.at), Text: a.text, FinishReason: a.finish,
			Usage: batchfile.Usage{PromptTokens: a.prompt, CompletionTokens: a.completion, CachedTokens: cached}}))
	}
	put := func(uri string, data []byte) {
		if err := store.Put(ctx, uri, data); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range chunks {
		put(f.layout.Chunk(i), b.Bytes())
	}
	put(f.layout.Output(), out.Bytes())
	put(f.layout.Errors(), errs.Bytes())
	putJSON := func(uri string, v any) {
		if err := blob.WriteJSON(ctx, store, uri, v); err != nil {
			t.Fatal(err)
		}
	}
	putJSON(f.layout.Manifest(), run.Manifest{Input: output + "/requests.jsonl", InputBytes: 4096, Model: "m", ConfigHash: "abc",
		Lines: 12, Valid: 10, Invalid: 2, Chunks: []run.ChunkPlan{
			{Index: 0, Requests: 4, FirstLine: 1, LastLine: 5}, {Index: 1, Requests: 3, FirstLine: 6, LastLine: 8},
			{Index: 2, Requests: 3, FirstLine: 10, LastLine: 12}}})

	ready := engine.Ready{Backend: "vllm", Model: "m", MaxModelLen: 1000, KVCacheGiB: 20, WeightsGiB: 8, GraphsGiB: 1,
		MaxConcurrency: 12.5, LoadSeconds: 26.1, Devices: "GPU-a"}
	ready1 := ready
	ready1.Devices = "GPU-b"
	h100 := func(uuid string, peak uint64) []gpu.Summary {
		return []gpu.Summary{{UUID: uuid, Name: "NVIDIA H100 80GB HBM3", Samples: 6, MemoryTotalBytes: 80 << 30,
			MemoryPeakBytes: peak << 30, UtilizationMeanPct: 90, UtilizationMaxPct: 100, PowerMeanWatts: 600}}
	}
	series := func(from, to float64, peakGiB uint64) []gpu.Sample {
		var ss []gpu.Sample
		for s := from; s <= to; s++ {
			mem := uint64(30) << 30
			if s == to {
				mem = peakGiB << 30
			}
			ss = append(ss, gpu.Sample{Time: at(s), UUID: "GPU-a", MemoryUsedBytes: mem, MemoryTotalBytes: 80 << 30, UtilizationPct: 95})
		}
		return ss
	}
	attempts := []run.AttemptResult{
		{Chunk: 0, Attempt: 1, Worker: "w", EngineSlot: 0, Engine: ready, Started: at(10), Finished: at(16), Requests: 4,
			Answered: 4, Outcome: "completed", GPUs: h100("GPU-a", 60), GPUSeries: series(10, 16, 60),
			EngineBusy: [2]run.BusySample{{Time: at(10), BusySeconds: 0}, {Time: at(16), BusySeconds: 6}}},
		{Chunk: 1, Attempt: 1, Worker: "w", EngineSlot: 1, Engine: ready1, Started: at(10), Finished: at(20), Requests: 3,
			Outcome: "failed", Error: "engine slot 1 died during chunk 1: torch.OutOfMemoryError: CUDA out of memory", GPUs: h100("GPU-b", 79)},
		{Chunk: 1, Attempt: 2, Worker: "w", EngineSlot: 1, Engine: ready1, Started: at(21), Finished: at(27), Requests: 3,
			Answered: 2, Failed: 1, Outcome: "completed", GPUs: h100("GPU-b", 70)},
		{Chunk: 2, Attempt: 2, Worker: "w", EngineSlot: 0, Engine: ready, Started: at(30), Finished: at(36), Requests: 3,
			Answered: 3, Outcome: "completed", GPUs: h100("GPU-a", 65), GPUSeries: series(30, 36, 65),
			EngineBusy: [2]run.BusySample{{Time: at(30), BusySeconds: 6}, {Time: at(36), BusySeconds: 12}}},
	}
	for _, a := range attempts {
		putJSON(f.layout.AttemptResult(a.Chunk, a.Attempt), a)
	}
	putJSON(f.layout.Death(1, 1), run.EngineDeath{Chunk: 1, Attempt: 1, Worker: "w", Slot: 1, InFlight: []string{"cand-5", "cand-6", "cand-7"}})
	return f
}

// measure measures the fixture as the Report activity would.
func (f fixtureRun) measure(t *testing.T, labels map[string]string) Report {
	t.Helper()
	at := func(s float64) time.Time { return f.t0.Add(time.Duration(s * float64(time.Second))) }
	r, err := Measure(context.Background(), f.store, f.layout, Inputs{Status: "completed", Labels: labels,
		Started: f.t0, Generation: at(5), MergeStarted: at(37), Finished: at(40)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
