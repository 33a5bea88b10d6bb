#!/usr/bin/env bash
# Runs every asv benchmark method once (quick mode) at its smallest parameters, against the
# package installed in the current environment. asv exits 2 if a benchmark or its setup raised,
# 1 if the suite failed to import: either fails this script (and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[bench]"
asv machine --yes >/dev/null
asv run --python=same --quick --show-stderr --set-commit-hash "$(git rev-parse HEAD)" \
  -b "\(256, 'float32'" -b "\('swiglu', 'hadamard_jax'" -b "\('swiglu', 'float32'\)" -b "\('gated_mlp'\)"
