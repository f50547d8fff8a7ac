#!/usr/bin/env bash
# The runs behind RESULTS.md. First the defaults (every variant x framework x path, batch 32, inference, 10 timed
# steps after 2 warm-up, the LRN pair for paper, torchvision's yardstick, conversion, cold starts); then the same
# models with glibc's own malloc policy (ALEXNET_MALLOC=system) for comparison. Waits (up to WAIT seconds, default
# 1800) for a quiet machine first: 1-minute load average under 1 and no pytest running, since a shared 2-core
# machine otherwise measures its neighbours. Extra arguments go to both `alexnet bench` runs. OUT (default
# benchmarks) is where the JSON, chart and printed output go, so a run on another machine keeps the earlier one.
set -euo pipefail
cd "$(dirname "$0")/.."
wait_s=${WAIT:-1800}
out=${OUT:-benchmarks}
mkdir -p "$out"
waited=0
while true; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    busy=$(pgrep -fc "python.* -m pytest" || true)
    if awk "BEGIN{exit !($load < 1.0)}" && [ "$busy" = 0 ]; then break; fi
    if [ "$waited" -ge "$wait_s" ]; then echo "machine still busy (load $load, $busy pytest): running anyway" >&2; break; fi
    sleep 15; waited=$((waited + 15))
done
uptime | tee "$out/bench_output.txt"
alexnet bench --json "$out/results.json" --plot "$out/bench.png" "$@" 2>&1 | tee -a "$out/bench_output.txt"
uptime | tee -a "$out/bench_output.txt"
ALEXNET_MALLOC=system alexnet bench --no-convert --cold-runs 0 --json "$out/results_system_malloc.json" "$@" 2>&1 \
    | tee "$out/bench_output_system_malloc.txt"
uptime | tee -a "$out/bench_output_system_malloc.txt"
