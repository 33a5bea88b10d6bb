"""The one design behind every derivative rule in this library.

Each op is a ``jax.custom_jvp`` whose tangent rule is

* **linear in the tangents**, so JAX derives reverse mode by transposing it (a bare
  ``jax.custom_vjp`` would give reverse mode only: no ``jvp``, ``jacfwd``, ``hessian`` or
  forward-over-reverse products);
* **evaluated under** ``jax.checkpoint``, so that when JAX linearises the rule for reverse mode
  the residuals it keeps are exactly the rule's primal inputs: every intermediate (activations,
  partial products) is recomputed in the backward pass instead of stored;
* **free of division**, so inputs with exact zeros get exact gradients;
* registered with ``symbolic_zeros=True``, so an input that is not differentiated (a constant,
  an integer array) costs nothing in the tangent computation.

:func:`checkpointed_tangent` is that pattern, shared by all ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def is_zero(t: Any) -> bool:
    """Whether a tangent given to a ``symbolic_zeros=True`` rule is a symbolic zero."""
    return isinstance(t, SymbolicZero)


def checkpointed_tangent(
    tangent_fn: Callable[[Sequence[Any], Sequence[Any]], jax.Array],
    primals: Sequence[Any],
    tangents: Sequence[Any],
    out: jax.Array,
) -> jax.Array:
    """Evaluates ``tangent_fn(primals, tangents)`` under ``jax.checkpoint``.

    Args:
      tangent_fn: ``(primals, tangents) -> tangent_out``, linear in ``tangents``. Symbolic-zero
        tangents reach it as ``None``; it must skip them.
      primals: the op's primal inputs. They are the only residuals kept for reverse mode.
      tangents: the tangents given to the ``custom_jvp`` rule (``SymbolicZero`` allowed).
      out: the primal output, used for the shape and dtype of an all-zero tangent.

    Returns:
      The output tangent, with ``out``'s shape and dtype.
    """
    live = [i for i, t in enumerate(tangents) if not is_zero(t)]
    if not live:
        return jnp.zeros(out.shape, out.dtype)

    def fn(primals, live_tangents):
        full = [None] * len(tangents)
        for i, t in zip(live, live_tangents):
            full[i] = t
        return tangent_fn(primals, full)

    return jax.checkpoint(fn)(list(primals), [tangents[i] for i in live])


def sum_terms(terms: Sequence[jax.Array | None]) -> jax.Array | None:
    """Adds the non-``None`` terms; ``None`` if there are none (a partial sum of a rule)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def tangent_sum(terms: Sequence[jax.Array | None]) -> jax.Array:
    """Adds the non-``None`` terms of a rule's output tangent; at least one must be live.

    :func:`checkpointed_tangent` never calls a rule whose tangents are all symbolic zeros, so
    an output with no live term is a bug in the rule.
    """
    total = sum_terms(terms)
    if total is None:
        raise AssertionError("a tangent rule produced no live term")
    return total
