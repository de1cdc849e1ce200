#!/usr/bin/env bash
# Orchestration benchmarks on a quiet many-core host, from the bundle that
# `go tool task gpu:bundle` builds into .device/ (vbatch, temporal, versitygw, xz'd).
# The engines are the sim engine modelled as GPUs: no GPU is used.
#
#   bash .device/scale-bench.sh RESULTS_DIR SET
#
# SET is one of
#   targets  5,000 requests on 4 SIMULATED GPUs and 20,000 on 8, each at 25,000
#            tokens/s with the seed's token profile (efficiency, finish spread,
#            Plan and Merge against a plain copy)
#   memory   5,000 and 200,000 requests with engines too fast to hold anything up
#            (peak RSS of each process)
#   million  1,000,000 tiny requests on 8 fast SIMULATED GPUs (continue-as-new,
#            every custom_id checked)
# Each bench leaves NAME.json and NAME.log in RESULTS_DIR and a row in bench.md.
set -euo pipefail
results=${1:?results folder}
set_name=${2:?set: targets, memory or million}
mkdir -p "$results"
source "$(dirname "$0")/unpack.sh"
cd "$(mktemp -d)"
nproc > "$results/host.txt"
bench() { # NAME ARGS...
  local name=$1; shift
  "$VBATCH_BIN_DIR/vbatch" bench "$@" --json "$results/$name.json" --markdown "$results/bench.md" \
    >"$results/$name.log" 2>&1 || { tail -30 "$results/$name.log"; return 1; }
  grep -vE '^[0-9]{4}-' "$results/$name.log" | sed "s/^/[$name] /"
}
case $set_name in
  targets)
    bench t5k --requests 5000 --gpus 4 --tokens-per-second 25000
    bench t20k --requests 20000 --gpus 8 --tokens-per-second 25000 ;;
  memory)
    bench m5k --requests 5000 --gpus 4 --tokens-per-second 5000000
    bench m200k --requests 200000 --gpus 4 --tokens-per-second 5000000 ;;
  million)
    bench m1m --profile tiny --requests 1000000 --gpus 8 --tokens-per-second 50000000 --batch-size 256 \
      --chunk-size 500 --chunks-per-engine 4 --max-in-flight 64 ;;
  *) echo "unknown set $set_name" >&2; exit 2 ;;
esac
