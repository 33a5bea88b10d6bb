"""Process-wide settings for the test run (tests and docstring examples), applied before JAX starts.

XLA flags, each added to ``XLA_FLAGS`` unless the caller already sets it:

* ``--xla_force_host_platform_device_count=8``: eight CPU devices, so the sharding tests run in
  this process rather than each in a fresh Python (``tests/utils.run_on_8_cpu_devices``).
  Single-device code is unaffected: arrays live on device 0 unless a test shards them.

and two that make XLA:CPU compile faster (the suite compiles about 5700 small programs, and
compiling them is most of its time):

* ``--xla_backend_optimization_level=0``: LLVM compiles the kernels without its optimisation
  passes (measured: 31 -> 23 ms for a small fused kernel).
* ``--xla_cpu_use_fusion_emitters=false``: XLA:CPU emits each fused kernel with its elemental
  LLVM emitter instead of the MLIR fusion emitters, which build and tear down an MLIR context
  and module per fusion (measured: an eager ``x + x`` compiles in 13 ms instead of 40 ms with
  both flags; the suite 297 s -> 191 s on 2 cores with this one).

The HLO, its fusions, buffer assignment and so ``memory_analysis()`` and ``cost_analysis()`` are
the same with or without the two, except for scatters (``x.at[i].add(u)``), which the elemental
emitter needs expanded into a ``while`` loop (their temp bytes differ; the tests that assert
memory figures pass with both compilers). The machine code is slower (the tests time nothing:
speed is measured by ``python -m hadamard_jax.bench`` and asv, which do not read this file) and
a transcendental may round differently by a few ulp, so the tests compare values with float64
references or rounding tolerances, and their bit-exact checks compare two programs compiled
alike. ``HADAMARD_JAX_TEST_COMPILER=default`` leaves both out: the suite then runs with XLA's
default compiler, the one users get (CI runs the numerics-heavy files that way too, see
``.ci/run``).
"""

import os

_DEVICES = {"--xla_force_host_platform_device_count": "8"}
_FAST_COMPILE = {
    "--xla_backend_optimization_level": "0",
    "--xla_cpu_use_fusion_emitters": "false",
}


def _with_default_flags(flags: str, fast_compile: bool = True) -> str:
    defaults = {**_DEVICES, **(_FAST_COMPILE if fast_compile else {})}
    present = {flag.split("=", 1)[0] for flag in flags.split()}
    extra = [f"{name}={value}" for name, value in defaults.items() if name not in present]
    return " ".join([flags, *extra]).strip()


def _fast_compile(env: dict[str, str]) -> bool:
    choice = env.get("HADAMARD_JAX_TEST_COMPILER", "fast")
    if choice not in ("fast", "default"):
        raise ValueError(f"HADAMARD_JAX_TEST_COMPILER must be 'fast' or 'default', got {choice!r}.")
    return choice == "fast"


os.environ["XLA_FLAGS"] = _with_default_flags(
    os.environ.get("XLA_FLAGS", ""), _fast_compile(dict(os.environ))
)
