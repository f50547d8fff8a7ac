#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the project, its three frameworks and ONNX Runtime, CPU builds, pinned by constraints.txt.
# Idempotent: a second run only checks. Source it or run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ALEXNET_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi
stamp="$venv/.alexnet-parity-installed"
if [ ! -f "$stamp" ] || [ "$root/constraints.txt" -nt "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[setup] installing alexnet-parity[torch,tf-cpu,jax,onnx,dev] (CPU builds, pinned by constraints.txt)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[torch,tf-cpu,jax,onnx,dev]"
  touch "$stamp"
fi
