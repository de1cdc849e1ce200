package report

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/vbatch/vbatch/internal/engine"
)

// document is the report laid out as sections of paragraphs, tables and charts,
// once, so that the Markdown and the HTML say the same thing in the same order.
type document struct {
	Title     string
	Notes     []string
	Summary   string
	Simulated bool
	Sections  []section
}

type section struct {
	ID, Title string
	Blocks    []block
}

// block is one of: a paragraph (Text), a table, a chart, or preformatted text (Code).
type block struct {
	Text  string
	Table *table
	Chart *Chart
	Code  string
}

type table struct {
	Head []string
	Rows [][]string
}

const notRecorded = "not recorded"

// fmtr formats figures; every throughput it writes says "simulated" when the run was.
type fmtr struct{ simulated bool }

func (f fmtr) tps(v float64) string {
	s := fixed(v, 0) + " tokens/s"
	if f.simulated {
		s += " (simulated)"
	}
	return s
}

func (f fmtr) rps(v float64) string {
	s := fixed(v, 2) + " requests/s"
	if f.simulated {
		s += " (simulated)"
	}
	return s
}

// fixed formats x with d decimals and thousands separators.
func fixed(x float64, d int) string {
	s := fmt.Sprintf("%.*f", d, x)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if hasFrac {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out
}

func count[T ~int | ~int64](n T) string { return fixed(float64(n), 0) }

func share(a, b int) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(a)/float64(b))
}

func pct(x float64) string { return fmt.Sprintf("%.1f %%", 100*x) }

// finePct shows small fractions (an engine's idle time) with the digits they need.
func finePct(x float64) string {
	if x > 0 && x < 0.01 {
		return fmt.Sprintf("%.3f %%", 100*x)
	}
	return pct(x)
}

// dur says a number of seconds the way people read it.
func dur(s float64) string {
	switch {
	case s >= 3600:
		return fmt.Sprintf("%s s (%.1f h)", fixed(s, 0), s/3600)
	case s >= 60:
		return fmt.Sprintf("%s s (%.1f min)", fixed(s, 1), s/60)
	}
	return fmt.Sprintf("%.2f s", s)
}

func gibOr(x float64, missing string) string {
	if x <= 0 {
		return missing
	}
	return fmt.Sprintf("%.2f GiB", x)
}

// change is b against a, as a signed percentage.
func change(a, b float64) string {
	if a == 0 {
		return "—"
	}
	return fmt.Sprintf("%+.1f %%", 100*(b-a)/a)
}

func newDocument(r Report, charts []Chart) document {
	f := fmtr{simulated: r.Simulated}
	chart := map[string]*Chart{}
	for i := range charts {
		chart[charts[i].Name] = &charts[i]
	}
	d := document{Title: r.Title, Notes: r.Notes, Simulated: r.Simulated, Summary: summary(r, f)}
	if d.Title == "" {
		d.Title = "vbatch run " + r.RunID
	}
	d.Sections = []section{
		hardwareSection(r),
		engineSection(r),
		memorySection(r),
		configSection(r),
		performanceSection(r, f, chart),
		tokenSection(r),
		contextSection(r),
		concurrencySection(r, chart),
		projectionSection(r, f),
		reliabilitySection(r),
	}
	if r.Cache != nil {
		d.Sections = append(d.Sections, cacheSection(r))
	}
	d.Sections = append(d.Sections,
		qualitySection(r),
		sampleSection(r),
		comparisonSection(r),
		filesSection(r),
	)
	return d
}

func summary(r Report, f fmtr) string {
	c := r.Counts
	s := fmt.Sprintf("Run %s (%s): %s of %s requests answered (%s), %s errors, %d failed chunks. %s, %s, on %d engine(s); inference %s of %s in total.",
		r.RunID, r.Status, count(c.Answered), count(c.Requests), share(c.Answered, c.Requests), count(c.Errors), c.FailedChunks,
		f.tps(r.Tokens.TokensPerSecond), f.rps(r.Tokens.RequestsPerSecond), len(r.Engines), dur(r.Timing.GenerationSeconds), dur(r.Timing.TotalSeconds))
	if q := r.Quality; q != nil && q.Answers > 0 {
		s += fmt.Sprintf(" %s of the answers parse as JSON", share(q.JSON, q.Answers))
		if q.SchemaChecked > 0 {
			s += fmt.Sprintf("; %s of the %s whose request carried a JSON schema validate against it", share(q.SchemaValid, q.SchemaChecked), count(q.SchemaChecked))
		}
		s += "."
	}
	if c := r.Cache; c != nil {
		s += fmt.Sprintf(" The answer cache answered %s of %s looked-up requests (%s hits, %s misses), saving %s of engine time.",
			share(c.Hits, c.Hits+c.Misses), count(c.Hits+c.Misses), count(c.Hits), count(c.Misses), dur(c.SavedEngineSeconds))
	}
	if r.Simulated {
		s += " The engine was SIMULATED: no model ran, and every throughput figure is the simulator's."
	}
	return s
}

func cacheSection(r Report) section {
	c := r.Cache
	s := section{ID: "cache", Title: "Answer cache"}
	saved := c.SavedPromptTokens + c.SavedCompletionTokens
	s.Blocks = append(s.Blocks, block{Table: &table{Head: []string{"Metric", "Value"}, Rows: [][]string{
		{"Cache", c.Prefix},
		{"Hits (answered from the cache)", count(c.Hits)},
		{"Misses (answered by an engine)", count(c.Misses)},
		{"Hit rate", share(c.Hits, c.Hits+c.Misses)},
		{"Engine time saved (the hits' engine seconds when first answered)", dur(c.SavedEngineSeconds)},
		{"Tokens saved (the hits' prompt + completion tokens)", count(saved)},
		{"Tokens generated by engines in this run", count(max(r.Tokens.Total-saved, 0))},
	}}})
	s.Blocks = append(s.Blocks, block{Text: "The throughput figures above count every answer in output.jsonl, the cached ones too. " +
		"A cached answer is the one its first run stored: at temperature > 0 it is that run's sample, not a new one."})
	return s
}

func hardwareSection(r Report) section {
	s := section{ID: "hardware", Title: "Hardware"}
	workers := map[string]int{}
	for _, e := range r.Engines {
		workers[e.Worker]++
	}
	if len(r.GPUs) == 0 {
		why := "no NVML readings were recorded (a host without NVIDIA's driver library, or a run that stored no telemetry)."
		if r.Simulated {
			why = fmt.Sprintf("the SIMULATED engine ran in %d slot(s), one per simulated GPU; no GPU was used.", len(r.Engines))
		}
		s.Blocks = append(s.Blocks, block{Text: "GPUs: " + notRecorded + ": " + why})
	} else {
		t := &table{Head: []string{"Worker", "GPU", "Name (NVML)", "Memory (NVML total)", "UUID"}}
		for _, g := range r.GPUs {
			t.Rows = append(t.Rows, []string{g.Worker, fmt.Sprint(g.Index), g.Name, gibOr(g.MemoryTotalGiB, notRecorded), g.UUID})
		}
		s.Blocks = append(s.Blocks, block{Table: t})
	}
	t := &table{Head: []string{"Worker (host:pid)", "Engines"}}
	for _, w := range slices.Sorted(maps.Keys(workers)) {
		t.Rows = append(t.Rows, []string{w, fmt.Sprint(workers[w])})
	}
	s.Blocks = append(s.Blocks, block{Table: t})
	return s
}

func engineSection(r Report) section {
	s := section{ID: "engine", Title: "Model and engine configuration"}
	if len(r.Engines) == 0 {
		s.Blocks = append(s.Blocks, block{Text: "No engine ran a chunk: " + notRecorded + "."})
		return s
	}
	type group struct {
		ready   engine.Ready
		names   []string
		devices []string
		load    float64
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, e := range r.Engines {
		k := e.Ready
		k.Devices, k.LoadSeconds = "", 0
		key, _ := json.Marshal(k)
		g, ok := byKey[string(key)]
		if !ok {
			g = &group{ready: e.Ready}
			byKey[string(key)] = g
			groups = append(groups, g)
		}
		g.names = append(g.names, e.Name())
		if e.Ready.Devices != "" {
			g.devices = append(g.devices, e.Ready.Devices)
		}
		g.load = max(g.load, e.Ready.LoadSeconds)
	}
	reported := func(v any, ok bool) string {
		if !ok {
			return "not reported"
		}
		return fmt.Sprint(v)
	}
	for _, g := range groups {
		rd := g.ready
		backend := rd.Backend
		if rd.Simulated {
			backend += " (SIMULATED: no model, no GPU)"
		}
		var versions []string
		for _, k := range slices.Sorted(maps.Keys(rd.Versions)) {
			versions = append(versions, k+" "+rd.Versions[k])
		}
		t := &table{Head: []string{"Parameter", "Value"}, Rows: [][]string{
			{"Engines", strings.Join(g.names, ", ")},
			{"Backend", backend},
			{"Model", rd.Model},
			{"Versions", reported(strings.Join(versions, ", "), len(versions) > 0)},
			{"Max model length (context)", reported(count(rd.MaxModelLen)+" tokens", rd.MaxModelLen > 0)},
			{"KV cache", reported(count(rd.KVCacheTokens)+" tokens", rd.KVCacheTokens > 0)},
			{"KV cache memory", gibOr(rd.KVCacheGiB, "not reported")},
			{"Model weights", gibOr(rd.WeightsGiB, "not reported")},
			{"CUDA graphs", gibOr(rd.GraphsGiB, "not reported")},
			{"Max concurrency at max model length", reported(fmt.Sprintf("%.2fx", rd.MaxConcurrency), rd.MaxConcurrency > 0)},
			{"GPU memory utilisation", reported(fmt.Sprintf("%.2f", rd.GPUMemoryUtilize), rd.GPUMemoryUtilize > 0)},
			{"Prefix caching", fmt.Sprint(rd.PrefixCaching)},
			{"Tensor parallel size", reported(rd.TensorParallel, rd.TensorParallel > 0)},
			{"Pinned to (CUDA_VISIBLE_DEVICES)", reported(strings.Join(g.devices, "; "), len(g.devices) > 0)},
			{"Model load (slowest engine)", dur(g.load)},
		}}
		s.Blocks = append(s.Blocks, block{Table: t})
	}
	return s
}

func memorySection(r Report) section {
	s := section{ID: "memory", Title: "Memory breakdown"}
	if len(r.Memory) == 0 {
		why := "the engines reported no memory breakdown and no NVML readings were recorded."
		if r.Simulated {
			why = "the SIMULATED engine uses no GPU memory."
		}
		s.Blocks = append(s.Blocks, block{Text: notRecorded + ": " + why})
		return s
	}
	s.Blocks = append(s.Blocks, block{Text: "What each engine reported allocating (its ready event) against what NVML saw on its GPUs while chunks ran. \"Other\" is the NVML peak less the engine's figures: the framework's allocator cache, activations and the CUDA context."})
	for _, m := range r.Memory {
		of := func(x float64) string {
			if m.TotalGiB <= 0 || x <= 0 {
				return "—"
			}
			return pct(x / m.TotalGiB)
		}
		nvml := func(x float64) string {
			if m.PeakGiB <= 0 {
				return notRecorded
			}
			return gibOr(x, "0 GiB")
		}
		title := "Engine " + m.Engine
		if m.GPUs != "" {
			title += " on " + m.GPUs
		}
		t := &table{Head: []string{"Component", "Memory", "Share of GPU total"}, Rows: [][]string{
			{"Model weights (engine)", gibOr(m.WeightsGiB, "not reported"), of(m.WeightsGiB)},
			{"KV cache (engine)", gibOr(m.KVCacheGiB, "not reported"), of(m.KVCacheGiB)},
			{"CUDA graphs (engine)", gibOr(m.GraphsGiB, "not reported"), of(m.GraphsGiB)},
			{"Other (NVML peak less the above)", nvml(m.OtherGiB), of(m.OtherGiB)},
			{"Total used (NVML peak)", nvml(m.PeakGiB), of(m.PeakGiB)},
			{"Headroom (NVML total less peak)", nvml(m.HeadroomGiB), of(m.HeadroomGiB)},
			{"GPU total (NVML)", gibOr(m.TotalGiB, notRecorded), of(m.TotalGiB)},
		}}
		s.Blocks = append(s.Blocks, block{Text: title + ":"}, block{Table: t})
	}
	return s
}

func configSection(r Report) section {
	s := section{ID: "config", Title: "Run configuration"}
	c := r.Config
	input := r.Input
	if c.InputBytes > 0 {
		input += fmt.Sprintf(" (%s bytes)", count(c.InputBytes))
	}
	labels := "none"
	if len(r.Labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
			kv = append(kv, k+"="+r.Labels[k])
		}
		labels = strings.Join(kv, ", ")
	}
	chunkSize := notRecorded
	if c.ChunkSize > 0 {
		chunkSize = count(c.ChunkSize) + " requests (largest chunk)"
	}
	chunks := c.Chunks
	if chunks == 0 {
		chunks = r.Counts.Chunks
	}
	t := &table{Head: []string{"Parameter", "Value"}, Rows: [][]string{
		{"Input", input},
		{"Model", r.Model},
		{"Requests (input lines)", count(r.Counts.Requests)},
		{"Valid requests", count(r.Counts.Valid)},
		{"Chunks", count(chunks)},
		{"Chunk size", chunkSize},
		{"Engines", fmt.Sprint(len(r.Engines))},
		{"Config hash", or(c.ConfigHash, notRecorded)},
		{"Labels", labels},
	}}
	if len(c.Sampling) == 0 {
		t.Rows = append(t.Rows, []string{"Sampling", notRecorded})
	}
	for _, sc := range c.Sampling {
		var parts []string
		if sc.MaxTokens != nil {
			parts = append(parts, fmt.Sprintf("max_tokens %d", *sc.MaxTokens))
		}
		if sc.Temperature != nil {
			parts = append(parts, fmt.Sprintf("temperature %g", *sc.Temperature))
		}
		if sc.TopP != nil {
			parts = append(parts, fmt.Sprintf("top_p %g", *sc.TopP))
		}
		format := sc.ResponseFormat
		if format == "" {
			format = "text"
		}
		parts = append(parts, "response_format "+format)
		t.Rows = append(t.Rows, []string{"Sampling", fmt.Sprintf("%s: %s requests", strings.Join(parts, ", "), count(sc.Requests))})
	}
	s.Blocks = append(s.Blocks, block{Table: t})
	return s
}

func or(s, missing string) string {
	if s == "" {
		return missing
	}
	return s
}

func performanceSection(r Report, f fmtr, chart map[string]*Chart) section {
	s := section{ID: "performance", Title: "Performance"}
	tm := r.Timing
	t := &table{Head: []string{"Metric", "Value"}, Rows: [][]string{
		{"Model load (slowest engine; once per worker start, not per run)", dur(tm.ModelLoadSeconds)},
		{"Plan (split and validate the input)", dur(tm.PlanSeconds)},
		{"Inference (first chunk scheduled → merge started)", dur(tm.GenerationSeconds)},
		{"Merge and report", dur(tm.FinishSeconds)},
		{"Total (run start → report)", dur(tm.TotalSeconds)},
		{"Throughput (prompt + completion tokens over inference time)", f.tps(r.Tokens.TokensPerSecond)},
		{"Requests per second", f.rps(r.Tokens.RequestsPerSecond)},
		{"Per engine (mean)", f.tps(r.Tokens.PerEngineTokensPerS)},
		{"Engine idle while it still had chunks", finePct(r.EngineIdleFraction)},
		{"Tail (first engine done → last engine done)", tail(tm)},
	}}
	s.Blocks = append(s.Blocks, block{Table: t})
	if len(r.Engines) > 0 {
		gpusOf := map[string]string{}
		for _, m := range r.Memory {
			gpusOf[m.Engine] = m.GPUs
		}
		et := &table{Head: []string{"Engine", "GPU", "Chunks", "Tokens", "Throughput (first chunk start → last chunk end)", "Busy", "Idle while work remained"}}
		for _, e := range r.Engines {
			tokens, rate := notRecorded, notRecorded
			if e.Tokens > 0 {
				tokens, rate = count(e.Tokens), f.tps(e.TokensPerSecond)
			}
			gpuName := or(gpusOf[e.Name()], "—")
			if e.Ready.Simulated {
				gpuName = "simulated"
			}
			et.Rows = append(et.Rows, []string{e.Name(), gpuName, fmt.Sprint(e.Chunks), tokens, rate, dur(e.BusySeconds), finePct(e.IdleFraction)})
		}
		s.Blocks = append(s.Blocks, block{Text: "Per engine (one engine per GPU or tensor-parallel group):"}, block{Table: et})
	}
	if len(r.GPUs) > 0 {
		gt := &table{Head: []string{"GPU", "Peak memory (NVML)", "Mean utilisation", "Max utilisation", "Mean power", "Max temperature", "Samples"}}
		for _, g := range r.GPUs {
			gt.Rows = append(gt.Rows, []string{fmt.Sprintf("%s #%d %s", g.Worker, g.Index, g.Name),
				fmt.Sprintf("%.2f of %.2f GiB", g.MemoryPeakGiB, g.MemoryTotalGiB), fmt.Sprintf("%.1f %%", g.UtilizationMeanPct),
				fmt.Sprintf("%.0f %%", g.UtilizationMaxPct), fmt.Sprintf("%.0f W", g.PowerMeanWatts), fmt.Sprintf("%.0f °C", g.TemperatureMaxC), count(g.Samples)})
		}
		s.Blocks = append(s.Blocks, block{Text: "GPU telemetry (NVML, about once a second while chunks ran):"}, block{Table: gt})
	}
	for _, name := range []string{chartThroughput, chartTimeline, chartGPUMemory, chartGPUUtil} {
		if c := chart[name]; c != nil {
			s.Blocks = append(s.Blocks, block{Chart: c})
		}
	}
	return s
}

func tokenSection(r Report) section {
	s := section{ID: "tokens", Title: "Token statistics"}
	st := r.TokenStats
	dist := func(d func(*TokenStats) Distribution) []string {
		if st == nil {
			return []string{notRecorded, notRecorded, notRecorded}
		}
		x := d(st)
		return []string{count(x.P50), count(x.P95), count(x.Max)}
	}
	t := &table{Head: []string{"Tokens", "Total", "Average per request", "p50", "p95", "Max"}}
	t.Rows = append(t.Rows,
		append([]string{"Prompt", count(r.Tokens.Prompt), fixed(r.Tokens.AvgPrompt, 1)}, dist(func(s *TokenStats) Distribution { return s.Prompt })...),
		append([]string{"Completion", count(r.Tokens.Completion), fixed(r.Tokens.AvgCompletion, 1)}, dist(func(s *TokenStats) Distribution { return s.Completion })...),
		append([]string{"Total", count(r.Tokens.Total), fixed(r.Tokens.AvgPrompt+r.Tokens.AvgCompletion, 1)}, dist(func(s *TokenStats) Distribution { return s.Total })...),
	)
	s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("Over the %s answered requests (output.jsonl usage); percentiles are nearest-rank.", count(r.Counts.Answered))}, block{Table: t})
	s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("Prefix cache: %s of the %s prompt tokens were served from the engines' prefix cache (hit rate %s).",
		count(r.Tokens.Cached), count(r.Tokens.Prompt), finePct(r.Tokens.PrefixCacheHitRate))})
	return s
}

// tail is the engines' finish spread, and its share of the inference time.
func tail(tm Timing) string {
	if tm.GenerationSeconds <= 0 {
		return dur(tm.EngineFinishSpreadSeconds)
	}
	return fmt.Sprintf("%s (%s of inference)", dur(tm.EngineFinishSpreadSeconds), finePct(tm.EngineFinishSpreadSeconds/tm.GenerationSeconds))
}

func contextSection(r Report) section {
	s := section{ID: "context", Title: "Context-window utilisation"}
	c := r.Context
	if c.MaxModelLen == 0 {
		s.Blocks = append(s.Blocks, block{Text: "The engines reported no max_model_len: " + notRecorded + "."})
		return s
	}
	of := func(x float64) string { return pct(x / float64(c.MaxModelLen)) }
	opt := func(n int) []string {
		if n == 0 {
			return []string{notRecorded, "—"}
		}
		return []string{count(n), of(float64(n))}
	}
	t := &table{Head: []string{"Metric", "Tokens", fmt.Sprintf("Share of max_model_len (%s)", count(c.MaxModelLen))}, Rows: [][]string{
		{"Average request (prompt + completion)", fixed(c.AvgTotal, 0), of(c.AvgTotal)},
		{"Average prompt", fixed(c.AvgPrompt, 0), of(c.AvgPrompt)},
		{"Average completion", fixed(c.AvgCompletion, 0), of(c.AvgCompletion)},
		append([]string{"p95 request"}, opt(c.P95Total)...),
		append([]string{"Largest request"}, opt(c.MaxTotal)...),
	}}
	s.Blocks = append(s.Blocks, block{Table: t})
	if q := r.Quality; q != nil {
		s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("%s of %s answers stopped at max_tokens or the context limit (finish_reason \"length\").", count(q.Truncated), count(q.Answers))})
	}
	return s
}

func concurrencySection(r Report, chart map[string]*Chart) section {
	s := section{ID: "concurrency", Title: "Observed concurrency"}
	switch r.Series.InFlightBasis {
	case inFlightFromAnswers:
		s.Blocks = append(s.Blocks, block{Text: "In-flight requests per engine over time, DERIVED (the engines do not report their batch): each chunk attempt's requests count from the attempt's start, less its answers as they finished (each answer's created second), until the attempt ended. These are requests handed to the engine and not yet answered; the engine runs at most its batch (the max concurrency its KV cache allows) of them at once and queues the rest."})
	case inFlightFromChunks:
		s.Blocks = append(s.Blocks, block{Text: "In-flight requests per engine over time, DERIVED from the chunk attempts alone (start, duration and request count: no answer times were recorded): the requests of every chunk attempt running at the time. Requests finish during a chunk, so this is an upper bound."})
	}
	if c := chart[chartInFlight]; c != nil {
		s.Blocks = append(s.Blocks, block{Chart: c})
	}
	if len(r.Series.InFlight) == 0 {
		return s
	}
	ready := map[string]engine.Ready{}
	for _, e := range r.Engines {
		ready[e.Name()] = e.Ready
	}
	t := &table{Head: []string{"Engine", "Peak in flight", "Mean in flight while active", "Engine's max concurrency at max model length"}}
	for _, es := range r.Series.InFlight {
		peak, sum, n := 0, 0, 0
		for _, v := range es.Values {
			peak = max(peak, v)
			if v > 0 {
				sum += v
				n++
			}
		}
		mean := "—"
		if n > 0 {
			mean = fixed(float64(sum)/float64(n), 1)
		}
		mc := "not reported"
		if x := ready[es.Engine].MaxConcurrency; x > 0 {
			mc = fmt.Sprintf("%.2fx", x)
		}
		t.Rows = append(t.Rows, []string{es.Engine, count(peak), mean, mc})
	}
	s.Blocks = append(s.Blocks, block{Table: t})
	return s
}

func projectionSection(r Report, f fmtr) section {
	s := section{ID: "projection", Title: "Scaling projection"}
	p := r.Projection
	if len(p.Rows) == 0 {
		s.Blocks = append(s.Blocks, block{Text: "No throughput was measured: no projection."})
		return s
	}
	s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("A PROJECTION FROM MEASURED THROUGHPUT, not a measurement: %s on %d engine(s), %s tokens per request on average, scaled linearly (engine memory does not grow with the batch: continuous batching keeps a fixed KV cache). Model load, paid once per worker start, is not included.",
		f.tps(p.TokensPerSecond), p.Engines, fixed(p.TokensPerRequest, 0))})
	mem := notRecorded
	if p.MemoryPeakGiB > 0 {
		mem = fmt.Sprintf("≈ %.1f GiB peak per GPU (measured)", p.MemoryPeakGiB)
	} else if r.Simulated {
		mem = "none (simulated)"
	}
	sim := ""
	if r.Simulated {
		sim = " (simulated)"
	}
	t := &table{Head: []string{"Requests", "Estimated tokens", fmt.Sprintf("Estimated time on %d engine(s)%s", p.Engines, sim)}}
	if p.Engines > 1 {
		t.Head = append(t.Head, "Estimated time on 1 engine"+sim)
	}
	t.Head = append(t.Head, "GPU memory")
	for _, row := range p.Rows {
		cells := []string{count(row.Requests), compact(float64(row.Tokens)), dur(row.Seconds)}
		if p.Engines > 1 {
			cells = append(cells, dur(row.OneEngineSeconds))
		}
		t.Rows = append(t.Rows, append(cells, mem))
	}
	s.Blocks = append(s.Blocks, block{Table: t})
	return s
}

// compact writes a large number as 5.5M or 220k.
func compact(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.1fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	}
	return fixed(x, 0)
}

func reliabilitySection(r Report) section {
	s := section{ID: "reliability", Title: "Reliability"}
	rel, c := r.Reliability, r.Counts
	measured := func(n int) string {
		if !rel.Measured {
			return notRecorded
		}
		return count(n)
	}
	attempts := rel.Attempts
	if attempts == 0 {
		attempts = c.Attempts
	}
	t := &table{Head: []string{"Metric", "Value"}, Rows: [][]string{
		{"Success rate (answered / requests)", share(c.Answered, c.Requests)},
		{"Per-line errors (errors.jsonl)", count(c.Errors)},
		{"Failed shards (chunks that failed every attempt)", count(c.FailedChunks)},
		{"Chunk attempts", count(attempts)},
		{"Retries (attempts after a chunk's first)", count(c.Retries)},
		{"Failed attempts", measured(rel.FailedAttempts)},
		{"Timeouts and lost workers (attempts that left no result)", measured(rel.LostAttempts)},
		{"Engine restarts (engine process died under a chunk)", measured(rel.EngineRestarts)},
		{"Out-of-memory errors (attempts and lines)", measured(rel.OOMs)},
	}}
	s.Blocks = append(s.Blocks, block{Table: t})
	codes := c.ErrorsByCode
	if len(codes) > 0 {
		ct := &table{Head: []string{"Error code", "Lines"}}
		for _, code := range slices.Sorted(maps.Keys(codes)) {
			ct.Rows = append(ct.Rows, []string{code, count(codes[code])})
		}
		s.Blocks = append(s.Blocks, block{Text: "Per-line errors by code:"}, block{Table: ct})
	}
	if len(rel.ErrorExamples) > 0 {
		et := &table{Head: []string{"custom_id", "Line", "Code", "Message"}}
		for _, e := range rel.ErrorExamples {
			et.Rows = append(et.Rows, []string{e.CustomID, fmt.Sprint(e.Line), e.Code, e.Message})
		}
		s.Blocks = append(s.Blocks, block{Text: "The first error lines:"}, block{Table: et})
	}
	return s
}

func qualitySection(r Report) section {
	s := section{ID: "quality", Title: "Output quality"}
	q := r.Quality
	if q == nil {
		s.Blocks = append(s.Blocks, block{Text: notRecorded + ": the answers (output.jsonl) were not read for this report."})
		return s
	}
	s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("Every answer was checked (%s of %s), not a sample: parsed as JSON, and validated against its own request's JSON schema where the request carried one (response_format json_schema).", count(q.Answers), count(r.Counts.Answered))})
	t := &table{Head: []string{"Check", "Passed", "Checked", "Share"}, Rows: [][]string{
		{"Parses as JSON", count(q.JSON), count(q.Answers), share(q.JSON, q.Answers)},
		{"Validates against the request's json_schema", count(q.SchemaValid), count(q.SchemaChecked), share(q.SchemaValid, q.SchemaChecked)},
		{"Is a JSON object (json_object requested)", count(q.JSONObjectValid), count(q.JSONObjectChecked), share(q.JSONObjectValid, q.JSONObjectChecked)},
		{"Stopped at a limit (finish_reason length)", count(q.Truncated), count(q.Answers), share(q.Truncated, q.Answers)},
	}}
	s.Blocks = append(s.Blocks, block{Table: t})
	if q.SchemaUnusable > 0 {
		s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("%s answers were not checked: their request's schema does not compile.", count(q.SchemaUnusable))})
	}
	if q.Unmatched > 0 {
		s.Blocks = append(s.Blocks, block{Text: fmt.Sprintf("%s answers could not be matched to their request in the chunk files and were checked as JSON only.", count(q.Unmatched))})
	}
	if len(q.Failures) > 0 {
		ft := &table{Head: []string{"custom_id", "Check", "Why"}}
		for _, f := range q.Failures {
			ft.Rows = append(ft.Rows, []string{f.CustomID, f.Check, f.Reason})
		}
		s.Blocks = append(s.Blocks, block{Text: "The first answers that failed a check:"}, block{Table: ft})
	}
	return s
}

func sampleSection(r Report) section {
	s := section{ID: "sample", Title: "Sample answer"}
	a := r.Sample
	if a == nil {
		s.Blocks = append(s.Blocks, block{Text: notRecorded + "."})
		return s
	}
	s.Blocks = append(s.Blocks,
		block{Text: fmt.Sprintf("The first answer of output.jsonl: %s (finish_reason %s, %d prompt + %d completion tokens). Its request's last message:", a.CustomID, a.FinishReason, a.PromptTokens, a.CompletionTokens)},
		block{Code: a.Prompt},
		block{Text: "The answer:"},
		block{Code: a.Answer})
	return s
}

func comparisonSection(r Report) section {
	s := section{ID: "comparison", Title: "Comparison with the previous run"}
	c := r.Comparison
	if c == nil {
		name := SeriesName(r.Labels)
		why := "the run has no series: give runs the same labels.series (or labels.schedule) to compare each with the one before it."
		if name != "" {
			why = fmt.Sprintf("this is the first run of series %q.", name)
		}
		s.Blocks = append(s.Blocks, block{Text: "No previous run: " + why})
		return s
	}
	s.Blocks = append(s.Blocks, comparisonBlocks(*c)...)
	return s
}

func comparisonBlocks(c Comparison) []block {
	var blocks []block
	intro := fmt.Sprintf("Run %s against %s", c.Current.RunID, or(c.Previous.RunID, "the previous run"))
	if c.Series != "" {
		intro += fmt.Sprintf(", the run before it in series %q", c.Series)
	}
	blocks = append(blocks, block{Text: intro + " (" + c.PreviousReport + ")."})
	p, n := c.Previous, c.Current
	pf, nf := fmtr{simulated: p.Simulated}, fmtr{simulated: n.Simulated}
	shareOr := func(x float64) string {
		if x == 0 {
			return notRecorded
		}
		return pct(x)
	}
	intDiff := func(a, b int) string { return fmt.Sprintf("%+d", b-a) }
	t := &table{Head: []string{"Metric", "Previous (" + p.RunID + ")", "This run (" + n.RunID + ")", "Change"}, Rows: [][]string{
		{"Status", p.Status, n.Status, ""},
		{"Requests", count(p.Requests), count(n.Requests), intDiff(p.Requests, n.Requests)},
		{"Answered", count(p.Answered), count(n.Answered), intDiff(p.Answered, n.Answered)},
		{"Errors", count(p.Errors), count(n.Errors), intDiff(p.Errors, n.Errors)},
		{"Failed shards", count(p.FailedChunks), count(n.FailedChunks), intDiff(p.FailedChunks, n.FailedChunks)},
		{"Retries", count(p.Retries), count(n.Retries), intDiff(p.Retries, n.Retries)},
		{"Throughput", pf.tps(p.TokensPerSecond), nf.tps(n.TokensPerSecond), change(p.TokensPerSecond, n.TokensPerSecond)},
		{"Requests per second", pf.rps(p.RequestsPerSecond), nf.rps(n.RequestsPerSecond), change(p.RequestsPerSecond, n.RequestsPerSecond)},
		{"Inference time", dur(p.GenerationSeconds), dur(n.GenerationSeconds), change(p.GenerationSeconds, n.GenerationSeconds)},
		{"Answers that parse as JSON", shareOr(p.JSONShare), shareOr(n.JSONShare), ""},
		{"Schema-checked answers that validate", shareOr(p.SchemaShare), shareOr(n.SchemaShare), ""},
	}}
	codes := map[string]bool{}
	for code := range p.ErrorsByCode {
		codes[code] = true
	}
	for code := range n.ErrorsByCode {
		codes[code] = true
	}
	for _, code := range slices.Sorted(maps.Keys(codes)) {
		t.Rows = append(t.Rows, []string{"Errors " + code, count(p.ErrorsByCode[code]), count(n.ErrorsByCode[code]), intDiff(p.ErrorsByCode[code], n.ErrorsByCode[code])})
	}
	blocks = append(blocks, block{Table: t})
	if sc := c.Scores; sc != nil {
		blocks = append(blocks, block{Text: fmt.Sprintf("Scores (%q of each answer) of the %s custom_ids scored in both runs: %s changed (%s), %s unchanged; %s scored only in this run, %s only in the previous.",
			sc.Field, count(sc.Compared), count(sc.Changed), share(sc.Changed, sc.Compared), count(sc.Unchanged), count(sc.OnlyCurrent), count(sc.OnlyPrevious))})
		if len(sc.Transitions) > 0 {
			tt := &table{Head: []string{"Previous score", "This run's score", "custom_ids"}}
			for _, tr := range sc.Transitions {
				tt.Rows = append(tt.Rows, []string{tr.From, tr.To, count(tr.Count)})
			}
			if sc.OtherTransitions > 0 {
				tt.Rows = append(tt.Rows, []string{"(other changes)", "", count(sc.OtherTransitions)})
			}
			blocks = append(blocks, block{Table: tt})
		}
		if len(sc.Examples) > 0 {
			et := &table{Head: []string{"custom_id", "Previous score", "This run's score"}}
			for _, e := range sc.Examples {
				et.Rows = append(et.Rows, []string{e.CustomID, e.From, e.To})
			}
			blocks = append(blocks, block{Text: "The first changed scores, in this run's order:"}, block{Table: et})
		}
	}
	for _, note := range c.Notes {
		blocks = append(blocks, block{Text: "Note: " + note + "."})
	}
	return blocks
}

func filesSection(r Report) section {
	s := section{ID: "files", Title: "Files generated"}
	fl := r.Files
	// Line counts come from Measure's pass; an older report.json has sizes only.
	lines := func(n int) string {
		if r.Quality == nil {
			return notRecorded
		}
		return count(n)
	}
	t := &table{Head: []string{"File", "Where", "Size", "Lines"}, Rows: [][]string{
		{"Answers", or(fl.Output, notRecorded), count(fl.OutputBytes) + " bytes", lines(fl.OutputLines)},
		{"Errors", or(fl.Errors, notRecorded), count(fl.ErrorsBytes) + " bytes", lines(fl.ErrorsLines)},
		{"Plan", or(fl.Manifest, notRecorded), "—", "—"},
	}}
	for _, name := range fl.Report {
		t.Rows = append(t.Rows, []string{"Report", name + " (beside this report)", "—", "—"})
	}
	s.Blocks = append(s.Blocks, block{Table: t})
	return s
}
