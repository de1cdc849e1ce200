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

func TestAWorkerTakesMoreChunksOnlyWhileTheirRequestsCannotFillItsEngines(t *testing.T) {
	held := newBatchEngine(4, true)
	p, err := newPool(context.Background(), [][]string{nil}, func(context.Context, int) (engine.Engine, error) {
		return held, nil
	}, nil, zap.NewNop())
	require.NoError(t, err)
	defer p.Close()
	slots := newChunkSlots(p, 2, 8)
	ctx := context.Background()
	reserve := func() bool {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		permit, err := slots.ReserveSlot(ctx, nil)
		return err == nil && permit != nil
	}

	// Its share comes at once, also with nothing to run.
	require.True(t, reserve())
	require.True(t, reserve())
	// A chunk of 20 requests: the engine takes its batch of 4 and a margin of 2,
	// 14 wait in the worker; 20 are more than two batches: no third chunk.
	lease, err := p.Acquire(ctx)
	require.NoError(t, err)
	defer lease.Release()
	go func() { _ = lease.Engine.Generate(ctx, requests(20), func(engine.Outcome) {}) }()
	require.Eventually(t, func() bool { return len(held.served()) == 6 }, 5*time.Second, 5*time.Millisecond)
	assert.False(t, reserve(), "20 requests held for an engine of batch 4: the worker is not hungry")

	// Released, a slot comes back at once.
	slots.ReleaseSlot(nil)
	assert.True(t, reserve())

	// Once it holds fewer than two batches (the 6 in the engine, none waiting), the
	// worker takes more chunks, up to 8.
	p.mu.Lock()
	p.unstarted = 0
	p.mu.Unlock()
	for range 6 {
		assert.True(t, reserve(), "a hungry worker takes another chunk")
	}
	assert.False(t, reserve(), "but never more than 8")
	assert.Equal(t, 8, slots.MaxSlots())
	close(held.release)
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
