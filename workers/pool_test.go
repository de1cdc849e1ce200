package workers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/batchfile"
	"github.com/vbatch/vbatch/internal/engine"
)

// gateEngine's Generate blocks until its request is released, and can die like a
// runner process.
type gateEngine struct {
	id      int
	release chan struct{}
	started chan string
	done    chan struct{}
	once    sync.Once
}

func newGateEngine(id int) *gateEngine {
	return &gateEngine{id: id, release: make(chan struct{}, 16), started: make(chan string, 16), done: make(chan struct{})}
}

func (e *gateEngine) Generate(ctx context.Context, reqs []batchfile.Request, on func(engine.Outcome)) error {
	e.started <- reqs[0].CustomID
	select {
	case <-e.release:
		return nil
	case <-e.done:
		return engine.ErrEngineDied
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (e *gateEngine) Ready() engine.Ready {
	return engine.Ready{Backend: "sim", LoadSeconds: float64(e.id)}
}
func (e *gateEngine) Stats() engine.Stats   { return engine.Stats{} }
func (e *gateEngine) Close() error          { e.die(); return nil }
func (e *gateEngine) Done() <-chan struct{} { return e.done }
func (e *gateEngine) Err() error            { return engine.ErrEngineDied }
func (e *gateEngine) die()                  { e.once.Do(func() { close(e.done) }) }
func req(id string) []batchfile.Request     { return []batchfile.Request{{CustomID: id}} }
func expect(t *testing.T, ch chan string, id string) {
	t.Helper()
	select {
	case got := <-ch:
		require.Equal(t, id, got)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not start", id)
	}
}
func expectNothing(t *testing.T, ch chan string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("%s started while it had to wait", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestExclusiveUseWaitsForSharedCallsAndKeepsNewOnesOut(t *testing.T) {
	var engines []*gateEngine
	var mu sync.Mutex
	p, err := newPool(context.Background(), [][]string{nil}, func(context.Context, int) (engine.Engine, error) {
		mu.Lock()
		defer mu.Unlock()
		e := newGateEngine(len(engines))
		engines = append(engines, e)
		return e, nil
	}, nil, zap.NewNop())
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	a, err := p.Acquire(ctx)
	require.NoError(t, err)
	b, err := p.Acquire(ctx)
	require.NoError(t, err)
	e0 := engines[0]

	go func() { _ = a.Engine.Generate(ctx, req("a1"), nil) }()
	expect(t, e0.started, "a1")

	var exclusiveHeld atomic.Bool
	got := make(chan engine.Engine, 1)
	var releaseExclusive func()
	go func() {
		e, release, err := b.Exclusive(ctx)
		if err == nil {
			exclusiveHeld.Store(true)
			releaseExclusive = release
			got <- e
		}
	}()
	time.Sleep(100 * time.Millisecond)
	assert.False(t, exclusiveHeld.Load(), "exclusive use waits for the running shared call")
	go func() { _ = a.Engine.Generate(ctx, req("a2"), nil) }()
	expectNothing(t, e0.started) // a2 waits behind the waiting exclusive user

	e0.release <- struct{}{} // a1 ends
	var ex engine.Engine
	select {
	case ex = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("exclusive use never came")
	}
	go func() { _ = ex.Generate(ctx, req("b-probe"), nil) }()
	expect(t, e0.started, "b-probe")
	expectNothing(t, e0.started)
	e0.release <- struct{}{}
	releaseExclusive()
	expect(t, e0.started, "a2")
	e0.release <- struct{}{}

	// A shared call after the engine died waits for, and runs on, the restarted engine.
	e0.die()
	go func() { _ = a.Engine.Generate(ctx, req("a3"), nil) }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(engines) == 2 }, 5*time.Second, 10*time.Millisecond)
	expectNothing(t, e0.started)
	mu.Lock()
	e1 := engines[1]
	mu.Unlock()
	expect(t, e1.started, "a3")
	assert.Equal(t, float64(1), a.Engine.Ready().LoadSeconds, "the lease sees the restarted engine")
	e1.release <- struct{}{}
	a.Release()
	b.Release()
}

func TestAcquirePrefersASlotNobodyHasAlone(t *testing.T) {
	p, err := newPool(context.Background(), [][]string{nil, nil}, func(_ context.Context, slot int) (engine.Engine, error) {
		return newGateEngine(slot), nil
	}, nil, zap.NewNop())
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	first, err := p.Acquire(ctx)
	require.NoError(t, err)
	_, release, err := first.Exclusive(ctx)
	require.NoError(t, err)
	defer release()
	for range 3 {
		l, err := p.Acquire(ctx)
		require.NoError(t, err)
		assert.NotEqual(t, first.Slot, l.Slot, "new chunks go to the slot that is shared")
	}
}

// batchEngine runs MaxNumSeqs requests at once as an engine says it does; it
// answers what it is given at once, or, while held, when release is closed.
type batchEngine struct {
	batch   int
	held    bool
	release chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	ran     []string
	largest int // the most requests it had at once
	current int
}

func newBatchEngine(batch int, held bool) *batchEngine {
	return &batchEngine{batch: batch, held: held, release: make(chan struct{}), done: make(chan struct{})}
}

func (e *batchEngine) Generate(ctx context.Context, reqs []batchfile.Request, on func(engine.Outcome)) error {
	e.mu.Lock()
	for _, r := range reqs {
		e.ran = append(e.ran, r.CustomID)
	}
	e.current += len(reqs)
	e.largest = max(e.largest, e.current)
	e.mu.Unlock()
	if e.held {
		select {
		case <-e.release:
		case <-e.done:
			return fmt.Errorf("%w: the test killed it", engine.ErrEngineDied)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, r := range reqs {
		e.mu.Lock()
		e.current--
		e.mu.Unlock()
		on(engine.Outcome{Request: r, Result: &engine.Result{Text: "answer to " + r.CustomID}})
	}
	return nil
}
func (e *batchEngine) Ready() engine.Ready   { return engine.Ready{Backend: "sim", MaxNumSeqs: e.batch} }
func (e *batchEngine) Stats() engine.Stats   { return engine.Stats{} }
func (e *batchEngine) Close() error          { return nil }
func (e *batchEngine) Done() <-chan struct{} { return e.done }
func (e *batchEngine) Err() error            { return engine.ErrEngineDied }
func (e *batchEngine) served() (ids []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ran)
}

func requests(n int) []batchfile.Request {
	reqs := make([]batchfile.Request, n)
	for i := range reqs {
		reqs[i] = batchfile.Request{CustomID: fmt.Sprintf("r%02d", i), Line: i + 1}
	}
	return reqs
}

// leaseSlot0 starts a pool of two slots whose engines start returns (also when
// one restarts) and leases slot 0 to a chunk.
func leaseSlot0(t *testing.T, start func(slot int) engine.Engine) activities.Lease {
	t.Helper()
	p, err := newPool(context.Background(), [][]string{nil, nil}, func(_ context.Context, slot int) (engine.Engine, error) {
		return start(slot), nil
	}, nil, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(p.Close)
	lease, err := p.Acquire(context.Background())
	require.NoError(t, err)
	t.Cleanup(lease.Release)
	require.Equal(t, 0, lease.Slot, "the first chunk goes to slot 0")
	return lease
}

func TestAnIdleEngineTakesTheUnstartedRequestsOfAnotherSlotsChunk(t *testing.T) {
	slow, fast := newBatchEngine(2, true), newBatchEngine(2, false)
	lease := leaseSlot0(t, func(slot int) engine.Engine { return []*batchEngine{slow, fast}[slot] })
	ctx := context.Background()

	var mu sync.Mutex
	answered := map[string]int{}
	fed := make(chan error, 1)
	go func() {
		fed <- lease.Engine.Generate(ctx, requests(20), func(o engine.Outcome) {
			mu.Lock()
			answered[o.Request.CustomID]++
			mu.Unlock()
		})
	}()
	// Slot 0's engine holds its batch of 2 and a margin of 2; slot 1, with no chunk
	// of its own, runs the other 16, half of what is left at a time from the back.
	require.Eventually(t, func() bool { return len(fast.served()) == 16 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"r00", "r01", "r02", "r03"}, slow.served())
	assert.Equal(t, []string{"r16", "r17", "r18", "r19"}, fast.served()[:4], "the other engine takes from the back")
	fast.mu.Lock()
	assert.LessOrEqual(t, fast.largest, 4, "no engine is handed more than its batch and margin")
	fast.mu.Unlock()
	close(slow.release)
	select {
	case err := <-fed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the chunk never finished")
	}
	require.Len(t, answered, 20)
	for id, n := range answered {
		assert.Equal(t, 1, n, "%s answered once", id)
	}
}

func TestAnEngineThatDiesWithAnotherSlotsRequestsFailsThatChunk(t *testing.T) {
	held, thief := newBatchEngine(2, true), newBatchEngine(2, true)
	lease := leaseSlot0(t, func(slot int) engine.Engine {
		if slot == 1 && thief.served() != nil {
			return newBatchEngine(2, false) // the restarted engine
		}
		return []*batchEngine{held, thief}[slot]
	})
	ctx := context.Background()

	var outcomes atomic.Int64
	fed := make(chan error, 1)
	go func() {
		fed <- lease.Engine.Generate(ctx, requests(20), func(engine.Outcome) { outcomes.Add(1) })
	}()
	require.Eventually(t, func() bool { return len(thief.served()) == 4 }, 5*time.Second, 5*time.Millisecond)
	close(thief.done)
	select {
	case err := <-fed:
		require.ErrorIs(t, err, engine.ErrEngineDied, "the chunk sees the death of the engine that ran its requests")
	case <-time.After(5 * time.Second):
		t.Fatal("the chunk did not fail")
	}
	assert.Zero(t, outcomes.Load(), "no outcome after a failure")
	assert.Len(t, held.served(), 4, "the rest of the chunk was never handed out")
}

func TestAChunksEngineDeathListsOnlyTheRequestsHandedToEngines(t *testing.T) {
	held, thief := newBatchEngine(2, true), newBatchEngine(2, true)
	lease := leaseSlot0(t, func(slot int) engine.Engine { return []*batchEngine{held, thief}[slot] })

	fed := make(chan error, 1)
	go func() {
		fed <- lease.Engine.Generate(context.Background(), requests(20), func(engine.Outcome) {})
	}()
	require.Eventually(t, func() bool { return len(thief.served()) == 4 }, 5*time.Second, 5*time.Millisecond)
	close(thief.done)
	var err error
	select {
	case err = <-fed:
	case <-time.After(5 * time.Second):
		t.Fatal("the chunk did not fail")
	}
	died, ok := errors.AsType[*activities.EngineDiedError](err)
	require.True(t, ok, "got %v", err)
	assert.Equal(t, 1, died.Slot, "the engine that died is the other slot's, not the chunk's")
	// The dead engine's four, and the four its death cut short on slot 0's engine
	// (a suspect too many costs a pass); not the twelve never handed out.
	want := append(thief.served(), held.served()...)
	assert.ElementsMatch(t, want, died.InFlight)
}
