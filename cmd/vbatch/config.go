package main

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/logging"
)

// config is everything vbatch reads from the environment, read once here.
type config struct {
	TemporalAddress string // TEMPORAL_ADDRESS
	Namespace       string // TEMPORAL_NAMESPACE
	Blob            blob.Config
	Bucket          string // VBATCH_BUCKET: where demo and sample write by default
}

func configFromEnv(getenv func(string) string) config {
	c := config{
		TemporalAddress: getenv("TEMPORAL_ADDRESS"),
		Namespace:       getenv("TEMPORAL_NAMESPACE"),
		Blob:            blob.ConfigFromEnv(getenv),
		Bucket:          getenv("VBATCH_BUCKET"),
	}
	if c.TemporalAddress == "" {
		c.TemporalAddress = client.DefaultHostPort
	}
	if c.Namespace == "" {
		c.Namespace = client.DefaultNamespace
	}
	if c.Bucket == "" {
		c.Bucket = "vbatch"
	}
	return c
}

// dial connects to Temporal, failing within seconds with what to do when it cannot.
func (a *app) dial(ctx context.Context) (client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{
		HostPort: a.cfg.TemporalAddress, Namespace: a.cfg.Namespace, Logger: logging.Temporal(a.log.Named("temporal")),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %s): %v. Is the server running? "+
			"`vbatch dev` starts a local one; TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE point elsewhere", a.cfg.TemporalAddress, a.cfg.Namespace, err)
	}
	return c, nil
}

func (a *app) store(ctx context.Context) (blob.Store, error) {
	s, err := blob.New(ctx, a.cfg.Blob)
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	return s, nil
}
