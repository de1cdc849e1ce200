// Package infra holds vbatch's deployment files; its tests check them without a
// Docker engine or a cluster.
package infra

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// envRead are the variables vbatch reads (cmd/vbatch config, blob.ConfigFromEnv) or
// that its engine and the AWS SDK read.
var envRead = []string{"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
	"AWS_SECRET_ACCESS_KEY", "AWS_REGION", "VBATCH_S3_PATH_STYLE", "HF_TOKEN"}

func documents(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// workerFlags lists the flags of `vbatch worker`, from the binary's own help.
func workerFlags(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "run", "../cmd/vbatch", "worker", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("vbatch worker --help: %v\n%s", err, out)
	}
	return string(out)
}

func checkArgs(t *testing.T, where string, args []any, help string) {
	t.Helper()
	for _, a := range args {
		s, _ := a.(string)
		if flag, ok := strings.CutPrefix(s, "--"); ok && !strings.Contains(help, "--"+flag+" ") {
			t.Errorf("%s: vbatch worker has no flag --%s", where, flag)
		}
	}
}

// metricsPort is the port of the --metrics-addr in args, "" when there is none.
func metricsPort(args []any) string {
	for i, a := range args {
		s, _ := a.(string)
		addr, ok := strings.CutPrefix(s, "--metrics-addr=")
		if s == "--metrics-addr" && i+1 < len(args) {
			addr, _ = args[i+1].(string)
			ok = true
		}
		if ok {
			if _, port, err := net.SplitHostPort(addr); err == nil {
				return port
			}
		}
	}
	return ""
}

func TestComposeStack(t *testing.T) {
	docs := documents(t, "docker-compose.yml")
	services, _ := dig(docs[0], "services").(map[string]any)
	for _, name := range []string{"postgresql", "temporal", "temporal-ui", "s3", "control-worker", "gpu-worker"} {
		if services[name] == nil {
			t.Errorf("service %s is missing", name)
		}
	}
	gpu := services["gpu-worker"]
	devices, _ := dig(gpu, "deploy", "resources", "reservations", "devices").([]any)
	if len(devices) == 0 || dig(devices[0], "driver") != "nvidia" {
		t.Errorf("gpu-worker does not reserve NVIDIA GPUs: %v", devices)
	}
	for _, name := range []string{"control-worker", "gpu-worker"} {
		env, _ := dig(services[name], "environment").(map[string]any)
		for _, k := range []string{"TEMPORAL_ADDRESS", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "VBATCH_S3_PATH_STYLE"} {
			if env[k] == nil {
				t.Errorf("%s: %s is not set", name, k)
			}
		}
	}
	help := workerFlags(t)
	for _, name := range []string{"control-worker", "gpu-worker"} {
		args, _ := dig(services[name], "command").([]any)
		checkArgs(t, name, args, help)
		// Every worker serves its metrics on a port the host reaches.
		port := metricsPort(args)
		ports, _ := dig(services[name], "ports").([]any)
		published := slices.ContainsFunc(ports, func(p any) bool { s, _ := p.(string); return port != "" && strings.HasSuffix(s, ":"+port) })
		if !published {
			t.Errorf("%s: metrics port %q (--metrics-addr) is not published in ports %v", name, port, ports)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	help := workerFlags(t)
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	kinds := map[string]int{}
	gpuRequested := false
	for _, f := range files {
		for _, d := range documents(t, f) {
			kind, _ := d["kind"].(string)
			name, _ := dig(d, "metadata", "name").(string)
			if d["apiVersion"] == nil || kind == "" || name == "" {
				t.Errorf("%s: an object without apiVersion, kind or metadata.name", f)
				continue
			}
			kinds[kind]++
			switch kind {
			case "ConfigMap":
				for k := range dig(d, "data").(map[string]any) {
					if !slices.Contains(envRead, k) {
						t.Errorf("%s: %s is not a variable vbatch reads", f, k)
					}
				}
			case "Deployment":
				selector, _ := dig(d, "spec", "selector", "matchLabels").(map[string]any)
				labels, _ := dig(d, "spec", "template", "metadata", "labels").(map[string]any)
				for k, v := range selector {
					if labels[k] != v {
						t.Errorf("%s: selector %s=%v does not match the pod's labels", name, k, v)
					}
				}
				containers, _ := dig(d, "spec", "template", "spec", "containers").([]any)
				annotations, _ := dig(d, "spec", "template", "metadata", "annotations").(map[string]any)
				for _, c := range containers {
					args, _ := dig(c, "args").([]any)
					checkArgs(t, name, args, help)
					// Every worker serves metrics, declares the port and asks Prometheus to scrape it.
					port := metricsPort(args)
					declared, _ := dig(c, "ports").([]any)
					if port == "" || !slices.ContainsFunc(declared, func(p any) bool { return fmt.Sprint(dig(p, "containerPort")) == port }) {
						t.Errorf("%s: metrics port %q (--metrics-addr) is not a containerPort of %v", name, port, declared)
					}
					if annotations["prometheus.io/scrape"] != "true" || fmt.Sprint(annotations["prometheus.io/port"]) != port {
						t.Errorf("%s: pod annotations %v do not ask Prometheus to scrape port %q", name, annotations, port)
					}
					if dig(c, "resources", "limits", "nvidia.com/gpu") != nil {
						gpuRequested = true
					}
				}
			}
		}
	}
	if kinds["Deployment"] < 2 || kinds["ConfigMap"] < 1 || kinds["Secret"] < 1 {
		t.Errorf("objects %v: want the control and GPU Deployments, a ConfigMap and a Secret", kinds)
	}
	if !gpuRequested {
		t.Error("no Deployment requests nvidia.com/gpu")
	}
}
