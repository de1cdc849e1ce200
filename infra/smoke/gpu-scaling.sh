#!/usr/bin/env bash
# Multi-GPU scaling run: the same workload through one GPU worker with an engine on
# every GPU of the host, then with --gpu-ids 0 (one GPU), from the bundle that
# `go tool task gpu:bundle` builds into .device/. Needs python3 with torch and
# transformers; the transformers backend runs the shipped Llama-shaped config with
# random weights.
#
#   bash .device/gpu-scaling.sh RESULTS_DIR [N=1000] [MAX_TOKENS=64 or LOW-HIGH] [CHUNK_SIZE=125] [MAX_NUM_SEQS]
#
# MAX_NUM_SEQS (default: the backend's, 256) bounds the requests each engine runs at
# once; below N / GPUs it makes every engine refill as requests finish, as a long
# run does, instead of taking its whole share at the start.
# Leaves all.json and one.json (demo summaries with each run's report) in RESULTS_DIR
# and prints all-GPU tokens/s over (GPUs × one-GPU tokens/s).
set -euo pipefail
results=${1:?results folder}
n=${2:-1000}
max_tokens=${3:-64}
# MAX_TOKENS LOW-HIGH draws each request's max_tokens from that range (the model's
# random weights never end a completion early, so a fixed max_tokens makes every
# request the same length).
tokens="--max-tokens ${max_tokens#*-}"
[ "${max_tokens#*-}" = "$max_tokens" ] || tokens="$tokens --min-max-tokens ${max_tokens%-*}"
chunk=${4:-125}
max_num_seqs=${5:+--max-num-seqs $5}
mkdir -p "$results"
source "$(dirname "$0")/unpack.sh"
cd "$(mktemp -d)"
"$VBATCH_BIN_DIR/vbatch" gpus | tee "$results/host.txt"
run() { # NAME EXTRA-FLAGS...
  local name=$1; shift
  "$VBATCH_BIN_DIR/vbatch" demo --engine transformers --load-format dummy --model llama-3.6b \
    --n "$n" $tokens --no-schema --chunk-size "$chunk" $max_num_seqs --summary "$results/$name.json" "$@" \
    >"$results/$name.log" 2>&1
  grep -E "^(status|answered|errors|throughput|GPU)" "$results/$name.log" | sed "s/^/[$name] /"
}
run all
run one --gpu-ids 0
python3 - "$results" <<'PY'
import json, sys
d = sys.argv[1]
a, o = (json.load(open(f"{d}/{n}.json"))["report"] for n in ("all", "one"))
gpus = len(a["engines"])
ratio = a["tokens"]["tokens_per_second"] / (gpus * o["tokens"]["tokens_per_second"])
print(f"{gpus} GPUs: {a['tokens']['tokens_per_second']:.0f} tokens/s; one GPU: {o['tokens']['tokens_per_second']:.0f} tokens/s; "
      f"ratio {ratio:.3f}; GPU UUIDs busy: {sorted({g['uuid'] for g in a['gpus'] if g['utilization_mean_pct'] > 0})}")
json.dump({"gpus": gpus, "ratio": ratio}, open(f"{d}/scaling.json", "w"))
PY
