package workers

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

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
