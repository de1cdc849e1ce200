//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/report"
	"github.com/vbatch/vbatch/internal/synth"
	"github.com/vbatch/vbatch/workflows"
)

// Incremental scoring: the same 500 candidates on two nights with --cache. The
// second night sends not one request to the engine — by the engine's own count,
// the "served N requests" line every runner logs when it exits — and its answers
// are the first night's: every response.body field but the per-run id is byte for
// byte the same.
func TestCacheAnswersAnUnchangedSecondRunWithoutTheEngine(t *testing.T) {
	const model, n = "e2e/cache", 500
	startVbatch(t, "worker", "--role", "control").waitFor(t, "control worker polling", time.Minute)
	var in bytes.Buffer
	if err := synth.WriteCandidates(&in, synth.Options{N: n, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	night := func(name string) (workflows.BatchResult, int) {
		t.Helper()
		gpu := startVbatch(t, "worker", "--role", "gpu", "--engine", "sim", "--model", model, "--gpus", "2",
			"--sim-tokens-per-second", "100000", "--sim-batch-size", "64")
		gpu.waitFor(t, "GPU worker ready", time.Minute)
		input := "s3://" + stack.Bucket + "/cache/" + name + "/requests.jsonl"
		putObject(t, input, in.Bytes())
		out, code := runVbatch(t, 5*time.Minute, nil, "submit", "--input", input, "--model", model,
			"--chunk-size", "50", "--id", "e2e-cache-"+name, "--cache", "--wait", "--json")
		if code != 0 {
			t.Fatalf("submit exited %d:\n%s", code, out)
		}
		var res workflows.BatchResult
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
			t.Fatalf("submit --json printed no result: %v\n%s", err, out)
		}
		// The engines log what they were given when they exit.
		gpu.stop()
		return res, servedRequests(t, gpu.out.String(), 2)
	}

	first, served := night("2026-11-26")
	if first.Status != workflows.StatusCompleted || first.Answered != n {
		t.Fatalf("first night: %+v", first)
	}
	if served != n || first.CacheHits != 0 || first.CacheMisses != n {
		t.Fatalf("first night: the engines served %d requests, the cache hit %d and missed %d; want %d, 0, %d",
			served, first.CacheHits, first.CacheMisses, n, n)
	}
	cached, err := store.List(context.Background(), "s3://"+stack.Bucket+"/vbatch-cache/")
	if err != nil {
		t.Fatal(err)
	}
	if len(cached) == 0 || !strings.HasPrefix(cached[0].URI, "s3://"+stack.Bucket+"/vbatch-cache/e2e-cache/") {
		t.Fatalf("the answers are not in the default cache beside the dated folders: %d objects", len(cached))
	}

	second, served := night("2026-11-27")
	if served != 0 {
		t.Fatalf("second night: the engines served %d requests, want 0", served)
	}
	if second.Status != workflows.StatusCompleted || second.Answered != n || second.CacheHits != n || second.CacheMisses != 0 ||
		second.CacheSavedEngineSeconds <= 0 {
		t.Fatalf("second night: %+v; want %d cache hits, 0 misses, engine time saved", second, n)
	}
	if second.PromptTokens != first.PromptTokens || second.CompletionTokens != first.CompletionTokens {
		t.Errorf("tokens %d+%d, first night %d+%d", second.PromptTokens, second.CompletionTokens, first.PromptTokens, first.CompletionTokens)
	}

	t.Logf("first night: engines served %d requests, %d cache misses; second night: engines served %d, %d hits, %.2f engine seconds saved",
		n, first.CacheMisses, served, second.CacheHits, second.CacheSavedEngineSeconds)

	a, b := outputBodies(t, first.Output), outputBodies(t, second.Output)
	if len(a) != n || len(b) != n {
		t.Fatalf("output lines: %d and %d, want %d", len(a), len(b), n)
	}
	for i := range a {
		if a[i].customID != b[i].customID {
			t.Fatalf("line %d: custom_id %s, first night %s", i+1, b[i].customID, a[i].customID)
		}
		if bytes.Equal(a[i].body["id"], b[i].body["id"]) {
			t.Errorf("line %d: body id %s is the first night's; it names this run's line", i+1, b[i].body["id"])
		}
		for field, raw := range a[i].body {
			if field != "id" && !bytes.Equal(raw, b[i].body[field]) {
				t.Fatalf("line %d (%s): body.%s is\n%s\nthe first night's is\n%s", i+1, a[i].customID, field, b[i].body[field], raw)
			}
		}
		if len(a[i].body) != len(b[i].body) {
			t.Fatalf("line %d: body fields %d, first night %d", i+1, len(b[i].body), len(a[i].body))
		}
	}

	var rep report.Report
	if err := blob.ReadJSON(context.Background(), store, second.Report, &rep); err != nil {
		t.Fatal(err)
	}
	if c := rep.Cache; c == nil || c.Hits != n || c.Misses != 0 || c.SavedEngineSeconds <= 0 ||
		c.SavedPromptTokens != first.PromptTokens || c.Prefix != "s3://"+stack.Bucket+"/vbatch-cache" {
		t.Fatalf("report.json cache: %+v", rep.Cache)
	}
	reportDir := strings.TrimSuffix(second.Report, "report.json")
	for _, name := range []string{"report.md", "report.html"} {
		r, err := store.Open(context.Background(), reportDir+name)
		if err != nil {
			t.Fatal(err)
		}
		var doc bytes.Buffer
		_, _ = doc.ReadFrom(r)
		r.Close()
		for _, want := range []string{"Answer cache", "500 hits, 0 misses", "Hits (answered from the cache)"} {
			if !strings.Contains(doc.String(), want) {
				t.Errorf("%s does not say %q", name, want)
			}
		}
	}
}

var servedLine = regexp.MustCompile(`served (\d+) requests`)

// servedRequests adds up the "served N requests" lines of a stopped GPU worker's
// engines, and checks that each of its engines logged one.
func servedRequests(t *testing.T, log string, engines int) int {
	t.Helper()
	total, lines := 0, 0
	for _, m := range servedLine.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
		lines++
	}
	if lines != engines {
		t.Fatalf("%d engines logged what they served, want %d:\n%s", lines, engines, tail(log, 30))
	}
	return total
}

type outputBody struct {
	customID string
	body     map[string]json.RawMessage
}

// outputBodies reads output.jsonl's response bodies as raw bytes per field.
func outputBodies(t *testing.T, uri string) []outputBody {
	t.Helper()
	r, err := store.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []outputBody
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			CustomID string `json:"custom_id"`
			Response struct {
				Body map[string]json.RawMessage `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("%s line %d: %v", uri, len(out)+1, err)
		}
		out = append(out, outputBody{line.CustomID, line.Response.Body})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
