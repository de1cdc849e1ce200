package main

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/vbatch/vbatch/internal/gpu"
	"github.com/vbatch/vbatch/internal/synth"
)

func (a *app) sampleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sample", Short: "Write synthetic workloads"}
	var o synth.Options
	var out string
	candidates := &cobra.Command{
		Use:   "candidates --n N --out URI",
		Short: "Write N candidate-scoring requests (OpenAI Batch format), like the seed benchmark's workload",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.writeSample(cmd.Context(), out, func(w io.Writer) error { return synth.WriteCandidates(w, o) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d requests to %s\n", o.N, out)
			return nil
		},
	}
	candidates.Flags().IntVar(&o.N, "n", 1000, "number of requests")
	candidates.Flags().Int64Var(&o.Seed, "seed", 1, "seed: the same seed writes the same bytes")
	candidates.Flags().StringVar(&o.Model, "model", "", "body.model of every line (default: none, the run's model applies)")
	candidates.Flags().IntVar(&o.MaxTokens, "max-tokens", 2000, "max_tokens of every line")
	candidates.Flags().IntVar(&o.MinMaxTokens, "min-max-tokens", 0, "draw each line's max_tokens between this and --max-tokens (0: every line --max-tokens)")
	candidates.Flags().IntVar(&o.SystemPrompts, "system-prompts", 1, "distinct system prompts, interleaved at random (for measuring the prefix cache)")
	candidates.Flags().BoolVar(&o.NoSchema, "no-schema", false, "leave response_format out (for engines that cannot enforce a JSON schema)")
	candidates.Flags().StringVar(&out, "out", "", "where to write: s3://bucket/key or file:///path (required)")
	_ = candidates.MarkFlagRequired("out")
	var tinyN int
	tiny := &cobra.Command{
		Use:   "tiny --n N --out URI",
		Short: "Write N tiny chat requests (max_tokens 8), for runs that measure orchestration at a million requests",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.writeSample(cmd.Context(), out, func(w io.Writer) error { return synth.WriteTiny(w, tinyN) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d requests to %s\n", tinyN, out)
			return nil
		},
	}
	tiny.Flags().IntVar(&tinyN, "n", 1000000, "number of requests")
	tiny.Flags().StringVar(&out, "out", "", "where to write: s3://bucket/key or file:///path (required)")
	_ = tiny.MarkFlagRequired("out")
	cmd.AddCommand(candidates, tiny)
	return cmd
}

// writeSample writes one synthetic workload object through a buffer.
func (a *app) writeSample(ctx context.Context, uri string, write func(io.Writer) error) error {
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	w, err := store.Create(ctx, uri)
	if err != nil {
		return err
	}
	buf := bufio.NewWriterSize(w, 1<<20)
	if err := write(buf); err != nil {
		_ = w.Abort()
		return err
	}
	if err := buf.Flush(); err != nil {
		_ = w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write %s: %w", uri, err)
	}
	return nil
}

func (a *app) gpusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gpus",
		Short: "List this host's GPUs as NVML sees them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			devs, err := gpu.Discover()
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "no GPUs:", err)
				return nil
			}
			gpu.WriteTable(cmd.OutOrStdout(), devs)
			return nil
		},
	}
}
