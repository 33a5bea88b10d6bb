"""Training-memory figures: compiled temp bytes of the scanned gated-FFN training steps.

The workloads live in :mod:`hadamard_jax.bench.ffn_stack` (plain ``jax.nn`` gate, the library's
gate, and ``jax.checkpoint(policy=dots_saveable)``) and :mod:`hadamard_jax.bench.flax_stack`
(the Flax NNX ``GatedMLP`` against ``nnx.Linear``); this module collects their figures at one
size. Everything is compiled from abstract shapes: nothing of that size is allocated.
"""

from __future__ import annotations

from hadamard_jax.bench import ffn_stack, flax_stack


def ffn_temp_bytes(*, batch: int, d: int, h: int, layers: int) -> dict[str, dict[str, int]]:
    """``{gate: {impl: temp bytes}}`` of the FFN-stack training step."""
    return {
        gate: {
            impl: ffn_stack.compiled_temp_bytes(gate, impl, batch=batch, d=d, h=h, layers=layers)
            for impl in ffn_stack.IMPLS
        }
        for gate in ffn_stack.GATES
    }


def flax_figures(*, batch: int, d: int, h: int, layers: int) -> dict[str, int]:
    """``{impl: temp bytes}`` of the Flax ``GatedMLP`` stack's training step."""
    return {
        impl: flax_stack.compiled_temp_bytes(impl, batch=batch, d=d, h=h, layers=layers)
        for impl in flax_stack.IMPLS
    }
