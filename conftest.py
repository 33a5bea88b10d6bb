"""Process-wide settings for the test run (tests and docstring examples), applied before JAX starts.

Three XLA flags, each added to ``XLA_FLAGS`` unless the caller already sets it:

* ``--xla_force_host_platform_device_count=8``: eight CPU devices, so the sharding tests run in
  this process rather than each in a fresh Python (``tests/utils.run_on_8_cpu_devices``).
  Single-device code is unaffected: arrays live on device 0 unless a test shards them.
* ``--xla_backend_optimization_level=0``: LLVM compiles the kernels without its optimisation
  passes. The suite compiles about 6000 small programs, and LLVM's passes were a quarter of
  each compile (measured: 31 -> 23 ms for a small fused kernel). The HLO, its fusions,
  buffer assignment and so ``memory_analysis()`` and
  ``cost_analysis()`` are the same at every level; only the machine code is slower, and the tests
  do not time anything (speed is measured by ``python -m hadamard_jax.bench`` and asv, which do
  not read this file).
* ``--xla_cpu_use_fusion_emitters=false``: XLA:CPU emits each fused kernel with its elemental
  LLVM emitter instead of the MLIR fusion emitters, which build and tear down an MLIR context and
  module per fusion (measured: an eager ``x + x`` compiles in 24 ms instead of 40 ms; the suite
  297 s -> 193 s on 2 cores). HLO, fusion decisions, ``memory_analysis()`` and
  ``cost_analysis()`` are unchanged; a transcendental can round differently by a few ulp, so the
  tests compare values with float64 references or rounding tolerances, never with one backend's
  bits (the bit-exact checks compare two programs compiled alike).

To run the suite with XLA's default compiler (as CI also does for the numerics-heavy files, see
``.ci/run``)::

    XLA_FLAGS="--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true" pytest
"""

import os


def _with_default_flags(flags: str) -> str:
    defaults = {
        "--xla_force_host_platform_device_count": "8",
        "--xla_backend_optimization_level": "0",
        "--xla_cpu_use_fusion_emitters": "false",
    }
    present = {flag.split("=", 1)[0] for flag in flags.split()}
    extra = [f"{name}={value}" for name, value in defaults.items() if name not in present]
    return " ".join([flags, *extra]).strip()


os.environ["XLA_FLAGS"] = _with_default_flags(os.environ.get("XLA_FLAGS", ""))
