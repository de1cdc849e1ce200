package activities

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/run"
	"github.com/vbatch/vbatch/internal/synth"
)

// BenchmarkPlan plans 20,000 synthetic candidate lines from a file:// store: the
// CPU one Plan takes per input, to compare with a plain copy of the same bytes.
func BenchmarkPlan(b *testing.B) {
	store, err := blob.New(context.Background(), blob.Config{})
	require.NoError(b, err)
	dir := "file://" + filepath.ToSlash(b.TempDir())
	var data bytes.Buffer
	require.NoError(b, synth.WriteCandidates(&data, synth.Options{N: 20_000, Seed: 1, Model: "m"}))
	input := dir + "/in.jsonl"
	w, err := store.Create(context.Background(), input)
	require.NoError(b, err)
	_, err = w.Write(data.Bytes())
	require.NoError(b, err)
	require.NoError(b, w.Close())

	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	c := &Control{Store: store}
	env.RegisterActivity(c)
	b.SetBytes(int64(data.Len()))
	b.ResetTimer()
	for i := range b.N {
		in := PlanInput{Run: run.NewLayout(dir, fmt.Sprintf("run%d", i)), Input: input, Model: "m", ChunkSize: 250}
		val, err := env.ExecuteActivity(c.Plan, in)
		require.NoError(b, err)
		var res PlanResult
		require.NoError(b, val.Get(&res))
		require.Equal(b, 20_000, res.Valid)
	}
}
