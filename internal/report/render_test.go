package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

var sectionTitles = []string{"Hardware", "Model and engine configuration", "Memory breakdown", "Run configuration",
	"Performance", "Token statistics", "Context-window utilisation", "Observed concurrency", "Scaling projection",
	"Reliability", "Output quality", "Sample answer", "Comparison with the previous run", "Files generated"}

func TestMarkdownAndHTMLShowEverySectionAndLinkOrInlineTheCharts(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "night-1", t0, nil).measure(t, nil)
	md, err := Markdown(r)
	if err != nil {
		t.Fatal(err)
	}
	page, err := HTML(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, title := range sectionTitles {
		if !bytes.Contains(md, []byte("\n## "+title+"\n")) {
			t.Errorf("report.md has no section %q", title)
		}
		if !bytes.Contains(page, []byte("<h2>"+title+"</h2>")) {
			t.Errorf("report.html has no section %q", title)
		}
	}
	for _, c := range Charts(r) {
		if !c.Recorded() {
			t.Errorf("chart %s not recorded (%s); the fixture has data for every chart", c.Name, c.Why)
			continue
		}
		if !bytes.Contains(md, []byte("](charts/"+c.Name+")")) {
			t.Errorf("report.md does not link charts/%s", c.Name)
		}
		assertXML(t, c.Name, c.SVG)
	}
	if n := bytes.Count(page, []byte("<svg ")); n != 5 {
		t.Errorf("report.html inlines %d charts, want 5", n)
	}
	// Self-contained: nothing that a browser would fetch.
	if m := regexp.MustCompile(`(?i)<script|<link|<img|src=|url\(|@import|href="(https?:)?//`).Find(page); m != nil {
		t.Errorf("report.html refers to something outside itself: %q", m)
	}
	for _, want := range []string{"1,339", "975", "364", "5 | 7 | 71.4 %", "invalid_json | 1", "cand-1", "Strong Yes"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md does not show %q", want)
		}
	}
}

func TestASimulatedReportSaysSoOnEveryThroughput(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	r := writeFixture(t, "file://"+t.TempDir(), "sim-1", t0, nil).measure(t, nil)
	r = markSimulated(r)
	md, err := Markdown(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "# vbatch run sim-1 (SIMULATED engine") {
		t.Errorf("title of a simulated run: %q", strings.SplitN(string(md), "\n", 2)[0])
	}
	for _, unit := range []string{"tokens/s", "requests/s"} {
		all := strings.Count(string(md), unit)
		sim := strings.Count(string(md), unit+" (simulated)")
		if all == 0 || all != sim {
			t.Errorf("%d of %d %s figures say simulated", sim, all, unit)
		}
	}
	if !strings.Contains(string(md), "Estimated time on 2 engine(s) (simulated)") {
		t.Error("the projection of a simulated run must say simulated")
	}
	for _, c := range Charts(r) {
		if c.Recorded() && (c.Name == chartThroughput || c.Name == chartTimeline) && !strings.Contains(c.Title, "SIMULATED") {
			t.Errorf("chart %s of a simulated run: title %q", c.Name, c.Title)
		}
	}
}

// markSimulated turns the fixture into a sim run's report, as Build would have.
func markSimulated(r Report) Report {
	r.Simulated = true
	r.Title = "vbatch run " + r.RunID + " (SIMULATED engine: no real inference; throughput figures are simulated)"
	for i := range r.Engines {
		r.Engines[i].Ready.Simulated = true
	}
	return r
}

// An older report.json (the H100 smoke run's) renders: what it holds is shown,
// what it never recorded says so.
func TestAnOlderReportRendersWithWhatItRecorded(t *testing.T) {
	data, err := os.ReadFile("../../docs/reports/h100-smoke-2026-11-27/report-run2.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	Derive(&r)
	md, err := Markdown(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| Total used (NVML peak) | 79.17 GiB |", // memory breakdown against NVML
		"| Other (NVML peak less the above) | 25.72 GiB |",
		"| 200,000 | 170.8M |",                      // the projection
		"Tokens per second over time: not recorded", // no answer times in a report.json alone
		"GPU memory used (NVML): not recorded",
		"![Chunks per engine over time](charts/timeline.svg)",
		"DERIVED from the chunk attempts alone",
		"| Timeouts and lost workers (attempts that left no result) | not recorded |",
		"## Output quality\n\nnot recorded",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md of the H100 run lacks %q", want)
		}
	}
	if strings.Contains(string(md), "(simulated)") {
		t.Error("a real GPU run's report must not say simulated")
	}
}

func assertXML(t *testing.T, name string, data []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Errorf("%s is not well-formed XML: %v", name, err)
			return
		}
	}
}
