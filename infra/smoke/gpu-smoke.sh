#!/usr/bin/env bash
# GPU smoke run: the whole stack on one GPU host from the bundle that
# `go tool task gpu:bundle` builds into .device/ (vbatch, temporal, versitygw, xz'd).
# Needs python3 with torch and transformers; no Go, no network, no model weights:
# the transformers backend builds a Llama-shaped model with random weights.
#
#   bash .device/gpu-smoke.sh RESULTS_DIR [N] [MAX_TOKENS] [direct-first]
#
# It runs N synthetic candidate requests through Temporal, versitygw and the GPU
# worker, then feeds the same requests to the same backend directly, and leaves the
# comparison (smoke.json), the run's report (report.json, and report.tgz with its
# Markdown, HTML and charts) and the logs in RESULTS_DIR.
set -euo pipefail
results=${1:?results folder}
n=${2:-500}
max_tokens=${3:-64}
order=()
[ "${4:-}" = direct-first ] && order=(--direct-first)
mkdir -p "$results"
source "$(dirname "$0")/unpack.sh"
work=$(mktemp -d)
cd "$work"
{
  echo "== host"; nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || true
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  "$VBATCH_BIN_DIR/vbatch" gpus
} 2>&1 | tee "$results/host.txt"
set +e
"$VBATCH_BIN_DIR/vbatch" demo --engine transformers --load-format dummy --model llama-3.6b \
  --n "$n" --max-tokens "$max_tokens" --no-schema --compare-direct "${order[@]}" --summary "$results/smoke.json" \
  >"$results/demo.log" 2>&1
status=$?
set -e
grep -vE '"level"|^\s*$' "$results/demo.log" | grep -E "status|answered|errors|throughput|GPU|direct|pipeline|tokens" | tail -30 || true
report=$(find .vbatch/demo/s3 -name report.json -not -path '*/_series/*' | head -1)
if [ -n "$report" ]; then
  cp "$report" "$results/report.json"
  # The whole report (Markdown, HTML, SVG charts) as one file.
  tar czf "$results/report.tgz" -C "$(dirname "$report")" report.json report.md report.html charts
fi
exit $status
