"""The kernels the report and the asv suite time, their inputs, and how their work is counted.

Four binary ops on ``(n, n)`` arrays: the STREAM-style ``add`` (the bandwidth reference),
:func:`hadamard_jax.hadamard`, ``jnp.multiply`` and ``jnp.matmul``. Each exists jitted three ways,
all built once at import (asv re-runs ``setup`` before every timed call, so a ``jax.jit`` built
there would retrace each time):

* :data:`FORWARD`: ``op(a, b)``, a fresh output buffer per call;
* :data:`FORWARD_DONATED`: the same with ``a`` donated (``donate_argnums=0``): the result is
  written in place of ``a`` (element-wise ops only; a matmul cannot overwrite its input);
* :data:`FORWARD_BACKWARD`: ``(op(a, b), *vjp(ct))``, the forward pass and both cotangents.

The add and the Hadamard kernel are built the same way (jitted, same donation policy, same
inputs, same byte count), so their GB/s compare like for like.

Bytes are counted as STREAM counts them: each array read once and each result written once,
whatever the caches do. ``add``/``hadamard``/``multiply`` forward: 3 arrays (Add's traffic) and
1 flop per element; forward+backward reads ``a, b, ct`` and writes ``out, da, db``: 6 arrays and
3 flops per element. ``matmul``: ``2 n^3`` flops forward and ``6 n^3`` forward+backward over the
same 3 and 6 arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hadamard_jax import hadamard
from hadamard_jax.bench.timing import Call

OPS = ("add", "hadamard", "multiply", "matmul")
ELEMENTWISE = ("add", "hadamard", "multiply")
DTYPES = ("float32", "bfloat16")

_FNS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "add": jnp.add,
    "hadamard": hadamard,
    "multiply": jnp.multiply,
    "matmul": jnp.matmul,
}


def _forward_backward(fn: Callable[[jax.Array, jax.Array], jax.Array]):
    def fwd_bwd(a: jax.Array, b: jax.Array, ct: jax.Array):
        out, vjp = jax.vjp(fn, a, b)
        return (out, *vjp(ct))

    return fwd_bwd


FORWARD = {name: jax.jit(fn) for name, fn in _FNS.items()}
FORWARD_DONATED = {name: jax.jit(_FNS[name], donate_argnums=0) for name in ELEMENTWISE}
FORWARD_BACKWARD = {name: jax.jit(_forward_backward(fn)) for name, fn in _FNS.items()}


class Work(NamedTuple):
    """What one call does, counted as STREAM counts it."""

    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, flops per byte."""
        return self.flops / self.bytes


def work(op: str, n: int, dtype: Any, *, backward: bool = False) -> Work:
    """Flops and bytes of one call of ``op`` on ``(n, n)`` arrays of ``dtype``.

    Args:
      op: one of :data:`OPS`.
      n: the side of the square operands.
      dtype: their dtype.
      backward: forward+backward (:data:`FORWARD_BACKWARD`) instead of the forward pass.

    Returns:
      A :class:`Work`: for an element-wise forward pass 1 flop and 3 arrays per element.

    Raises:
      ValueError: ``op`` is not one of :data:`OPS`.

    Examples:
      >>> from hadamard_jax.bench.kernels import work
      >>> work("hadamard", 4096, "float32")
      Work(flops=16777216.0, bytes=201326592.0)
      >>> work("matmul", 1024, "bfloat16").intensity  # 2 n^3 flops over 3 n^2 * 2 bytes
      341.3333333333333
    """
    _check_op(op)
    size = float(n) * n
    arrays = 6 if backward else 3
    if op == "matmul":
        flops = (6.0 if backward else 2.0) * size * n
    else:
        flops = (3.0 if backward else 1.0) * size
    return Work(flops=flops, bytes=arrays * size * jnp.dtype(dtype).itemsize)


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"kernels: op must be one of {OPS}, got {op!r}.")


@functools.cache
def _uniform(seed: int, n: int, dtype: str, low: float, high: float) -> jax.Array:
    x = jax.random.uniform(jax.random.key(seed), (n, n), jnp.float32, low, high)
    return jax.block_until_ready(x.astype(dtype))


def inputs(op: str, n: int, dtype: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(a, b, ct)`` for ``op`` on ``(n, n)`` arrays of ``dtype`` (cached, shared between ops).

    ``a`` is uniform in ``[1, 2)``. ``b`` is chosen so that repeating a donated call
    (``a <- op(a, b)``) keeps ``a`` in ``[1, 2]`` forever, with no denormals or infinities to slow
    a kernel down: ``b`` uniform in ``[0, 1e-7)`` for ``add``, ``1 + `` that for ``hadamard`` and
    ``multiply``, uniform in ``[0, 1/n)`` for ``matmul``. ``ct`` is uniform in ``[-1, 1)``.
    All are materialised (no lazily-zero pages that would read from one cached page).
    """
    _check_op(op)
    tiny = 1e-7
    a = _uniform(0, n, dtype, 1.0, 2.0)
    if op == "add":
        b = _uniform(1, n, dtype, 0.0, tiny)
    elif op == "matmul":
        b = _uniform(1, n, dtype, 0.0, 1.0 / n)
    else:
        b = _uniform(1, n, dtype, 1.0, 1.0 + tiny)
    ct = _uniform(2, n, dtype, -1.0, 1.0)
    return a, b, ct


def owned_copy(x: jax.Array) -> jax.Array:
    """A fresh copy of ``x`` that may be donated without invalidating ``x``."""
    return jax.block_until_ready(jnp.array(x, copy=True))


def forward_call(op: str, n: int, dtype: str, *, donate: bool = False):
    """A blocking zero-argument :class:`~hadamard_jax.bench.timing.Call` of ``op``'s forward.

    With ``donate=True`` the call runs :data:`FORWARD_DONATED` on its own copy of ``a`` and
    feeds each result back as the next ``a`` (in-place updates, as in an optimizer step).

    Raises:
      ValueError: ``donate=True`` for ``matmul``.
    """
    a, b, _ = inputs(op, n, dtype)
    if not donate:
        return Call(FORWARD[op], (a, b))
    if op not in FORWARD_DONATED:
        raise ValueError(
            f"kernels: donation is for the element-wise ops {ELEMENTWISE}, not {op!r}."
        )
    return Call(FORWARD_DONATED[op], (owned_copy(a), b), chain=True)


def forward_backward_call(op: str, n: int, dtype: str):
    """A blocking zero-argument call of ``op``'s forward pass and both cotangents."""
    return Call(FORWARD_BACKWARD[op], inputs(op, n, dtype))


def output_and_state_loss(
    op: Callable[..., tuple[jax.Array, jax.Array]],
) -> Callable[..., jax.Array]:
    """``loss(*inputs, w) = sum(o * w) + sum(S)`` of ``(o, S) = op(*inputs)``.

    The scalar the recurrence benchmarks differentiate: a gradient reaches every input through
    both the outputs ``o`` (weighted by ``w``, so it is not the same at every position) and the
    final state ``S``.
    """

    def loss(*args: jax.Array) -> jax.Array:
        *inputs, w = args
        o, state = op(*inputs)
        return jnp.sum(o * w) + jnp.sum(state)

    return loss


def cost_analysis(fn: jax.stages.Wrapped, *args: Any) -> dict[str, float]:
    """XLA's ``cost_analysis()`` of the jitted ``fn`` compiled for ``args`` (arrays or shapes).

    Returns:
      ``{"flops", "transcendentals", "bytes accessed", ...}`` (an empty dict if XLA gives none).
    """
    analysis = fn.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0]
    return dict(analysis or {})


def cost_bytes(fn: jax.stages.Wrapped, *args: Any) -> float:
    """``'bytes accessed'`` from the compiled ``cost_analysis()`` of ``fn(*args)``."""
    return float(cost_analysis(fn, *args)["bytes accessed"])


def temp_bytes(fn: jax.stages.Wrapped, *args: Any) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the jitted ``fn`` compiled for ``args``.

    Raises:
      RuntimeError: the backend gives no memory analysis.
    """
    analysis = fn.lower(*args).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(f"kernels: no memory_analysis() on backend {jax.default_backend()!r}.")
    return int(analysis.temp_size_in_bytes)
