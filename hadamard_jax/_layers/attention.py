"""The output gate of attention (Qiu et al. 2025, "Gated Attention for Large Language Models",
as in Qwen3-Next), shared by the NNX and Linen ``GatedMultiHeadAttention``.

The gate multiplies the attention output before the output projection,
``o = sdpa(q, k, v) * sigmoid(x W_g)``, element-wise (one gate per output feature of each head)
or head-wise (one per head), through the library's :func:`hadamard_jax.glu` rule (which keeps
only the gate's pre-activation and the attention output for the backward pass).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax

import hadamard_jax as hj


def gate_features(gate: str | None, head_dim: int) -> int:
    """Gate values per head: ``head_dim`` (element-wise), 1 (head-wise) or 0 (no gate)."""
    return {None: 0, "elementwise": head_dim, "headwise": 1}[gate]


def gated_output(gate: jax.Array, attention: jax.Array) -> jax.Array:
    """``sigmoid(gate) * attention``; ``gate`` ``[..., heads, g]`` with ``g`` 1 or ``head_dim``,
    ``attention`` ``[..., heads, head_dim]``."""
    return hj.glu(gate, attention, broadcast=True)


@dataclasses.dataclass(frozen=True)
class SplitQueryAttention:
    """An ``attention_fn`` for a fused query projection ``[..., heads, head_dim + g]``.

    The first ``head_dim`` features of each head are the query, the last ``g`` the gate's
    pre-activation (Qwen3-Next projects both with one matrix); the call returns
    ``sigmoid(gate) * attention_fn(query, key, value, **kwargs)``. A frozen dataclass, so that
    two modules with the same configuration have equal static attributes.
    """

    head_dim: int
    attention_fn: Callable[..., jax.Array]

    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array, **kwargs: Any):
        q, gate = query[..., : self.head_dim], query[..., self.head_dim :]
        return gated_output(gate, self.attention_fn(q, key, value, **kwargs))


def gate_attention_fn(
    gate: jax.Array, attention_fn: Callable[..., jax.Array]
) -> Callable[..., jax.Array]:
    """``attention_fn`` followed by the output gate with pre-activation ``gate``.

    The result keeps ``attention_fn``'s signature (``functools.wraps``): Linen's attention
    passes only the keyword arguments that signature names (``mask`` among them).
    """

    @functools.wraps(attention_fn)
    def gated(query: jax.Array, key: jax.Array, value: jax.Array, **kwargs: Any) -> jax.Array:
        return gated_output(gate, attention_fn(query, key, value, **kwargs))

    return gated
