#!/usr/bin/env bash
# Set up, then run the test suite (unit tests and the parity suite) on 2 workers. The long sweeps and reruns
# are marked slow and left out; `bash scripts/run-tests.sh -m slow` runs them (a later -m wins).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${ALEXNET_VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -m "not slow" "$@"
