// Command vbatch runs batch LLM inference on Temporal: one binary whose subcommands
// start the local stack (dev, demo), the workers, runs (submit, status, retry,
// cancel) and nightly schedules (schedule).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vbatch/vbatch/internal/logging"
	"github.com/vbatch/vbatch/internal/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "vbatch:", err)
		os.Exit(1)
	}
}

// exitError ends the command with a status and no further message.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app is what every subcommand shares: the configuration read once from the
// environment and the logger.
type app struct {
	cfg      config
	logLevel string
	log      *zap.Logger
	// metrics is set while a worker serves --metrics-addr.
	metrics *metrics.Exporter
}

func newRoot() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "vbatch",
		Short: "Batch LLM inference on Temporal: a JSONL file of requests in S3 in, answers in S3 out",
		Long: `vbatch turns a JSONL file of OpenAI-Batch requests in S3 into output.jsonl, errors.jsonl
and a report, spread over every GPU available, surviving killed workers and failed shards.

Start a local stack with 'vbatch dev', or run the whole thing once with 'vbatch demo'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if a.log, err = logging.New(a.logLevel); err != nil {
				return err
			}
			a.cfg, err = configFromEnv(os.Getenv)
			return err
		},
	}
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "debug, info, warn or error")
	root.AddCommand(a.devCmd(), a.demoCmd(), a.workerCmd(), a.submitCmd(), a.statusCmd(), a.retryCmd(), a.cancelCmd(),
		a.scheduleCmd(), a.sampleCmd(), a.gpusCmd(), a.reportCmd(), a.compareCmd(), a.benchCmd())
	return root
}
