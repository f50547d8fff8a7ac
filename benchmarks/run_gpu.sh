#!/usr/bin/env bash
# The GPU table, TF32 off and on: `alexnet bench --device gpu` twice (all variants, frameworks and paths), into
# OUT (default benchmarks/gpu). The conversion and cold-start timings are CPU work, measured by run.sh, so they
# are left out here. Each framework needs its CUDA build (torch+cuXXX, tensorflow[and-cuda], jax[cudaNN]); one
# that sees no GPU is reported as an error and the others go on. Extra arguments go to both runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/gpu}
mkdir -p "$out"
status=0
for tf32 in off on; do
    alexnet bench --device gpu --tf32 "$tf32" --no-convert --cold-runs 0 --json "$out/results_tf32_$tf32.json" \
        --plot "$out/bench_tf32_$tf32.png" "$@" 2>&1 | tee "$out/bench_output_tf32_$tf32.txt" || status=1
done
exit $status
