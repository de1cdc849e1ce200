package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTemporalConfigComesFromTheCLIProfileAndEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "temporal.toml")
	err := os.WriteFile(file, []byte(`
[profile.default]
address = "temporal.internal:7233"
namespace = "scoring"

[profile.cloud]
address = "scoring.a1b2c.tmprl.cloud:7233"
namespace = "scoring.a1b2c"
api_key = "secret-key"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", file)

	c, err := configFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "temporal.internal:7233" || c.Temporal.Namespace != "scoring" {
		t.Errorf("default profile: %s/%s", c.Temporal.HostPort, c.Temporal.Namespace)
	}

	t.Setenv("TEMPORAL_PROFILE", "cloud")
	if c, err = configFromEnv(os.Getenv); err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "scoring.a1b2c.tmprl.cloud:7233" || c.Temporal.Credentials == nil || c.Temporal.ConnectionOptions.TLS == nil {
		t.Errorf("cloud profile: %s, credentials %v, TLS %v: an API key brings credentials and TLS",
			c.Temporal.HostPort, c.Temporal.Credentials, c.Temporal.ConnectionOptions.TLS)
	}

	t.Setenv("TEMPORAL_ADDRESS", "127.0.0.1:7999")
	if c, err = configFromEnv(os.Getenv); err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "127.0.0.1:7999" {
		t.Errorf("TEMPORAL_ADDRESS does not override the profile: %s", c.Temporal.HostPort)
	}
}

func TestTemporalConfigDefaultsToTheLocalServer(t *testing.T) {
	for _, k := range []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "none.toml"))
	c, err := configFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Temporal.HostPort != "localhost:7233" || c.Temporal.Namespace != "default" || c.Bucket != "vbatch" {
		t.Errorf("defaults: %s/%s bucket %s", c.Temporal.HostPort, c.Temporal.Namespace, c.Bucket)
	}
}
