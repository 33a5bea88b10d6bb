"""Training memory: a ``lax.scan`` over gated FFN layers, plain vs hadamard_jax vs remat.

The workload is :mod:`hadamard_jax.bench.ffn_stack`: ``x <- x + act(x@W1) * (x@W2) @ W3`` over
stacked layers, trained with ``jax.jit(jax.value_and_grad(loss))``. ``track_temp_bytes`` is the
compiled step's ``memory_analysis().temp_size_in_bytes`` (deterministic, compiled from abstract
shapes); ``peakmem_step`` is the peak host RSS of a process that runs one step (JAX's import
included, about 170 MB). Both are lower-is-better.

``FlaxMemory`` covers the Flax ``GatedMLP`` workload (:mod:`hadamard_jax.bench.flax_stack`) and
is skipped where that module does not exist.
"""

from __future__ import annotations

from . import common  # noqa: F401  (shared conventions)

GATES = ["swiglu", "geglu"]
IMPLS = ["plain", "hadamard_jax", "remat"]
SIZE = {"batch": 2048, "d": 512, "h": 2048, "layers": 8}


class TrainingMemory:
    """Compiled temp bytes and peak RSS of one training step of the scanned FFN stack."""

    params = [GATES, IMPLS]
    param_names = ["gate", "impl"]

    def setup(self, gate, impl):
        from hadamard_jax.bench import memory

        self.ffn = memory.optional_module("ffn_stack")
        if self.ffn is None:
            raise NotImplementedError("hadamard_jax.bench.ffn_stack is not in this version")

    def track_temp_bytes(self, gate, impl):
        return self.ffn.compiled_temp_bytes(gate, impl, **SIZE)

    track_temp_bytes.unit = "bytes"

    def peakmem_step(self, gate, impl):
        import jax

        kp, kx = jax.random.split(jax.random.key(0))
        params = self.ffn.init_params(kp, layers=SIZE["layers"], d=SIZE["d"], h=SIZE["h"])
        x = self.ffn.init_inputs(kx, batch=SIZE["batch"], d=SIZE["d"])
        jax.block_until_ready(self.ffn.cached_train_step(gate, impl)(params, x))


def _flax_impls():
    from hadamard_jax.bench import memory

    flax_stack = memory.optional_module("flax_stack")
    impls = getattr(flax_stack, "IMPLS", None) if flax_stack is not None else None
    return list(impls) if impls else ["absent"]


class FlaxMemory:
    """Compiled temp bytes of the Flax GatedMLP scan workload (skipped when absent)."""

    params = [_flax_impls()]
    param_names = ["impl"]

    def setup(self, impl):
        from hadamard_jax.bench import memory

        self.flax_stack = memory.optional_module("flax_stack")
        if self.flax_stack is None or not hasattr(self.flax_stack, "compiled_temp_bytes"):
            raise NotImplementedError("hadamard_jax.bench.flax_stack is not in this version")

    def track_temp_bytes(self, impl):
        return self.flax_stack.compiled_temp_bytes(impl, **SIZE)

    track_temp_bytes.unit = "bytes"
