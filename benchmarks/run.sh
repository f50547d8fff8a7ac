#!/usr/bin/env bash
# The run behind RESULTS.md: every variant x every framework and path, batch 32, inference, the defaults
# (10 timed steps after 2 warm-up, the LRN pair for paper, torchvision's yardstick, conversion, cold starts). Waits (up to --wait seconds, default 1800) for a quiet machine first: 1-minute load
# average under 1 and no pytest running, since a shared 2-core machine otherwise measures its neighbours.
set -euo pipefail
cd "$(dirname "$0")/.."
wait_s=${WAIT:-1800}
waited=0
while true; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    busy=$(pgrep -fc "python.* -m pytest" || true)
    if awk "BEGIN{exit !($load < 1.0)}" && [ "$busy" = 0 ]; then break; fi
    if [ "$waited" -ge "$wait_s" ]; then echo "machine still busy (load $load, $busy pytest): running anyway" >&2; break; fi
    sleep 15; waited=$((waited + 15))
done
uptime | tee benchmarks/bench_output.txt
alexnet bench --json benchmarks/results.json --plot benchmarks/bench.png "$@" 2>&1 | tee -a benchmarks/bench_output.txt
uptime | tee -a benchmarks/bench_output.txt
