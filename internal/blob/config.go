package blob

import (
	"fmt"
	"strconv"
	"strings"
)

// Defaults for Config fields left zero. A writer streams in S3's smallest part
// and uploads each full part before it takes more bytes: one 5 MiB buffer a
// writer, so a control worker's memory hardly depends on how large an output it
// merges or on how many runs it merges at once. The price is throughput: against
// a local server on 16 cores Merge moved about a sixth less than with one part
// uploading in the background while the next filled (docs/benchmarks.md, "One
// part buffer a writer"); its readers keep reading ahead while a part uploads.
const (
	DefaultRegion   = "us-east-1"
	DefaultPartSize = 5 << 20
)

// Config says how to reach S3. The zero value means AWS S3 with the standard
// credentials chain; local servers (versitygw, MinIO) need EndpointURL and
// PathStyle.
type Config struct {
	// Region is the signing region; empty uses the SDK's shared config, then
	// DefaultRegion.
	Region string
	// EndpointURL overrides the S3 endpoint. Empty leaves endpoint resolution to
	// the SDK, which honours AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL itself.
	EndpointURL string
	// AccessKey and SecretKey are static credentials; empty uses the standard
	// credentials chain (environment, shared files, instance roles).
	AccessKey, SecretKey string
	// PathStyle addresses buckets as http://host/bucket/key, which local servers
	// need because they have no per-bucket DNS names.
	PathStyle bool
	// PartSize is the multipart part size in bytes (DefaultPartSize when zero).
	// S3 rejects parts under 5 MiB except the last, so smaller values only work
	// against lenient local servers; it allows 10,000 parts, so a streamed
	// object is at most 10,000 × PartSize (48.8 GiB at the default).
	PartSize int64
	// BackgroundParts is how many full parts may upload while a writer takes
	// more bytes into the next (VBATCH_S3_BACKGROUND_PARTS). Zero, the default,
	// uploads each part before the writer takes more. A writer holds at most
	// PartSize*(BackgroundParts+1) bytes, so these two bound its memory.
	BackgroundParts int
}

// ConfigFromEnv reads the standard AWS variables and vbatch's own
// VBATCH_S3_PATH_STYLE and VBATCH_S3_BACKGROUND_PARTS. It is meant to be called
// once, in cmd/; deeper code receives the Config.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		Region:      getenv("AWS_REGION"),
		EndpointURL: getenv("AWS_ENDPOINT_URL_S3"),
	}
	if cfg.Region == "" {
		cfg.Region = getenv("AWS_DEFAULT_REGION")
	}
	if cfg.EndpointURL == "" {
		cfg.EndpointURL = getenv("AWS_ENDPOINT_URL")
	}
	// A custom endpoint is almost always a local server without virtual-host
	// bucket names, so path style is the default there; AWS itself wants
	// virtual-host style.
	cfg.PathStyle = cfg.EndpointURL != ""
	switch strings.ToLower(strings.TrimSpace(getenv("VBATCH_S3_PATH_STYLE"))) {
	case "true", "1", "yes":
		cfg.PathStyle = true
	case "false", "0", "no":
		cfg.PathStyle = false
	}
	if v := strings.TrimSpace(getenv("VBATCH_S3_BACKGROUND_PARTS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return Config{}, fmt.Errorf("VBATCH_S3_BACKGROUND_PARTS=%q: want a whole number of parts, 0 or more", v)
		}
		cfg.BackgroundParts = n
	}
	return cfg, nil
}

func (c Config) withDefaults() Config {
	if c.PartSize <= 0 {
		c.PartSize = DefaultPartSize
	}
	c.BackgroundParts = max(c.BackgroundParts, 0)
	return c
}
