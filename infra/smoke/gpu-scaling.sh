#!/usr/bin/env bash
# Multi-GPU scaling run: the same workload through one GPU worker with an engine on
# every GPU of the host, then with --gpu-ids 0 (one GPU), from the bundle that
# `go tool task gpu:bundle` builds into .device/. Needs python3 with torch and
# transformers; the transformers backend runs the shipped Llama-shaped config with
# random weights.
#
#   bash .device/gpu-scaling.sh RESULTS_DIR [N=1000] [MAX_TOKENS=64 or LOW-HIGH] [CHUNK_SIZE=125] [MAX_NUM_SEQS] [WARMUP]
#
# WARMUP requests an engine (other ones) go through each run's engines first,
# unmeasured (`vbatch demo --warmup`), so that neither run's figures hold the
# engines' start.
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
warmup=${6:+--warmup $6}
mkdir -p "$results"
source "$(dirname "$0")/unpack.sh"
cd "$(mktemp -d)"
"$VBATCH_BIN_DIR/vbatch" gpus | tee "$results/host.txt"
run() { # NAME EXTRA-FLAGS...
  local name=$1; shift
  "$VBATCH_BIN_DIR/vbatch" demo --engine transformers --load-format dummy --model llama-3.6b \
    --n "$n" $tokens --no-schema --chunk-size "$chunk" $max_num_seqs $warmup --summary "$results/$name.json" "$@" \
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


def steady(r):
    """Tokens/s once started and before the drain (answers counted as they finish),
    and the seconds the run took beyond its tokens at that rate: its start and drain.
    Both cost about the same seconds in any run, so the same seconds are left out of
    each: the first 20 and the last 10."""
    series, width = r["series"]["tokens_per_second"], r["series"]["bucket_seconds"]
    middle = series[int(20 / width):len(series) - int(10 / width)]
    rate = sum(middle) / len(middle) if middle else 0
    fixed = r["timing"]["generation_seconds"] - r["tokens"]["total"] / rate if rate else 0
    return rate, fixed


(rate_all, fixed_all), (rate_one, fixed_one) = steady(a), steady(o)
steady_ratio = rate_all / (gpus * rate_one) if rate_one else 0
print(f"steady state: {rate_all:.0f} against {gpus} x {rate_one:.0f} tokens/s, ratio {steady_ratio:.3f}; "
      f"start and drain {fixed_all:.1f} s of {a['timing']['generation_seconds']:.1f} s on {gpus} GPUs, "
      f"{fixed_one:.1f} s of {o['timing']['generation_seconds']:.1f} s on one; "
      f"engine idle {a['engine_idle_fraction']:.2%}, finish spread {a['timing']['engine_finish_spread_seconds']:.2f} s")


def graphs(name, engines):
    """CUDA graphs each engine (slot) captured during the measured run, from
    transformers' "Setting graph for key" lines in the demo's log: a capture costs a
    step about 80 ms, so the ones left in the measured run are part of its start."""
    counts, measured = [0] * engines, False
    for line in open(f"{d}/{name}.log", errors="replace"):
        if "generating chunk" in line:
            measured = "-warmup" not in line
        if measured and "Setting graph for key" in line and '"slot": ' in line:
            slot = int(line.split('"slot": ')[1].split(",")[0])
            if slot < engines:
                counts[slot] += 1
    return counts


captured = {"all": graphs("all", gpus), "one": graphs("one", 1)}
print(f"CUDA graphs captured during the measured run, per engine: {captured['all']} on {gpus} GPUs, {captured['one']} on one")
json.dump({"gpus": gpus, "ratio": ratio, "steady_ratio": steady_ratio, "start_and_drain_seconds": [fixed_all, fixed_one],
           "graphs_captured": captured},
          open(f"{d}/scaling.json", "w"))
PY
