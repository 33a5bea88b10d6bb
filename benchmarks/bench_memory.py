"""Deep grid: training memory of a ``lax.scan`` over gated FFN layers, every implementation.

Discovered only with ``HADAMARD_JAX_ASV=deep`` (or ``smoke``; CI). The tracked figures (the
hadamard_jax implementations' temp bytes) are in :mod:`benchmarks.bench_tracked`; this grid adds
the plain and remat references and the peak RSS.

The workload is :mod:`hadamard_jax.bench.ffn_stack`: ``x <- x + act(x@W1) * (x@W2) @ W3`` over
stacked layers, trained with ``jax.jit(jax.value_and_grad(loss))``. ``track_temp_bytes`` is the
compiled step's ``memory_analysis().temp_size_in_bytes`` (deterministic, compiled from abstract
shapes); ``peakmem_step`` is the peak host RSS of a process that runs one step (JAX's import
included, about 170 MB). Both are lower-is-better.

``FlaxMemory`` covers the Flax ``GatedMLP`` workload (:mod:`hadamard_jax.bench.flax_stack`).
"""

from __future__ import annotations

from . import common, figures

GATES = common.axis(["swiglu", "geglu"])
IMPLS = common.axis(["plain", "hadamard_jax", "remat"], "hadamard_jax")
SIZE = dict(figures.MEMORY_SIZE)


class TrainingMemory:
    """Compiled temp bytes and peak RSS of one training step of the scanned FFN stack."""

    params = [GATES, IMPLS]
    param_names = ["gate", "impl"]

    def track_temp_bytes(self, gate, impl):
        def temp():
            from hadamard_jax.bench import ffn_stack

            return ffn_stack.compiled_temp_bytes(gate, impl, **SIZE)

        return common.require(temp)

    track_temp_bytes.unit = "bytes"

    def peakmem_step(self, gate, impl):
        def step():
            import jax

            from hadamard_jax.bench import ffn_stack

            kp, kx = jax.random.split(jax.random.key(0))
            params = ffn_stack.init_params(kp, layers=SIZE["layers"], d=SIZE["d"], h=SIZE["h"])
            x = ffn_stack.init_inputs(kx, batch=SIZE["batch"], d=SIZE["d"])
            jax.block_until_ready(ffn_stack.cached_train_step(gate, impl)(params, x))

        common.require(step)


class FlaxMemory:
    """Compiled temp bytes of the Flax GatedMLP scan workload, every implementation."""

    params = [common.axis(["gated_mlp", "plain", "remat"])]
    param_names = ["impl"]

    def track_temp_bytes(self, impl):
        def temp():
            from hadamard_jax.bench import flax_stack

            return flax_stack.compiled_temp_bytes(impl, **SIZE)

        return common.require(temp)

    track_temp_bytes.unit = "bytes"


if not common.DEEP:
    del TrainingMemory, FlaxMemory
