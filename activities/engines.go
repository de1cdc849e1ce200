package activities

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
)

// planEngines decides how many engines Plan cuts the run's tail for, and says from
// what: the input's engines, else those of the GPU workers polling the run's queue
// now, else as many as the chunk window keeps busy at two chunks each (which also
// caps what the workers have: more engines than that never all get chunks). Zero,
// with no window and no workers, cuts no tail.
func (c *Control) planEngines(ctx context.Context, in PlanInput) (int, string) {
	if in.Engines > 0 {
		return in.Engines, "input"
	}
	window := 0
	if in.MaxInFlightChunks > 0 {
		window = max(in.MaxInFlightChunks/2, 1)
	}
	if c.Temporal == nil || in.GPUTaskQueue == "" {
		return window, "chunk window"
	}
	n, workers, err := expectedEngines(ctx, c.Temporal, in.GPUTaskQueue)
	if err != nil {
		activity.GetLogger(ctx).Warn("cannot count the GPU workers' engines; cutting the tail for the chunk window's",
			"queue", in.GPUTaskQueue, "error", err)
	}
	if n == 0 {
		return window, "chunk window"
	}
	if window > 0 {
		n = min(n, window)
	}
	return n, fmt.Sprintf("%d GPU worker(s) polling %s", workers, in.GPUTaskQueue)
}

// GPUWorkerIdentity is the Temporal identity a GPU worker polls with: its name and
// how many engines it runs, so that Plan can count the engines behind a task queue
// (expectedEngines). Temporal shows it as the worker of each chunk.
func GPUWorkerIdentity(name string, engines int) string {
	return fmt.Sprintf("%s engines=%d", name, engines)
}

var enginesInIdentity = regexp.MustCompile(` engines=([0-9]+)$`)

// expectedEngines counts the engines of the GPU workers that polled queue lately,
// as Temporal lists them (pollers seen within its last few minutes): the workers a
// run started now will have. Zero when none said how many engines they run.
func expectedEngines(ctx context.Context, c client.Client, queue string) (engines, workers int, err error) {
	resp, err := c.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
	if err != nil {
		return 0, 0, err
	}
	seen := map[string]bool{}
	for _, p := range resp.GetPollers() {
		m := enginesInIdentity.FindStringSubmatch(p.GetIdentity())
		if m == nil || seen[p.GetIdentity()] {
			continue
		}
		seen[p.GetIdentity()] = true
		n, _ := strconv.Atoi(m[1])
		engines += n
		workers++
	}
	return engines, workers, nil
}
