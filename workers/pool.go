package workers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
	"github.com/vbatch/vbatch/internal/metrics"
)

// pool owns a worker's warm engines, one per slot (a GPU, a tensor-parallel group or
// a simulated GPU). It hands each chunk to the least busy live engine, restarts an
// engine whose process dies, and lets a chunk have an engine to itself for a while
// (to find a request that crashes it, see activities/suspects.go). It is the process-wide owner of the expensive resource,
// as a model server is in a pipeline system: activities borrow, never start or stop.
type pool struct {
	start   func(ctx context.Context, slot int) (engine.Engine, error)
	metrics *metrics.Worker
	log     *zap.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a slot frees up or comes back
	slots   []*slot
	jobs    []*job // the chunks' Generate calls with requests left, oldest first
	closed  bool

	unstarted int           // requests of the jobs not handed to an engine yet
	lastJob   int           // requests of the latest job
	hungry    chan struct{} // signalled when they no longer fill the engines (hungryLocked)
}

type slot struct {
	index    int
	gpus     []string
	engine   engine.Engine // nil while (re)starting
	last     engine.Engine // the latest engine, also while a new one starts
	active   int           // chunks holding a lease
	restarts int

	// batch is how many requests the engine runs at once, as its ready event said
	// (0: it does not say); submitted counts the requests handed to the engine
	// without an outcome yet; wake tells the slot's dispatcher that some finished.
	batch     int
	submitted int
	wake      chan struct{}

	// The gate: Generate calls of chunks sharing the engine, or one chunk that has
	// the engine to itself. A waiting exclusive user keeps new shared calls out, so
	// it gets its turn once the running ones end.
	generating       int
	exclusive        bool
	waitingExclusive int
}

// mortal is an engine that can die on its own (a runner process), as opposed to a
// client of a remote server.
type mortal interface {
	Done() <-chan struct{}
	Err() error
}

// newPool starts one engine per slot, all at once, and returns when every engine is
// ready: a worker polls only once its models are loaded.
func newPool(ctx context.Context, gpus [][]string, start func(ctx context.Context, slot int) (engine.Engine, error), m *metrics.Worker, log *zap.Logger) (*pool, error) {
	p := &pool{start: start, metrics: m, log: log, changed: make(chan struct{}), hungry: make(chan struct{}, 1)}
	errs := make([]error, len(gpus))
	var wg sync.WaitGroup
	for i := range gpus {
		s := &slot{index: i, gpus: gpus[i], wake: make(chan struct{}, 1)}
		p.slots = append(p.slots, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := start(ctx, i)
			if err != nil {
				errs[i] = fmt.Errorf("engine %d: %w", i, err)
				return
			}
			s.engine, s.last = e, e
			s.batch = e.Ready().MaxNumSeqs
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.Close()
		return nil, err
	}
	for _, s := range p.slots {
		p.watch(s, s.engine)
		go p.dispatch(s)
	}
	return p, nil
}

// Acquire implements activities.Engines. It picks the live engine with the fewest
// chunks, preferring one that no chunk has to itself.
func (p *pool) Acquire(ctx context.Context) (activities.Lease, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return activities.Lease{}, errors.New("worker is stopping")
		}
		var best *slot
		for _, s := range p.slots {
			if s.engine != nil && (best == nil || s.busierThan(best)) {
				best = s
			}
		}
		if best != nil {
			best.active++
			p.mu.Unlock()
			s := best
			var once sync.Once
			return activities.Lease{
				Slot:    s.index,
				Engine:  &sharedEngine{pool: p, slot: s},
				GPUs:    s.gpus,
				Release: func() { once.Do(func() { p.release(s) }) },
				Exclusive: func(ctx context.Context) (engine.Engine, func(), error) {
					return p.exclusive(ctx, s)
				},
				WorkerStats: p.Stats,
			}, nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return activities.Lease{}, ctx.Err()
		case <-wait:
		}
	}
}

// busierThan orders slots for Acquire: one held alone, or about to be, comes last.
func (s *slot) busierThan(other *slot) bool {
	held := func(s *slot) bool { return s.exclusive || s.waitingExclusive > 0 }
	if held(s) != held(other) {
		return !held(s)
	}
	return s.active < other.active
}

// sharedEngine is a lease's view of its slot's engine: each Generate runs on the
// slot's current engine (a restarted one after a death) and waits while a chunk has
// the engine to itself.
type sharedEngine struct {
	pool *pool
	slot *slot
}

// Generate hands reqs to the pool's dispatchers (dispatch.go): the slot's engine
// runs them, and an engine of the worker that runs out of its own chunks' requests
// takes the ones not yet started.
func (e *sharedEngine) Generate(ctx context.Context, reqs []batchfile.Request, onOutcome func(engine.Outcome)) error {
	return e.pool.feed(ctx, e.slot, reqs, onOutcome)
}

func (e *sharedEngine) Ready() engine.Ready { return e.pool.current(e.slot).Ready() }
func (e *sharedEngine) Stats() engine.Stats { return e.pool.current(e.slot).Stats() }

// Close does nothing: the pool owns the engine; a lease only borrows it.
func (e *sharedEngine) Close() error { return nil }

func (p *pool) current(s *slot) engine.Engine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.last
}

// live says e can take requests: a runner that has exited, but whose death the
// pool has not handled yet, cannot. Waiting for its restart beats failing a chunk
// with requests that never reached it.
func live(e engine.Engine) bool {
	if e == nil {
		return false
	}
	if m, ok := e.(mortal); ok {
		select {
		case <-m.Done():
			return false
		default:
		}
	}
	return true
}

// exclusive waits until no other chunk's Generate runs on s, then keeps them out
// until release.
func (p *pool) exclusive(ctx context.Context, s *slot) (engine.Engine, func(), error) {
	p.mu.Lock()
	s.waitingExclusive++
	for {
		if p.closed {
			s.waitingExclusive--
			p.notifyLocked()
			p.mu.Unlock()
			return nil, nil, errors.New("worker is stopping")
		}
		if live(s.engine) && !s.exclusive && s.generating == 0 {
			s.waitingExclusive--
			s.exclusive = true
			e := s.engine
			p.mu.Unlock()
			var once sync.Once
			return e, func() { once.Do(func() { p.endExclusive(s) }) }, nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			s.waitingExclusive--
			p.notifyLocked()
			p.mu.Unlock()
			return nil, nil, ctx.Err()
		case <-wait:
		}
		p.mu.Lock()
	}
}

// endExclusive ends an exclusive hold on s.
func (p *pool) endExclusive(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.exclusive = false
	p.notifyLocked()
}

func (p *pool) release(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.active--
	p.notifyLocked()
}

func (p *pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// watch restarts s's engine when its process dies. The chunks that were on it see
// engine.ErrEngineDied and are retried by Temporal; new chunks wait for the restart
// or go to the other slots.
func (p *pool) watch(s *slot, e engine.Engine) {
	m, ok := e.(mortal)
	if !ok {
		return
	}
	go func() {
		<-m.Done()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		s.engine = nil
		s.restarts++
		restarts := s.restarts
		p.mu.Unlock()
		p.metrics.EngineRestarted(s.index)
		p.log.Error("engine died; restarting it", zap.Int("slot", s.index), zap.Int("restarts", restarts), zap.Error(m.Err()))
		backoff := time.Second
		for {
			e, err := p.start(context.Background(), s.index)
			if err == nil {
				p.mu.Lock()
				if p.closed {
					p.mu.Unlock()
					_ = e.Close()
					return
				}
				s.engine, s.last = e, e
				s.batch = e.Ready().MaxNumSeqs
				p.notifyLocked()
				p.mu.Unlock()
				p.log.Info("engine restarted", zap.Int("slot", s.index))
				p.watch(s, e)
				return
			}
			p.log.Error("engine restart failed", zap.Int("slot", s.index), zap.Duration("retry_in", backoff), zap.Error(err))
			time.Sleep(backoff)
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
}

// Stats sums the live engines' counters.
func (p *pool) Stats() []engine.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]engine.Stats, len(p.slots))
	for i, s := range p.slots {
		if s.engine != nil {
			out[i] = s.engine.Stats()
		}
	}
	return out
}

// load is what each slot is doing, for the metrics.
func (p *pool) load() []metrics.EngineLoad {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]metrics.EngineLoad, len(p.slots))
	for i, s := range p.slots {
		out[i] = metrics.EngineLoad{Slot: s.index, Chunks: s.active}
		if s.engine != nil {
			out[i].InFlightRequests = s.engine.Stats().InFlight
		}
	}
	return out
}

// Close shuts every engine down.
func (p *pool) Close() {
	p.mu.Lock()
	p.closed = true
	engines := make([]engine.Engine, 0, len(p.slots))
	for _, s := range p.slots {
		if s.engine != nil {
			engines = append(engines, s.engine)
			s.engine = nil
		}
	}
	p.notifyLocked()
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.Close()
		}()
	}
	wg.Wait()
}
