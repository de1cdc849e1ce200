package workers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/engine"
)

// pool owns a worker's warm engines, one per slot (a GPU, a tensor-parallel group or
// a simulated GPU). It hands each chunk to the least busy live engine and restarts an
// engine whose process dies. It is the process-wide owner of the expensive resource,
// as a model server is in a pipeline system: activities borrow, never start or stop.
type pool struct {
	start func(ctx context.Context, slot int) (engine.Engine, error)
	log   *zap.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a slot frees up or comes back
	slots   []*slot
	closed  bool
}

type slot struct {
	index    int
	gpus     []string
	engine   engine.Engine // nil while (re)starting
	active   int
	restarts int
}

// mortal is an engine that can die on its own (a runner process), as opposed to a
// client of a remote server.
type mortal interface {
	Done() <-chan struct{}
	Err() error
}

// newPool starts one engine per slot, all at once, and returns when every engine is
// ready: a worker polls only once its models are loaded.
func newPool(ctx context.Context, gpus [][]string, start func(ctx context.Context, slot int) (engine.Engine, error), log *zap.Logger) (*pool, error) {
	p := &pool{start: start, log: log, changed: make(chan struct{})}
	errs := make([]error, len(gpus))
	var wg sync.WaitGroup
	for i := range gpus {
		s := &slot{index: i, gpus: gpus[i]}
		p.slots = append(p.slots, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := start(ctx, i)
			if err != nil {
				errs[i] = fmt.Errorf("engine %d: %w", i, err)
				return
			}
			s.engine = e
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.Close()
		return nil, err
	}
	for _, s := range p.slots {
		p.watch(s)
	}
	return p, nil
}

// Acquire implements activities.Engines.
func (p *pool) Acquire(ctx context.Context) (activities.Lease, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return activities.Lease{}, errors.New("worker is stopping")
		}
		var best *slot
		for _, s := range p.slots {
			if s.engine != nil && (best == nil || s.active < best.active) {
				best = s
			}
		}
		if best != nil {
			best.active++
			e := best.engine
			p.mu.Unlock()
			var once sync.Once
			return activities.Lease{Slot: best.index, Engine: e, GPUs: best.gpus, Release: func() {
				once.Do(func() { p.release(best) })
			}}, nil
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
func (p *pool) watch(s *slot) {
	m, ok := s.engine.(mortal)
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
				s.engine = e
				p.notifyLocked()
				p.mu.Unlock()
				p.log.Info("engine restarted", zap.Int("slot", s.index))
				p.watch(s)
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
