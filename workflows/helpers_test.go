package workflows

import "go.temporal.io/sdk/client"

func testWorkflowOptions(id string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{ID: id}
}
