#!/usr/bin/env bash
# rerun-parity.sh N [PYTEST_ARGS...]: run CI's parity tests (parity_tests/test_parity.py, not slow) N times in a
# row and report how many runs and tests failed: the flake check of issue 15. RUN_PREFIX wraps each run (e.g. a
# scheduler: RUN_PREFIX=/work/wt/slot); PYTHON picks the interpreter (default: the project's .venv).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:?usage: rerun-parity.sh N [PYTEST_ARGS...]}"
shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "rerun-parity.sh: N must be a positive integer, got '$n'" >&2; exit 2; }
python="${PYTHON:-${ALEXNET_VENV:-$root/.venv}/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$root"
log="$(mktemp -t rerun-parity.XXXXXX)"
trap 'rm -f "$log"' EXIT
failed_runs=0 failed_tests=0 passed_tests=0 start=$SECONDS
for i in $(seq 1 "$n"); do
  t0=$SECONDS
  ${RUN_PREFIX:-} "$python" -m pytest -p no:cacheprovider -q -m "not slow" parity_tests/test_parity.py "$@" >"$log" 2>&1
  rc=$?
  summary="$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$log" | tail -1 | tr -d '=')"
  f=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  if [ "$rc" != 0 ]; then
    failed_runs=$((failed_runs + 1))
    [ "$f" = 0 ] && f=1  # a run that failed without a pytest summary (crash, collection error) counts as one
    grep -E '^(FAILED|ERROR) ' "$log" | sed "s/^/  run $i: /"
  fi
  failed_tests=$((failed_tests + f)) passed_tests=$((passed_tests + p))
  echo "run $i/$n: exit $rc, ${summary:-no summary}, $((SECONDS - t0)) s"
done
echo "rerun-parity: $n runs, $failed_runs failed runs, $failed_tests failed tests, $passed_tests passed tests, $((SECONDS - start)) s"
[ "$failed_runs" = 0 ]
