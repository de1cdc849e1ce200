package gpu

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Sample is one reading of one GPU. A field the GPU does not report (power on some
// boards) is zero.
type Sample struct {
	Time             time.Time `json:"time"`
	Index            int       `json:"index"`
	UUID             string    `json:"uuid"`
	MemoryUsedBytes  uint64    `json:"memory_used_bytes"`
	MemoryTotalBytes uint64    `json:"memory_total_bytes"`
	UtilizationPct   float64   `json:"utilization_pct"`
	PowerWatts       float64   `json:"power_watts"`
	TemperatureC     float64   `json:"temperature_c"`
}

// Summary describes one GPU over a time window, as a chunk result and the report
// carry it. Samples is the number of readings it was computed from; 0 means the
// monitor has none in the window and every other figure but the identity and total
// memory is zero.
type Summary struct {
	Index              int     `json:"index"`
	UUID               string  `json:"uuid"`
	Name               string  `json:"name"`
	Samples            int     `json:"samples"`
	MemoryPeakBytes    uint64  `json:"memory_peak_bytes"`
	MemoryMeanBytes    uint64  `json:"memory_mean_bytes"`
	MemoryTotalBytes   uint64  `json:"memory_total_bytes"`
	UtilizationMeanPct float64 `json:"utilization_mean_pct"`
	UtilizationMaxPct  float64 `json:"utilization_max_pct"`
	PowerMeanWatts     float64 `json:"power_mean_watts"`
	TemperatureMaxC    float64 `json:"temperature_max_c"`
}

// Source reads telemetry; NVML in production, fakes in tests.
type Source interface {
	// Devices are the GPUs that Read reports on.
	Devices() []Device
	// Read reads each device once. It may return readings together with an error
	// (some fields or devices failed); the monitor keeps the readings. A sample with a
	// zero Time is stamped by the monitor.
	Read() ([]Sample, error)
	// Close releases the source; the monitor calls it once when it stops.
	Close() error
}

// emptySource watches no devices: the monitor of a host without GPUs.
type emptySource struct{}

func (emptySource) Devices() []Device       { return nil }
func (emptySource) Read() ([]Sample, error) { return nil, nil }
func (emptySource) Close() error            { return nil }

// Retention. At 1 Hz the last 6 h are kept sample by sample; older samples are folded
// into one-minute means, kept for a week. That bounds a monitor to a few MB per GPU
// however long the worker runs, while a chunk (seconds to minutes) is always
// summarised from full-resolution samples.
const (
	fineWindow     = 6 * time.Hour
	maxFineSamples = 21600 // 6 h at 1 Hz; a faster interval keeps a shorter window
	coarseStep     = time.Minute
	coarseWindow   = 7 * 24 * time.Hour
)

// retention sets how much a monitor keeps; a field so tests can use small rings.
type retention struct {
	fineCap    int           // samples per GPU at full resolution
	coarseStep time.Duration // width of a downsampled point
	coarseCap  int           // downsampled points per GPU
}

func defaultRetention(interval time.Duration) retention {
	fine := int(fineWindow / interval)
	return retention{
		fineCap:    max(1, min(fine, maxFineSamples)),
		coarseStep: coarseStep,
		coarseCap:  int(coarseWindow / coarseStep),
	}
}

// Monitor samples GPUs on its own goroutine and answers questions about windows of
// time. It is safe for concurrent use.
type Monitor struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	tracks []*track // in Source.Devices order
	byUUID map[string]*track
	err    error
}

// NewMonitor starts sampling src every interval (1 s when interval <= 0) until ctx
// ends or Stop is called. The first reading is taken at once.
func NewMonitor(ctx context.Context, src Source, interval time.Duration) *Monitor {
	if interval <= 0 {
		interval = time.Second
	}
	m := newMonitor(src.Devices(), defaultRetention(interval))
	ctx, m.cancel = context.WithCancel(ctx)
	go m.run(ctx, src, interval)
	return m
}

func newMonitor(devs []Device, r retention) *Monitor {
	m := &Monitor{done: make(chan struct{}), byUUID: make(map[string]*track, len(devs))}
	for _, d := range devs {
		t := &track{dev: d, fine: newRing[Sample](r.fineCap), coarse: newRing[aggregate](r.coarseCap), step: r.coarseStep}
		m.tracks = append(m.tracks, t)
		m.byUUID[d.UUID] = t
	}
	return m
}

func (m *Monitor) run(ctx context.Context, src Source, interval time.Duration) {
	defer close(m.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		samples, err := src.Read()
		m.record(time.Now(), samples, err)
		select {
		case <-ctx.Done():
			if err := src.Close(); err != nil {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
			}
			return
		case <-ticker.C:
		}
	}
}

// record stores one round of readings; err, nil or not, becomes what Err reports.
func (m *Monitor) record(now time.Time, samples []Sample, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
	for _, s := range samples {
		t := m.byUUID[s.UUID]
		if t == nil {
			continue
		}
		if s.Time.IsZero() {
			s.Time = now
		}
		t.add(s)
	}
}

// Stop ends sampling, releases the source and waits for both. It may be called more
// than once; data recorded so far stays readable.
func (m *Monitor) Stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
}

// Err is the error of the latest reading (nil when it succeeded), or the error of
// closing the source once stopped. Sampling goes on after errors.
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Summary describes each GPU named in uuids (all monitored GPUs when uuids is empty)
// over [from, to]; a zero from or to leaves that end open. GPUs come in discovery
// order; a UUID the monitor does not watch is skipped. Samples older than the
// full-resolution window count at one-minute resolution: a downsampled minute is in
// the window when its first sample is.
func (m *Monitor) Summary(uuids []string, from, to time.Time) []Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Summary
	for _, t := range m.selected(uuids) {
		var a aggregate
		t.each(from, to, func(b aggregate) { a.merge(b) })
		out = append(out, a.summary(t.dev))
	}
	return out
}

// Series returns the readings of each GPU named in uuids (all when empty) over
// [from, to], GPU by GPU in discovery order and oldest first within a GPU. Readings
// older than the full-resolution window come back as one point per minute: the mean
// of that minute's samples, stamped at its middle.
func (m *Monitor) Series(uuids []string, from, to time.Time) []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Sample
	for _, t := range m.selected(uuids) {
		t.each(from, to, func(b aggregate) { out = append(out, b.mean(t.dev)) })
	}
	return out
}

// Latest returns the newest reading of each GPU, in discovery order; a GPU not read
// yet is left out. It is what a metrics scrape shows.
func (m *Monitor) Latest() []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Sample
	for _, t := range m.tracks {
		if s, ok := t.fine.last(); ok {
			out = append(out, s)
		}
	}
	return out
}

func (m *Monitor) selected(uuids []string) []*track {
	if len(uuids) == 0 {
		return m.tracks
	}
	var ts []*track
	for _, t := range m.tracks {
		if slices.Contains(uuids, t.dev.UUID) {
			ts = append(ts, t)
		}
	}
	return ts
}

// track is the history of one GPU: recent samples in fine, older ones folded into
// per-minute aggregates (open is the minute being filled, coarse the finished ones).
type track struct {
	dev    Device
	step   time.Duration
	fine   *ring[Sample]
	open   aggregate
	coarse *ring[aggregate]
}

func (t *track) add(s Sample) {
	old, evicted := t.fine.push(s)
	if !evicted {
		return
	}
	bucket := old.Time.Truncate(t.step)
	if t.open.n > 0 && !t.open.bucket.Equal(bucket) {
		t.coarse.push(t.open)
		t.open = aggregate{}
	}
	t.open.bucket = bucket
	t.open.add(old)
}

// each calls fn, oldest first, for every downsampled minute and every sample (as an
// aggregate of one) that lies in [from, to].
func (t *track) each(from, to time.Time, fn func(aggregate)) {
	in := func(at time.Time) bool {
		return (from.IsZero() || !at.Before(from)) && (to.IsZero() || !at.After(to))
	}
	t.coarse.each(func(a aggregate) {
		if in(a.first) {
			fn(a)
		}
	})
	if t.open.n > 0 && in(t.open.first) {
		fn(t.open)
	}
	t.fine.each(func(s Sample) {
		if in(s.Time) {
			var a aggregate
			a.add(s)
			fn(a)
		}
	})
}

// aggregate accumulates samples: sums for means, maxima for peaks.
type aggregate struct {
	bucket      time.Time
	first, last time.Time
	n           int
	memSum      float64
	memMax      uint64
	memTotal    uint64
	utilSum     float64
	utilMax     float64
	powerSum    float64
	tempSum     float64
	tempMax     float64
}

func (a *aggregate) add(s Sample) {
	a.merge(aggregate{
		first: s.Time, last: s.Time, n: 1,
		memSum: float64(s.MemoryUsedBytes), memMax: s.MemoryUsedBytes, memTotal: s.MemoryTotalBytes,
		utilSum: s.UtilizationPct, utilMax: s.UtilizationPct,
		powerSum: s.PowerWatts,
		tempSum:  s.TemperatureC, tempMax: s.TemperatureC,
	})
}

func (a *aggregate) merge(b aggregate) {
	if b.n == 0 {
		return
	}
	if a.n == 0 || b.first.Before(a.first) {
		a.first = b.first
	}
	if a.n == 0 || b.last.After(a.last) {
		a.last = b.last
	}
	a.n += b.n
	a.memSum += b.memSum
	a.memMax = max(a.memMax, b.memMax)
	a.memTotal = max(a.memTotal, b.memTotal)
	a.utilSum += b.utilSum
	a.utilMax = max(a.utilMax, b.utilMax)
	a.powerSum += b.powerSum
	a.tempSum += b.tempSum
	a.tempMax = max(a.tempMax, b.tempMax)
}

func (a aggregate) summary(d Device) Summary {
	s := Summary{Index: d.Index, UUID: d.UUID, Name: d.Name, Samples: a.n, MemoryTotalBytes: max(a.memTotal, d.MemoryTotalBytes)}
	if a.n == 0 {
		return s
	}
	n := float64(a.n)
	s.MemoryPeakBytes = a.memMax
	s.MemoryMeanBytes = uint64(math.Round(a.memSum / n))
	s.UtilizationMeanPct = a.utilSum / n
	s.UtilizationMaxPct = a.utilMax
	s.PowerMeanWatts = a.powerSum / n
	s.TemperatureMaxC = a.tempMax
	return s
}

func (a aggregate) mean(d Device) Sample {
	n := float64(a.n)
	return Sample{
		Time:             a.first.Add(a.last.Sub(a.first) / 2),
		Index:            d.Index,
		UUID:             d.UUID,
		MemoryUsedBytes:  uint64(math.Round(a.memSum / n)),
		MemoryTotalBytes: a.memTotal,
		UtilizationPct:   a.utilSum / n,
		PowerWatts:       a.powerSum / n,
		TemperatureC:     a.tempSum / n,
	}
}

// ring is a bounded FIFO that evicts its oldest element when full. It grows to its
// capacity as samples arrive, so a short-lived monitor costs little.
type ring[T any] struct {
	buf      []T
	capacity int
	start    int // index of the oldest element once full
}

func newRing[T any](capacity int) *ring[T] { return &ring[T]{capacity: capacity} }

// push appends v; when the ring was full it returns the element it evicted.
func (r *ring[T]) push(v T) (evicted T, ok bool) {
	if len(r.buf) < r.capacity {
		r.buf = append(r.buf, v)
		return evicted, false
	}
	evicted = r.buf[r.start]
	r.buf[r.start] = v
	r.start = (r.start + 1) % r.capacity
	return evicted, true
}

func (r *ring[T]) each(fn func(T)) {
	for i := range len(r.buf) {
		fn(r.buf[(r.start+i)%len(r.buf)])
	}
}

// last is the newest element, if any.
func (r *ring[T]) last() (v T, ok bool) {
	if len(r.buf) == 0 {
		return v, false
	}
	return r.buf[(r.start+len(r.buf)-1)%len(r.buf)], true
}
