#!/usr/bin/env bash
# Engine-only scaling: the transformers backend fed straight from a file (direct.py:
# no worker, no Temporal, no S3) on GPU 0 alone, then on every GPU of the host at
# once, one process each, pinned and given its share of the cores as the GPU worker
# does. What four engines lose here against four times one is the host's (its
# CPU, memory, PCIe), not the pipeline's: it is the most gpu-scaling.sh's ratio can
# reach on this host. Run it from the repository root with .device/ carried.
#
#   bash .device/direct-scaling.sh RESULTS_DIR [N=400] [MAX_TOKENS=64] [MAX_NUM_SEQS=64] [CONFIG_JSON]
#
# BACKEND=sim runs the same steps against the simulator (a dry run of this script).
# N requests for each engine, fed MAX_NUM_SEQS plus the worker's margin at a time.
# CONFIG_JSON is merged into the runner config, e.g. '{"enforce_eager":true}' (no CUDA
# graphs) or '{"continuous_batching":{"q_padding_interval_size":256}}'.
# Leaves one.json and all-<GPU>.json (direct.py summaries), their logs, top.txt (the
# busiest threads while all run) and direct-scaling.json in RESULTS_DIR, and prints
# the ratio of the engines' summed tokens/s to GPUs × one engine's.
set -euo pipefail
results=${1:?results folder}
n=${2:-400}
max_tokens=${3:-64}
max_num_seqs=${4:-64}
extra=${5:-"{}"}
mkdir -p "$results"
source "$(dirname "$0")/unpack.sh"
runner=$(cd "$here/../internal/engine/runner" && pwd)
work=$(mktemp -d)
tokens="--max-tokens ${max_tokens#*-}"  # MAX_TOKENS LOW-HIGH: drawn from that range, as gpu-scaling.sh
[ "${max_tokens#*-}" = "$max_tokens" ] || tokens="$tokens --min-max-tokens ${max_tokens%-*}"
"$VBATCH_BIN_DIR/vbatch" sample candidates --n "$n" $tokens --no-schema \
  --out "file://$work/requests.jsonl" >/dev/null
config=$(python3 -c 'import json, sys; c = json.loads(sys.argv[2]); c["max_num_seqs"] = int(sys.argv[1]); print(json.dumps(c))' \
  "$max_num_seqs" "$extra")
gpus=$(nvidia-smi --query-gpu=uuid --format=csv,noheader)
count=$(echo "$gpus" | wc -l)

direct() { # NAME GPU-UUID [ENV...]
  local name=$1 uuid=$2; shift 2
  env CUDA_VISIBLE_DEVICES="$uuid" "$@" python3 "$runner/direct.py" --backend "${BACKEND:-transformers}" \
    --model llama-3.6b --load-format dummy --input "$work/requests.jsonl" --config "$config" \
    >"$results/$name.json" 2>"$results/$name.log"
}

direct one "$(echo "$gpus" | head -1)"

# The worker gives each of several engines OMP_NUM_THREADS = cores / engines.
threads=$(( $(nproc) / count ))
( while sleep 15; do date +%T; top -b -H -n 1 -w 160 | sed -n 7,26p; done ) >"$results/top.txt" 2>&1 &
sampler=$!
i=0
pids=()
for uuid in $gpus; do
  direct "all-$i" "$uuid" OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" &
  pids+=($!)
  i=$((i + 1))
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
kill "$sampler" 2>/dev/null || true

python3 - "$results" "$count" <<'PY'
import json, sys
d, count = sys.argv[1], int(sys.argv[2])
one = json.load(open(f"{d}/one.json"))
alls = [json.load(open(f"{d}/all-{i}.json")) for i in range(count)]
total = sum(a["tokens_per_second"] for a in alls)
ratio = total / (count * one["tokens_per_second"])
ready = {k: one["ready"].get(k) for k in ("use_cuda_graph", "use_async_batching", "direct_max_in_flight")}
rates = " + ".join("%.0f" % a["tokens_per_second"] for a in alls)
loads = ", ".join("%.1f" % a["load_seconds"] for a in alls)
print(f"direct{' (SIMULATED engine)' if one['simulated'] else ''}: one engine {one['tokens_per_second']:.0f} tokens/s over {one['seconds']:.1f} s "
      f"(load {one['load_seconds']:.1f} s); {count} at once {rates} = {total:.0f} tokens/s (loads {loads} s); "
      f"ratio {ratio:.3f}; {ready}")
json.dump({"gpus": count, "one": one["tokens_per_second"], "all": [a["tokens_per_second"] for a in alls],
           "ratio": ratio, "ready": ready}, open(f"{d}/direct-scaling.json", "w"))
PY
exit $status
