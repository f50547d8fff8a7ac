#!/usr/bin/env bash
# The main job: set up, build every variant in PyTorch, Keras and Flax, convert weights across all
# formats, and print the parity table (writes parity.json and parity.png under ./out).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${ALEXNET_VENV:-$root/.venv}"
mkdir -p "$root/out"
"$venv/bin/alexnet" parity --convert --json "$root/out/parity.json" --plot "$root/out/parity.png" "$@"
