package workers

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
)

// Engines run requests, not chunks. A chunk's Generate call becomes a job whose
// requests wait in the worker until an engine has room for them; each slot's
// dispatcher keeps its engine's queue just deeper than the batch the engine runs at
// once (Ready.MaxNumSeqs), and refills it as requests finish:
//
//   - first from the chunks leased to the slot, oldest first and in the order the
//     chunk gave (its prefix groups stay together on one engine);
//   - when those have nothing left, half of what is left at the back of the job
//     with the most requests left on another slot: an engine that runs dry near the
//     end of a run takes the unstarted part of a busier engine's chunk, so every
//     engine of the worker finishes within about one request of the others instead
//     of one chunk.
//
// Answers still go to the chunk that owns the request, which checkpoints and
// heartbeats them as before: exactly-once is the chunk's business, not the
// engine's. An engine that does not say its batch size (MaxNumSeqs 0: a remote
// server) is handed each chunk's requests at once, as before, and takes nothing from
// others.

// job is one chunk's Generate call.
type job struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	owner     *slot
	pending   []batchfile.Request // not handed to an engine yet
	onOutcome func(engine.Outcome)
	outcomes  sync.Mutex // onOutcome is called from one goroutine at a time
	wake      chan struct{}

	outstanding int   // handed to an engine, no outcome yet
	err         error // the first failure; the job takes no more requests after it
	// death is the first engine death among the job's failed calls, on slot diedOn;
	// stranded are the requests those calls had handed to an engine and not
	// answered: the ones that can have killed it.
	death    error
	diedOn   int
	stranded []string
}

// queueMargin is how many requests a slot's engine holds beyond the batch it runs,
// so that a finished request's place is taken at once, not a dispatch later.
func queueMargin(batch int) int { return max(2, batch/16) }

// feed runs reqs as the job of a chunk leased to owner, and returns once every
// request has had its outcome, or after the first failure once no request of the
// job is left in an engine: onOutcome is never called after feed returns.
func (p *pool) feed(ctx context.Context, owner *slot, reqs []batchfile.Request, onOutcome func(engine.Outcome)) error {
	if len(reqs) == 0 {
		return nil
	}
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	j := &job{ctx: jobCtx, cancel: cancel, owner: owner, pending: slices.Clone(reqs), onOutcome: onOutcome,
		wake: make(chan struct{}, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.jobs = append(p.jobs, j)
	p.unstarted += len(j.pending)
	p.lastJob = len(j.pending)
	p.notifyLocked()
	for {
		if p.closed {
			p.failLocked(j, errors.New("worker is stopping"))
		}
		if j.outstanding == 0 && (len(j.pending) == 0 || j.err != nil) {
			p.jobs = slices.DeleteFunc(p.jobs, func(other *job) bool { return other == j })
			if j.death != nil {
				return &activities.EngineDiedError{Slot: j.diedOn, InFlight: j.stranded, Err: j.death}
			}
			return j.err
		}
		done := ctx.Done()
		if j.err != nil {
			done = nil // failed already: wait only for its requests to leave the engines
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-j.wake:
		case <-changed:
		case <-done:
		}
		p.mu.Lock()
		if err := ctx.Err(); err != nil {
			p.failLocked(j, err)
		}
	}
}

// failLocked records j's first failure, drops what it had not handed out and
// aborts what it had.
func (p *pool) failLocked(j *job, err error) {
	if j.err == nil {
		j.err = err
		j.cancel(err)
	}
	p.unstarted -= len(j.pending)
	j.pending = nil
}

// dispatch keeps s's engine fed from the pool's jobs until the pool closes.
func (p *pool) dispatch(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed {
		if j, batch := p.nextBatchLocked(s); j != nil {
			s.generating++
			s.submitted += len(batch)
			j.outstanding += len(batch)
			p.unstarted -= len(batch)
			go p.generate(s, s.engine, j, batch)
			continue
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-s.wake:
		case <-changed:
		}
		p.mu.Lock()
	}
}

// nextBatchLocked takes the requests s's engine should get next, and their job;
// nil when the engine is full, held alone, restarting, or nothing waits.
func (p *pool) nextBatchLocked(s *slot) (*job, []batchfile.Request) {
	if !live(s.engine) || s.exclusive || s.waitingExclusive > 0 {
		return nil, nil
	}
	batch := s.batch
	room := batch + queueMargin(batch) - s.submitted
	if batch > 0 && room <= 0 {
		return nil, nil
	}
	var theirs *job
	for _, j := range p.jobs {
		switch {
		case len(j.pending) == 0:
		case j.owner == s:
			n := len(j.pending)
			if batch > 0 {
				n = min(n, room)
			}
			reqs := j.pending[:n:n]
			j.pending = j.pending[n:]
			return j, reqs
		case batch > 0 && (theirs == nil || len(j.pending) > len(theirs.pending)):
			theirs = j
		}
	}
	if theirs == nil {
		return nil, nil
	}
	// Half of what the other chunk has left, as work-stealing schedulers take: the
	// owner's engine, about to have room again, shares the rest.
	n := min((len(theirs.pending)+1)/2, room)
	reqs := theirs.pending[len(theirs.pending)-n:]
	theirs.pending = theirs.pending[: len(theirs.pending)-n : len(theirs.pending)-n]
	return theirs, reqs
}

// generate runs one batch of j's requests on s's engine e.
func (p *pool) generate(s *slot, e engine.Engine, j *job, batch []batchfile.Request) {
	delivered := 0
	answered := make(map[string]bool, len(batch))
	err := e.Generate(j.ctx, batch, func(o engine.Outcome) {
		j.outcomes.Lock()
		j.onOutcome(o)
		answered[o.Request.CustomID] = true
		j.outcomes.Unlock()
		delivered++
		p.mu.Lock()
		p.finishedLocked(s, j, 1)
		p.mu.Unlock()
	})
	var stranded []string
	if err != nil {
		j.outcomes.Lock()
		for _, r := range batch {
			if !answered[r.CustomID] {
				stranded = append(stranded, r.CustomID)
			}
		}
		j.outcomes.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.generating--
	if err != nil {
		// Every failed call's unanswered requests count, not only the dying
		// engine's: a call the death's cancellation ended may have lost the race to
		// report it, and a suspect too many costs a pass, one too few a culprit.
		j.stranded = append(j.stranded, stranded...)
		if j.death == nil && errors.Is(err, engine.ErrEngineDied) {
			j.death, j.diedOn = err, s.index
		}
		p.failLocked(j, err)
	}
	p.finishedLocked(s, j, len(batch)-delivered) // a failed call leaves requests unanswered
	if s.generating == 0 {
		p.notifyLocked() // an exclusive user may be waiting for this
	}
}

// finishedLocked counts n of j's requests out of s's engine and wakes whoever
// waits for that.
func (p *pool) finishedLocked(s *slot, j *job, n int) {
	if n == 0 {
		return
	}
	s.submitted -= n
	j.outstanding -= n
	signal(s.wake)
	signal(j.wake)
	if p.hungryLocked(0) {
		signal(p.hungry)
	}
}

// signal wakes the one waiter on a channel of capacity 1 without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// hungryLocked says the requests the worker holds, in its engines or waiting for
// them, are fewer than two batches of every engine: the worker should take another
// chunk than its usual share (chunkSlots), as it does near the end of a run, where
// chunks are small. Counting requests, not chunks, keeps a worker whose engines
// outrun it (its share of full chunks already holds many batches) from taking
// more chunks into memory. running is how many chunk activities the worker runs;
// those not feeding engines yet (reading their chunk) count as big as the latest
// chunk fed, or a worker slower than its engines would take chunk after chunk
// while the ones it has are still being read (before the first chunk, they count
// as too many). False where an engine does not say its batch.
func (p *pool) hungryLocked(running int) bool {
	arriving := max(running-len(p.jobs), 0)
	if arriving > 0 && p.lastJob == 0 {
		return false
	}
	batch, held := 0, p.unstarted+arriving*p.lastJob
	for _, s := range p.slots {
		held += s.submitted
		if s.engine == nil {
			continue
		}
		if s.batch <= 0 {
			return false
		}
		batch += s.batch
	}
	return batch > 0 && held < 2*batch
}

// isHungry is hungryLocked for callers without the lock.
func (p *pool) isHungry(running int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hungryLocked(running)
}
