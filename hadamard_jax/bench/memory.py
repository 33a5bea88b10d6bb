"""Training-memory figures: compiled temp bytes of a scanned gated-FFN training step.

The workload lives in :mod:`hadamard_jax.bench.ffn_stack` (plain ``jax.nn`` gate, the library's
gate, and ``jax.checkpoint(policy=dots_saveable)``); the Flax ``GatedMLP`` workload, when
:mod:`hadamard_jax.bench.flax_stack` exists, adds its own figures. This module only collects
them, and answers ``None`` for a workload that is not there.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def optional_module(name: str) -> ModuleType | None:
    """``hadamard_jax.bench.<name>`` if it exists, else ``None`` (a missing optional workload)."""
    try:
        return importlib.import_module(f"hadamard_jax.bench.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"hadamard_jax.bench.{name}":
            raise
        return None


def ffn_temp_bytes(*, batch: int, d: int, h: int, layers: int) -> dict[str, dict[str, int]] | None:
    """``{gate: {impl: temp bytes}}`` of the FFN-stack training step, or ``None`` if absent.

    Compiled from abstract shapes: nothing of this size is allocated.
    """
    ffn = optional_module("ffn_stack")
    if ffn is None:
        return None
    return {
        gate: {
            impl: int(ffn.compiled_temp_bytes(gate, impl, batch=batch, d=d, h=h, layers=layers))
            for impl in ffn.IMPLS
        }
        for gate in ffn.GATES
    }


def flax_figures(**kwargs: Any) -> dict[str, Any] | None:
    """The Flax ``GatedMLP`` scan-memory figures, or ``None`` if that workload is absent.

    Uses ``flax_stack.compiled_temp_bytes(impl, **kwargs)`` over ``flax_stack.IMPLS`` when the
    module provides them, and ``flax_stack.report()`` otherwise.
    """
    flax_stack = optional_module("flax_stack")
    if flax_stack is None:
        return None
    if hasattr(flax_stack, "compiled_temp_bytes") and hasattr(flax_stack, "IMPLS"):
        return {
            impl: int(flax_stack.compiled_temp_bytes(impl, **kwargs)) for impl in flax_stack.IMPLS
        }
    if hasattr(flax_stack, "report"):
        return dict(flax_stack.report(**kwargs))
    return None
