package report

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// Chart is one chart of the report, an SVG drawn here without any script, so it
// shows the same in report.html, in a repository browser and on its own.
type Chart struct {
	Name  string // file name under charts/
	Title string
	SVG   []byte // nil when the run did not record what the chart shows
	Why   string // why it was not recorded
}

// Recorded says whether the chart has data.
func (c Chart) Recorded() bool { return c.SVG != nil }

// Chart file names.
const (
	chartThroughput = "throughput.svg"
	chartTimeline   = "timeline.svg"
	chartGPUMemory  = "gpu-memory.svg"
	chartGPUUtil    = "gpu-utilization.svg"
	chartInFlight   = "in-flight.svg"
)

// Colours: a line per series from palette; chunk bars by outcome.
var palette = []string{"#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#ca8a04", "#4b5563"}

const (
	colorCompleted = "#60a5fa"
	colorFailed    = "#dc2626"
	colorOther     = "#9ca3af"
	colorRetry     = "#f59e0b"
)

// Charts draws the report's charts, in the order the report shows them.
func Charts(r Report) []Chart {
	sim := ""
	if r.Simulated {
		sim = " (SIMULATED)"
	}
	return []Chart{
		throughputChart(r, sim),
		timelineChart(r, sim),
		gpuChart(r, chartGPUMemory, "GPU memory used (NVML)", "GiB", func(p GPUPoint) float64 { return p.MemoryGiB }, true),
		gpuChart(r, chartGPUUtil, "GPU utilisation (NVML)", "%", func(p GPUPoint) float64 { return p.UtilizationPct }, false),
		inFlightChart(r, sim),
	}
}

func throughputChart(r Report, sim string) Chart {
	c := Chart{Name: chartThroughput, Title: "Tokens per second over time" + sim}
	ys := r.Series.TokensPerSecond
	if len(ys) == 0 {
		c.Why = "no answer times were read for this report (output.jsonl's created seconds)"
		return c
	}
	w := r.Series.BucketSeconds
	xs := make([]float64, len(ys))
	for i := range ys {
		xs[i] = (float64(i) + 0.5) * w
	}
	c.SVG = lineChart(plot{title: c.Title, yLabel: fmt.Sprintf("tokens/s (%gs buckets)", w),
		lines: []plotLine{{name: "all engines", color: palette[0], xs: xs, ys: ys}}})
	return c
}

func inFlightChart(r Report, sim string) Chart {
	c := Chart{Name: chartInFlight, Title: "In-flight requests per engine (derived)" + sim}
	if len(r.Series.InFlight) == 0 || r.Series.BucketSeconds == 0 {
		c.Why = "no chunk attempts were recorded"
		return c
	}
	w := r.Series.BucketSeconds
	var lines []plotLine
	for i, es := range r.Series.InFlight {
		l := plotLine{name: es.Engine, color: palette[i%len(palette)], step: true}
		for b, v := range es.Values {
			l.xs = append(l.xs, float64(b+1)*w)
			l.ys = append(l.ys, float64(v))
		}
		l.xs, l.ys = append([]float64{0}, l.xs...), append([]float64{0}, l.ys...)
		lines = append(lines, l)
	}
	c.SVG = lineChart(plot{title: c.Title, yLabel: "requests", lines: lines})
	return c
}

func gpuChart(r Report, name, title, unit string, value func(GPUPoint) float64, withTotal bool) Chart {
	c := Chart{Name: name, Title: title}
	if len(r.Series.GPUs) == 0 {
		c.Why = "the chunk attempts stored no GPU time series"
		if r.Simulated {
			c.Why = "the SIMULATED engine used no GPU"
		} else if len(r.GPUs) > 0 {
			c.Why += " (only per-chunk summaries, shown in the tables)"
		}
		return c
	}
	names := map[string]string{}
	for _, g := range r.GPUs {
		names[g.UUID] = g.Name
	}
	var lines []plotLine
	var total float64
	for i, t := range r.Series.GPUs {
		l := plotLine{name: strings.TrimSpace(fmt.Sprintf("%s #%d %s", t.Worker, t.Index, shortGPUName(names[t.UUID]))), color: palette[i%len(palette)]}
		for _, p := range t.Points {
			l.xs = append(l.xs, p.T)
			l.ys = append(l.ys, value(p))
		}
		l.gap = readingGap(l.xs)
		lines = append(lines, l)
		total = max(total, t.MemoryTotalGiB)
	}
	p := plot{title: title, yLabel: unit, lines: lines}
	if withTotal && total > 0 {
		xs := []float64{0, 0}
		for _, l := range lines {
			xs[1] = max(xs[1], l.xs[len(l.xs)-1])
		}
		p.lines = append(p.lines, plotLine{name: fmt.Sprintf("total %.1f GiB", total), color: "#6b7280", xs: xs, ys: []float64{total, total}, dashed: true})
	} else if !withTotal {
		p.yMax = 100
	}
	c.SVG = lineChart(p)
	return c
}

// readingGap is how far apart two readings of a GPU may be and still be joined by
// a line: three times the usual interval, so a GPU's idle time between chunks
// (when no attempt stored readings) shows as a gap rather than a slope.
func readingGap(xs []float64) float64 {
	if len(xs) < 3 {
		return 0
	}
	steps := make([]float64, 0, len(xs)-1)
	for i := 1; i < len(xs); i++ {
		steps = append(steps, xs[i]-xs[i-1])
	}
	sort.Float64s(steps)
	return max(3*steps[len(steps)/2], 3)
}

func shortGPUName(s string) string { return strings.TrimPrefix(s, "NVIDIA ") }

// plot is a line chart: x in seconds since the run started.
type plot struct {
	title, yLabel string
	lines         []plotLine
	yMax          float64 // the y axis's top; 0 takes it from the data
}

type plotLine struct {
	name, color string
	xs, ys      []float64
	dashed      bool
	step        bool    // hold each value until the next x
	gap         float64 // a longer step between two xs breaks the line (0: never)
}

// Chart geometry, in SVG user units.
const (
	chartW       = 900
	chartH       = 300
	marginLeft   = 72
	marginRight  = 200
	marginTop    = 40
	marginBottom = 48
)

func lineChart(p plot) []byte {
	var xMax, yMax float64
	for _, l := range p.lines {
		for i := range l.xs {
			xMax = max(xMax, l.xs[i])
			yMax = max(yMax, l.ys[i])
		}
	}
	if p.yMax > 0 {
		yMax = p.yMax
	}
	xAxis := newAxis(xMax)
	yAxis := newAxis(yMax)
	pw, ph := float64(chartW-marginLeft-marginRight), float64(chartH-marginTop-marginBottom)
	px := func(x float64) float64 { return marginLeft + pw*x/xAxis.top }
	py := func(y float64) float64 { return marginTop + ph*(1-y/yAxis.top) }

	var b bytes.Buffer
	svgOpen(&b, chartW, chartH, p.title)
	grid(&b, xAxis, yAxis, px, py, p.yLabel)
	for i, l := range p.lines {
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s stroke-linejoin="round" points="%s"/>`+"\n", l.color, dash, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		for j := range l.xs {
			if j > 0 && l.gap > 0 && l.xs[j]-l.xs[j-1] > l.gap {
				flush() // no readings in between: no line either
			} else if l.step && j > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(l.xs[j]), py(l.ys[j-1])))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(l.xs[j]), py(l.ys[j])))
		}
		flush()
		legend(&b, i, l.color, l.name, l.dashed)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// axis is a linear axis from 0 to top with round ticks.
type axis struct {
	top, step float64
}

func newAxis(maxValue float64) axis {
	if maxValue <= 0 || math.IsNaN(maxValue) || math.IsInf(maxValue, 0) {
		maxValue = 1
	}
	step := niceStep(maxValue / 5)
	return axis{top: math.Ceil(maxValue/step) * step, step: step}
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*100)/100)
}

func svgOpen(b *bytes.Buffer, w, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		w, h, w, h, esc(title))
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="15" font-weight="bold" fill="#111827">%s</text>`+"\n", marginLeft, esc(title))
}

func grid(b *bytes.Buffer, x, y axis, px, py func(float64) float64, yLabel string) {
	for v := 0.0; v <= y.top+y.step/2; v += y.step {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e7eb"/>`, px(0), py(v), px(x.top), py(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#374151">%s</text>`+"\n", px(0)-6, py(v)+4, tickLabel(v))
	}
	xUnit, div := "s", 1.0
	if x.top > 1200 {
		xUnit, div = "min", 60
	}
	for v := 0.0; v <= x.top+x.step/2; v += x.step {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e7eb"/>`, px(v), py(0), px(v), py(y.top))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#374151">%s</text>`+"\n", px(v), py(0)+16, tickLabel(v/div))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#374151"/>`, px(0), py(0), px(x.top), py(0))
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#374151"/>`+"\n", px(0), py(0), px(0), py(y.top))
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#374151">%s since the run started</text>`+"\n", px(x.top/2), chartH-8, xUnit)
	fmt.Fprintf(b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle" fill="#374151">%s</text>`+"\n", py(y.top/2), esc(yLabel))
}

func legend(b *bytes.Buffer, i int, color, name string, dashed bool) {
	x, y := float64(chartW-marginRight+16), float64(marginTop+8+i*20)
	dash := ""
	if dashed {
		dash = ` stroke-dasharray="6 4"`
	}
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"%s/>`, x, y, x+22, y, color, dash)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#111827">%s</text>`+"\n", x+28, y+4, esc(clip(name, 24)))
}

// timelineChart draws each chunk attempt as a bar in its engine's row, in sub-rows
// where attempts overlapped, coloured by outcome, retries outlined.
func timelineChart(r Report, sim string) Chart {
	c := Chart{Name: chartTimeline, Title: "Chunks per engine over time" + sim}
	if len(r.Chunks) == 0 {
		c.Why = "no chunk attempts were recorded"
		return c
	}
	type lane struct {
		name string
		rows [][]ChunkSummary
		ends []float64
	}
	lanes := map[string]*lane{}
	var order []string
	chunks := append([]ChunkSummary(nil), r.Chunks...)
	sort.SliceStable(chunks, func(i, j int) bool { return chunks[i].StartS < chunks[j].StartS })
	var xMax float64
	gpus := map[string]string{}
	for _, m := range r.Memory {
		gpus[m.Engine] = shortGPUName(m.GPUs)
	}
	for _, ch := range chunks {
		name := engineName(ch.Worker, ch.Slot)
		l, ok := lanes[name]
		if !ok {
			l = &lane{name: name}
			lanes[name] = l
			order = append(order, name)
		}
		row := -1
		for i, end := range l.ends {
			if end <= ch.StartS {
				row = i
				break
			}
		}
		if row < 0 {
			l.rows, l.ends, row = append(l.rows, nil), append(l.ends, 0), len(l.rows)
		}
		l.rows[row] = append(l.rows[row], ch)
		l.ends[row] = ch.StartS + ch.Seconds
		xMax = max(xMax, ch.StartS+ch.Seconds)
	}
	sort.Strings(order)
	const rowH, laneGap, left = 16, 10, 190
	height := marginTop + marginBottom + 24
	for _, name := range order {
		height += len(lanes[name].rows)*rowH + laneGap
	}
	xAxis := newAxis(xMax)
	pw := float64(chartW - left - 24)
	px := func(x float64) float64 { return left + pw*x/xAxis.top }

	var b bytes.Buffer
	svgOpen(&b, chartW, height, c.Title)
	y := float64(marginTop + 8)
	top := y
	for _, name := range order {
		l := lanes[name]
		label := name
		if g := gpus[name]; g != "" {
			label += " · " + g
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#111827">%s</text>`+"\n", left-8, y+float64(len(l.rows)*rowH)/2+4, esc(clip(label, 28)))
		for i, row := range l.rows {
			for _, ch := range row {
				fill := colorOther
				switch ch.Outcome {
				case "completed":
					fill = colorCompleted
				case "failed":
					fill = colorFailed
				}
				stroke := `stroke="#ffffff" stroke-width="1"`
				if ch.Attempt > 1 {
					stroke = `stroke="` + colorRetry + `" stroke-width="2.5"`
				}
				x0, x1 := px(ch.StartS), px(ch.StartS+ch.Seconds)
				w := max(x1-x0, 1.5)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s" %s><title>chunk %d, attempt %d on %s: %s, %d requests, %.1f s from %.1f s</title></rect>`+"\n",
					x0, y+float64(i*rowH)+1, w, rowH-2, fill, stroke, ch.Chunk, ch.Attempt, esc(name), esc(ch.Outcome), ch.Requests, ch.Seconds, ch.StartS)
				if w > 34 {
					fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#0f172a">%d</text>`+"\n", x0+3, y+float64(i*rowH)+rowH-4, ch.Chunk)
				}
			}
		}
		y += float64(len(l.rows)*rowH + laneGap)
	}
	// x axis under the lanes.
	for v := 0.0; v <= xAxis.top+xAxis.step/2; v += xAxis.step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e7eb"/>`, px(v), top-4, px(v), y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#374151">%s</text>`+"\n", px(v), y+14, tickLabel(v))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#374151">s since the run started</text>`+"\n", px(xAxis.top/2), y+30)
	lx := float64(left)
	for _, item := range []struct{ fill, stroke, name string }{
		{colorCompleted, "#ffffff", "completed"}, {colorFailed, "#ffffff", "failed"},
		{colorOther, "#ffffff", "cancelled or stopped"}, {"#ffffff", colorRetry, "retry (attempt > 1)"},
	} {
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="14" height="10" fill="%s" stroke="%s" stroke-width="2"/><text x="%.0f" y="%.1f" fill="#111827">%s</text>`+"\n",
			lx, y+40, item.fill, item.stroke, lx+18, y+49, item.name)
		lx += 160
	}
	b.WriteString("</svg>\n")
	c.SVG = b.Bytes()
	return c
}

func esc(s string) string { return html.EscapeString(s) }

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
