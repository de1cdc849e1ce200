// Package workers assembles vbatch's two Temporal workers: the control worker (the
// BatchInference workflow and the storage activities) and the GPU worker (warm
// engines, one per GPU or per tensor-parallel group, fed by GenerateChunk).
package workers

import (
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/activities"
	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/workflows"
)

// NewControl returns the control worker on workflows.ControlTaskQueue. It needs no
// GPU and can run anywhere that reaches Temporal and the object store.
func NewControl(c client.Client, store blob.Store, log *zap.Logger) worker.Worker {
	w := worker.New(c, workflows.ControlTaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(workflows.BatchInference, workflow.RegisterOptions{Name: workflows.WorkflowType})
	w.RegisterActivityWithOptions(&activities.Control{Store: store, Logger: log, Temporal: c}, activity.RegisterOptions{})
	return w
}
