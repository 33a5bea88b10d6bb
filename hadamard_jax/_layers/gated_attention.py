"""``GatedMultiHeadAttention``: the output gate of attention (Qiu et al. 2025, "Gated Attention
for Large Language Models", as in Qwen3-Next), shared by the NNX and Linen modules: the options
(checked once, at construction), the gate's size and the gated ``attention_fn``. The parameters
are Flax's attention's (plus the gate's projection), declared by Flax's modules.

The gate multiplies the attention output before the output projection,
``o = sdpa(q, k, v) * sigmoid(x W_g)``, element-wise (one gate per output feature of each head)
or head-wise (one per head), through the library's :func:`hadamard_jax.glu` rule (which keeps
only the gate's pre-activation and the attention output for the backward pass).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax

import hadamard_jax as hj
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks

#: The ``gate=`` choices of ``GatedMultiHeadAttention``: a gate per element of each head's
#: output, one per head, or none (Flax's ``MultiHeadAttention``).
ATTENTION_GATES = ("elementwise", "headwise")

#: ``gate=``, as both docstrings describe it.
GATE_ARG = (
    "gate: " + ", ".join(f'``"{g}"``' for g in ATTENTION_GATES) + " or ``None`` (default "
    f'``"{ATTENTION_GATES[0]}"``).'
)


def check_attention_gate(gate: Any, normalize_qk: Any, op: str = "GatedMultiHeadAttention") -> None:
    """``gate=`` (``"elementwise"``, ``"headwise"`` or ``None``); ``normalize_qk`` needs none."""
    if gate is None:
        return
    checks.check_choice(gate, "gate", op, ATTENTION_GATES)
    if options.flag(normalize_qk, "normalize_qk", op):
        raise ValueError(
            f"{op}: normalize_qk=True normalises the fused query and gate projection; use "
            "gate=None with normalize_qk, or normalize_qk=False with a gate."
        )


@dataclasses.dataclass(frozen=True)
class GatedAttentionOptions(P.Options):
    """``GatedMultiHeadAttention``'s own options, NNX and Linen alike, checked once (the others
    are Flax's attention's, checked by Flax).

    ``gate`` and ``normalize_qk`` (:func:`check_attention_gate`), the sizes (``num_heads``
    made an int), and ``dropout_rate`` in ``[0, 1)`` (Flax's attention accepts any float: at
    2.0 a training call returned zeros).
    """

    op: ClassVar[str] = "GatedMultiHeadAttention"

    num_heads: int
    qkv_features: int | None
    out_features: int | None
    gate: str | None
    normalize_qk: bool
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        op = self.op
        check_attention_gate(self.gate, self.normalize_qk, op)
        heads = options.size(self.num_heads, "num_heads", op)
        options.optional_size(self.qkv_features, "qkv_features", op)
        options.optional_size(self.out_features, "out_features", op)
        options.rate(self.dropout_rate, "dropout_rate", op)
        self.set(num_heads=heads)

    def head_dim(self, in_features: int) -> int:
        """Each head's size: ``qkv_features`` (default ``in_features``) over ``num_heads``."""
        return options.first(self.qkv_features, in_features) // self.num_heads

    def gate_features(self, head_dim: int) -> int:
        """Gate values per head (:func:`gate_features`)."""
        return gate_features(self.gate, head_dim)


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
