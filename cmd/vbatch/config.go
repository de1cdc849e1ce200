package main

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/vbatch/vbatch/internal/blob"
	"github.com/vbatch/vbatch/internal/logging"
)

// config is everything vbatch reads from the environment, read once here.
type config struct {
	// Temporal is the client configuration as the Temporal CLI and SDKs read it: the
	// profile of the config file (TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE), then
	// TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS* over it.
	Temporal client.Options
	Blob     blob.Config
	Bucket   string // VBATCH_BUCKET: where demo and sample write by default
}

func configFromEnv(getenv func(string) string) (config, error) {
	temporal, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{})
	if err != nil {
		return config{}, fmt.Errorf("load the Temporal client configuration: %w", err)
	}
	if temporal.HostPort == "" {
		temporal.HostPort = client.DefaultHostPort
	}
	if temporal.Namespace == "" {
		temporal.Namespace = client.DefaultNamespace
	}
	blobConfig, err := blob.ConfigFromEnv(getenv)
	if err != nil {
		return config{}, err
	}
	c := config{Temporal: temporal, Blob: blobConfig, Bucket: getenv("VBATCH_BUCKET")}
	if c.Bucket == "" {
		c.Bucket = "vbatch"
	}
	return c, nil
}

// dial connects to Temporal, failing within seconds with what to do when it cannot.
func (a *app) dial(ctx context.Context) (client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts := a.cfg.Temporal
	opts.Logger = logging.Temporal(a.log.Named("temporal"))
	if a.metrics != nil {
		opts.MetricsHandler = a.metrics.Temporal()
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %s): %v. Is the server running? "+
			"`vbatch dev` starts a local one; TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE (or a profile of the "+
			"Temporal CLI's config file, TEMPORAL_PROFILE) point elsewhere", opts.HostPort, opts.Namespace, err)
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
