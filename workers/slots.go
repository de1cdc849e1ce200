package workers

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/worker"
)

// chunkSlots is the GPU worker's activity slot supplier: how many chunks it takes
// from Temporal at once. A fixed number of chunks per engine keeps the engines fed
// while chunks are large, but near the end of a run Plan cuts them small (a
// sixteenth of a full chunk), and two of those leave an engine's batch mostly empty.
// So the worker takes its usual share, engines × chunks per engine, whenever it
// has room, and more, up to most, while the requests it holds are fewer than two
// batches of its engines (pool.hungryLocked): a worker takes work by the requests
// its engines can run, not by a count of chunks.
type chunkSlots struct {
	pool *pool
	base int // always granted
	most int // granted while the engines are hungry

	mu      sync.Mutex
	used    int           // permits out, polling or running a chunk
	running int           // permits running a chunk
	changed chan struct{} // closed and replaced when a slot is released
}

// hungerCheckEvery bounds how long a poller waits to see that the engines became
// hungry when no signal reached it (the signal wakes one waiter).
const hungerCheckEvery = 100 * time.Millisecond

func newChunkSlots(p *pool, base, most int) *chunkSlots {
	return &chunkSlots{pool: p, base: base, most: max(most, base), changed: make(chan struct{})}
}

// ReserveSlot implements worker.SlotSupplier; the SDK calls it before each poll.
func (c *chunkSlots) ReserveSlot(ctx context.Context, _ worker.SlotReservationInfo) (*worker.SlotPermit, error) {
	tick := time.NewTicker(hungerCheckEvery)
	defer tick.Stop()
	for {
		if permit := c.TryReserveSlot(nil); permit != nil {
			return permit, nil
		}
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-c.pool.hungry:
		case <-tick.C:
		}
	}
}

// TryReserveSlot implements worker.SlotSupplier.
func (c *chunkSlots) TryReserveSlot(worker.SlotReservationInfo) *worker.SlotPermit {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used < c.base || (c.used < c.most && c.pool.isHungry(c.running)) {
		c.used++
		return &worker.SlotPermit{UserData: new(bool)}
	}
	return nil
}

// MarkSlotUsed implements worker.SlotSupplier: the permit's poll got a chunk.
func (c *chunkSlots) MarkSlotUsed(info worker.SlotMarkUsedInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ran := ranChunk(info); ran != nil && !*ran {
		*ran = true
		c.running++
	}
}

// ReleaseSlot implements worker.SlotSupplier.
func (c *chunkSlots) ReleaseSlot(info worker.SlotReleaseInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ran := ranChunk(info); ran != nil && *ran {
		c.running--
	}
	c.used--
	close(c.changed)
	c.changed = make(chan struct{})
}

// ranChunk is the flag a permit of chunkSlots carries: whether it ran a chunk.
func ranChunk(info interface{ Permit() *worker.SlotPermit }) *bool {
	if info == nil || info.Permit() == nil {
		return nil
	}
	ran, _ := info.Permit().UserData.(*bool)
	return ran
}

// MaxSlots implements worker.SlotSupplier.
func (c *chunkSlots) MaxSlots() int { return c.most }

// gpuTuner gives the GPU worker's activities chunkSlots and everything else the
// SDK's defaults: the GPU worker runs no workflows.
func gpuTuner(slots *chunkSlots) (worker.WorkerTuner, error) {
	fixed, err := worker.NewFixedSizeTuner(worker.FixedSizeTunerOptions{NumActivitySlots: slots.base})
	if err != nil {
		return nil, err
	}
	return worker.NewCompositeTuner(worker.CompositeTunerOptions{
		WorkflowSlotSupplier:        fixed.GetWorkflowTaskSlotSupplier(),
		ActivitySlotSupplier:        slots,
		LocalActivitySlotSupplier:   fixed.GetLocalActivitySlotSupplier(),
		NexusSlotSupplier:           fixed.GetNexusSlotSupplier(),
		SessionActivitySlotSupplier: fixed.GetSessionActivitySlotSupplier(),
	})
}

// hungryChunksFactor is how many times its usual share of chunks a hungry worker
// may hold: at two chunks an engine, eight of Plan's smallest (a sixteenth of 256
// requests) keep a batch of 64 full with some to spare, and the worker still holds
// a bounded part of the run's chunk window.
const hungryChunksFactor = 4
