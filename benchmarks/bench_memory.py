"""Training memory: a ``lax.scan`` over gated FFN layers, plain vs hadamard_jax vs remat.

The workload is :mod:`hadamard_jax.bench.ffn_stack`: ``x <- x + act(x@W1) * (x@W2) @ W3`` over
stacked layers, trained with ``jax.jit(jax.value_and_grad(loss))``. ``track_temp_bytes`` is the
compiled step's ``memory_analysis().temp_size_in_bytes`` (deterministic, compiled from abstract
shapes); ``peakmem_step`` is the peak host RSS of a process that runs one step (JAX's import
included, about 170 MB). Both are lower-is-better.

``FlaxMemory`` covers the Flax ``GatedMLP`` workload (:mod:`hadamard_jax.bench.flax_stack`).
"""

from __future__ import annotations

import jax

from hadamard_jax.bench import ffn_stack, flax_stack

GATES = list(ffn_stack.GATES)
IMPLS = list(ffn_stack.IMPLS)
SIZE = dict(ffn_stack.SIZE)


class TrainingMemory:
    """Compiled temp bytes and peak RSS of one training step of the scanned FFN stack."""

    params = [GATES, IMPLS]
    param_names = ["gate", "impl"]

    def track_temp_bytes(self, gate, impl):
        return ffn_stack.compiled_temp_bytes(gate, impl, **SIZE)

    track_temp_bytes.unit = "bytes"

    def peakmem_step(self, gate, impl):
        kp, kx = jax.random.split(jax.random.key(0))
        params = ffn_stack.init_params(kp, layers=SIZE["layers"], d=SIZE["d"], h=SIZE["h"])
        x = ffn_stack.init_inputs(kx, batch=SIZE["batch"], d=SIZE["d"])
        jax.block_until_ready(ffn_stack.cached_train_step(gate, impl)(params, x))


class FlaxMemory:
    """Compiled temp bytes of the Flax GatedMLP scan workload."""

    params = [list(flax_stack.IMPLS)]
    param_names = ["impl"]

    def track_temp_bytes(self, impl):
        return flax_stack.compiled_temp_bytes(impl, **SIZE)

    track_temp_bytes.unit = "bytes"
