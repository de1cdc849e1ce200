package workers

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/engine"
)

// slotInfo is what the SDK tells a slot supplier of a permit it marks or releases;
// chunkSlots asks only for the permit.
type slotInfo struct {
	worker.SlotReleaseInfo
	permit *worker.SlotPermit
}

func (i slotInfo) Permit() *worker.SlotPermit { return i.permit }

func (c *chunkSlots) reserveWithin(d time.Duration) *worker.SlotPermit {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	permit, _ := c.ReserveSlot(ctx, nil)
	return permit
}

// slotsOf is a pool of one engine, e, and the slots of a worker whose share is 2
// chunks and most 8.
func slotsOf(t *testing.T, e engine.Engine) (*pool, *chunkSlots) {
	t.Helper()
	p, err := newPool(context.Background(), [][]string{nil}, func(context.Context, int) (engine.Engine, error) {
		return e, nil
	}, nil, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p, newChunkSlots(p, 2, 8)
}

func TestAWorkerTakesMoreChunksOnlyWhileTheirRequestsCannotFillItsEngines(t *testing.T) {
	held := newBatchEngine(4, true) // runs 4 at once; the worker hands it 6 (a margin of 2)
	defer close(held.release)
	p, slots := slotsOf(t, held)
	ctx := context.Background()
	const wait = 300 * time.Millisecond

	// Its share comes at once, also before any chunk arrived.
	first, second := slots.reserveWithin(wait), slots.reserveWithin(wait)
	require.NotNil(t, first)
	require.NotNil(t, second)
	// Both polls got a chunk that is still being read: before the first chunk
	// reached an engine, the worker cannot tell their size and takes no more.
	slots.MarkSlotUsed(slotInfo{permit: first})
	slots.MarkSlotUsed(slotInfo{permit: second})
	assert.Nil(t, slots.reserveWithin(wait), "chunks of unknown size are being read: no third")

	// The first chunk, 20 requests, reaches the engine: 6 in it, 14 waiting. The
	// second, still being read, counts as 20 too: 40 held, more than two batches.
	lease, err := p.Acquire(ctx)
	require.NoError(t, err)
	defer lease.Release()
	go func() { _ = lease.Engine.Generate(ctx, requests(20), func(engine.Outcome) {}) }()
	require.Eventually(t, func() bool { return len(held.served()) == 6 }, 5*time.Second, 5*time.Millisecond)
	assert.Nil(t, slots.reserveWithin(wait), "40 requests held for an engine of batch 4: not hungry")

	// A released slot comes back at once.
	slots.ReleaseSlot(slotInfo{permit: second})
	third := slots.reserveWithin(wait)
	require.NotNil(t, third, "a released slot comes back")
	assert.Nil(t, slots.reserveWithin(wait), "20 requests held are still more than two batches")
	assert.Equal(t, 8, slots.MaxSlots())
}

func TestAWorkerWithSmallChunksTakesUpToFourTimesItsShare(t *testing.T) {
	held := newBatchEngine(8, true)
	defer close(held.release)
	p, slots := slotsOf(t, held)
	ctx := context.Background()

	// Chunks of 1 request, as at the end of a run: 8 of them hold 8 requests, far
	// from two batches of 8, so the worker takes chunks up to 8, four times its share.
	var permits []*worker.SlotPermit
	for i := range 8 {
		permit := slots.reserveWithin(300 * time.Millisecond)
		require.NotNil(t, permit, "chunk %d", i+1)
		slots.MarkSlotUsed(slotInfo{permit: permit})
		permits = append(permits, permit)
		lease, err := p.Acquire(ctx)
		require.NoError(t, err)
		defer lease.Release()
		go func() { _ = lease.Engine.Generate(ctx, requests(1), func(engine.Outcome) {}) }()
		require.Eventually(t, func() bool { return len(held.served()) == i+1 }, 5*time.Second, 5*time.Millisecond)
	}
	assert.Nil(t, slots.reserveWithin(300*time.Millisecond), "never more than 8")
	slots.ReleaseSlot(slotInfo{permit: permits[0]})
	assert.NotNil(t, slots.reserveWithin(300*time.Millisecond))
}

func TestTheGPUWorkersTunerGivesActivitiesTheChunkSlots(t *testing.T) {
	slots := newChunkSlots(&pool{hungry: make(chan struct{}, 1)}, 4, 16)
	tuner, err := gpuTuner(slots)
	require.NoError(t, err)
	assert.Same(t, slots, tuner.GetActivityTaskSlotSupplier().(*chunkSlots))
	for _, s := range []worker.SlotSupplier{tuner.GetWorkflowTaskSlotSupplier(), tuner.GetLocalActivitySlotSupplier(),
		tuner.GetNexusSlotSupplier(), tuner.GetSessionActivitySlotSupplier()} {
		assert.NotNil(t, s)
	}
}
