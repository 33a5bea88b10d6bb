#!/usr/bin/env bash
# CI smoke run: every asv benchmark of every benchmarks/bench_*.py module, once (--quick), at its
# smallest parameters and tiny sizes (HADAMARD_JAX_ASV=smoke), against the package installed in
# the current environment. Nothing is saved (no --set-commit-hash). asv exits 2 if a benchmark or
# its setup raised, 1 if the suite failed to import: either fails this script (and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[bench]"
asv machine --yes >/dev/null
HADAMARD_JAX_ASV=smoke asv run --python=same --quick --show-stderr "$@"
