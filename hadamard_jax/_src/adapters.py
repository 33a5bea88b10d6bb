r"""Hadamard-product adapters for fine-tuning: LoHa (FedPara/ABBA), HiRA and DoRA's magnitude.

Each op is a ``jax.custom_jvp`` on the one design of :mod:`hadamard_jax._src.rules`: the tangent
is linear in the tangents and is evaluated under ``jax.checkpoint``, so forward mode, Hessians
and reverse mode all work and reverse mode keeps only the op's inputs (DoRA also keeps its
``[out]`` column norms). An input that is not differentiated (the frozen base kernel) has a
symbolic-zero tangent and costs nothing in the rule.

Layouts follow JAX/Flax: kernels are ``[in, out]`` and ``y = x @ kernel``. HF peft stores torch
weights ``[out, in]`` (``y = x @ weight.T``); the mapping is given in each docstring.

LoHa and HiRA are *multilinear* in their arguments (each appears once in a product), so their
tangent is the sum, over the differentiated arguments, of the op with that argument replaced by
its tangent. The Khatri-Rao identity behind LoHa's cheap path is

.. math::
  (A_1 B_1) \odot (A_2 B_2) = (A_1 \bullet A_2)(B_1 \ast B_2),

with the row-wise (face-splitting) product :math:`(A_1 \bullet A_2)_{i,(p,q)} = A_{1,ip}
A_{2,iq}` of shape ``[in, r1 r2]`` and the column-wise Khatri-Rao product
:math:`(B_1 \ast B_2)_{(p,q),j} = B_{1,pj} B_{2,qj}` of shape ``[r1 r2, out]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, docstrings, rules

#: The paths of :func:`loha_matmul` and :func:`hira_matmul`.
LOHA_PATHS = ("auto", "khatri_rao", "form")
HIRA_PATHS = ("auto", "form", "sum")


class _Static(NamedTuple):
    """Static options: the chosen path, the Python float scale, result and compute dtypes."""

    path: str
    scale: float
    dtype: np.dtype
    compute: np.dtype
    precision: Any


# --- shared helpers ------------------------------------------------------------------------------


def _mm(a: Any, b: Any, precision: Any) -> jax.Array:
    """``a @ b`` over the last axis of ``a`` (leading batch axes allowed)."""
    return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), precision=precision)


def _bc(y: jax.Array, v: jax.Array) -> jax.Array:
    """``y * v`` with ``v`` broadcast over the leading axes of ``y`` (explicitly: rank-strict)."""
    return y * jnp.broadcast_to(v, y.shape)


def _kr_rows(a1: jax.Array, a2: jax.Array) -> jax.Array:
    """Row-wise (face-splitting) product: ``[in, r1] x [in, r2] -> [in, r1 r2]``."""
    return (a1[:, :, None] * a2[:, None, :]).reshape(a1.shape[0], -1)


def _kr_cols(b1: jax.Array, b2: jax.Array) -> jax.Array:
    """Column-wise Khatri-Rao product: ``[r1, out] x [r2, out] -> [r1 r2, out]``."""
    return (b1[:, None, :] * b2[None, :, :]).reshape(-1, b1.shape[1])


def _up(args, compute) -> list[Any]:
    return [None if a is None else jnp.asarray(a).astype(compute) for a in args]


def _multilinear_tangent(f, primals, tangents) -> jax.Array:
    """The tangent of a function multilinear in its arguments: one term per live tangent."""
    terms = []
    for i, t in enumerate(tangents):
        if t is not None:
            args = list(primals)
            args[i] = t
            terms.append(f(*args))
    return rules.tangent_sum(terms)


def _custom_op(apply: Callable[..., jax.Array], tangent: Callable[..., jax.Array] | None = None):
    """``apply(s, *args)`` on the arguments cast to ``s.compute``, cast to ``s.dtype``, as a
    ``custom_jvp`` with the static options ``s`` first.

    The tangent is ``tangent(s, primals, tangents)`` on the cast arguments (default: the
    multilinear one, a term per live tangent), evaluated under ``jax.checkpoint``
    (:func:`hadamard_jax._src.rules.checkpointed_tangent`): reverse mode keeps only the inputs.
    """

    @functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
    def op(s: _Static, *args: Any) -> jax.Array:
        return apply(s, *_up(args, s.compute)).astype(s.dtype)

    def multilinear(s: _Static, ps: Any, ts: Any) -> jax.Array:
        return _multilinear_tangent(functools.partial(apply, s), ps, ts)

    rule = multilinear if tangent is None else tangent

    @functools.partial(op.defjvp, symbolic_zeros=True)
    def op_jvp(s: _Static, primals: Any, tangents: Any) -> Any:
        out = op(s, *primals)

        def tangent_fn(ps: Any, ts: Any) -> jax.Array:
            return rule(s, _up(ps, s.compute), _up(ts, s.compute)).astype(s.dtype)

        return out, rules.checkpointed_tangent(tangent_fn, primals, tangents, out)

    return op


def _matrix(w: Any, name: str, op: str) -> tuple[int, int]:
    shape = jnp.shape(w)
    if len(shape) != 2:
        raise ValueError(f"{op}: {name} must be a matrix, got {name}.shape={shape}.")
    return shape


def _floating(arrays, op: str) -> tuple[np.dtype, np.dtype]:
    dtype, _ = checks.result_type(arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{op}: needs floating-point inputs, got dtypes giving {jnp.dtype(dtype).name}."
        )
    return jnp.dtype(dtype), activations.compute_dtype(dtype)


def _check_x(x: Any, n_in: int, wname: str, wshape, op: str) -> None:
    xs = jnp.shape(x)
    if len(xs) < 1 or xs[-1] != n_in:
        raise ValueError(
            f"{op}: the last axis of x.shape={xs} must be {n_in}, the rows of "
            f"{wname}.shape={tuple(wshape)}."
        )


def _check_factors(a1, b1, a2, b2, op: str) -> tuple[int, int, int, int]:
    """Shapes of the LoHa factors: ``a1 [in, r1]``, ``b1 [r1, out]``, ``a2 [in, r2]``, ``b2``."""
    n_in, r1 = _matrix(a1, "a1", op)
    rb1, n_out = _matrix(b1, "b1", op)
    n_in2, r2 = _matrix(a2, "a2", op)
    rb2, n_out2 = _matrix(b2, "b2", op)
    if rb1 != r1:
        raise ValueError(
            f"{op}: b1.shape={(rb1, n_out)} must have {r1} rows, the columns of "
            f"a1.shape={(n_in, r1)}."
        )
    if rb2 != r2:
        raise ValueError(
            f"{op}: b2.shape={(rb2, n_out2)} must have {r2} rows, the columns of "
            f"a2.shape={(n_in2, r2)}."
        )
    if n_in2 != n_in:
        raise ValueError(
            f"{op}: a2.shape={(n_in2, r2)} must have {n_in} rows like a1.shape={(n_in, r1)}."
        )
    if n_out2 != n_out:
        raise ValueError(
            f"{op}: b2.shape={(rb2, n_out2)} must have {n_out} columns like b1.shape={(r1, n_out)}."
        )
    return n_in, n_out, r1, r2


def _scale_of(scale: Any, op: str) -> float:
    return checks.static_real(scale, "scale", op)


# --- LoHa ----------------------------------------------------------------------------------------


def _loha_delta_apply(s: _Static, a1, b1, a2, b2):
    d = _mm(a1, b1, s.precision) * _mm(a2, b2, s.precision)
    return d if s.scale == 1.0 else d * jnp.asarray(s.scale, d.dtype)


_loha_delta = _custom_op(_loha_delta_apply)


def _loha_apply(s: _Static, x, a1, b1, a2, b2):
    """``scale * x @ ((a1 b1) * (a2 b2))`` by the chosen path, in the compute dtype."""
    if s.path == "khatri_rao":
        # Scale the [.., r1 r2] intermediate: the smallest array on the path.
        h = _mm(x, _kr_rows(a1, a2), s.precision)
        if s.scale != 1.0:
            h = h * jnp.asarray(s.scale, h.dtype)
        return _mm(h, _kr_cols(b1, b2), s.precision)
    return _mm(x, _loha_delta_apply(s, a1, b1, a2, b2), s.precision)


_loha_matmul = _custom_op(_loha_apply)


_loha_delta_jit = jax.jit(_loha_delta, static_argnums=(0,))
_loha_matmul_jit = jax.jit(_loha_matmul, static_argnums=(0,))


def loha_costs(rows: int, n_in: int, n_out: int, r1: int, r2: int) -> dict[str, tuple[int, int]]:
    """``{path: (flops, bytes of intermediates in elements)}`` of one :func:`loha_matmul`.

    * ``"form"``: ``P1 = A1 B1`` and ``P2 = A2 B2`` (``2 in out (r1 + r2)`` flops), their
      product (``in out``) and ``x @ dW`` (``2 rows in out``); three ``[in, out]`` arrays.
    * ``"khatri_rao"``: the two Khatri-Rao products (``r1 r2 (in + out)``), ``x @ K_A``
      (``2 rows in r1 r2``) and ``@ K_B`` (``2 rows r1 r2 out``); intermediates
      ``r1 r2 (in + out + rows)`` elements.

    Args:
      rows: the number of rows of ``x`` (the product of its leading axes).
      n_in, n_out: the kernel's shape.
      r1, r2: the ranks of the two factors.

    Returns:
      A dict from path name to ``(flops, intermediate elements)``.
    """
    rr = r1 * r2
    form = (2 * n_in * n_out * (r1 + r2) + n_in * n_out + 2 * rows * n_in * n_out, 3 * n_in * n_out)
    kr = (rr * (n_in + n_out) + 2 * rows * rr * (n_in + n_out), rr * (n_in + n_out + rows))
    return {"form": form, "khatri_rao": kr}


def _loha_path(path: str, rows: int, n_in: int, n_out: int, r1: int, r2: int) -> str:
    if path != "auto":
        return path
    costs = loha_costs(rows, n_in, n_out, r1, r2)
    return "khatri_rao" if costs["khatri_rao"] <= costs["form"] else "form"


def loha_delta(
    a1: ArrayLike,
    b1: ArrayLike,
    a2: ArrayLike,
    b2: ArrayLike,
    *,
    scale: float = 1.0,
    precision: Any = None,
) -> jax.Array:
    r"""The LoHa (FedPara) weight update, the Hadamard product of two low-rank products.

    .. math::
      \Delta W = s\,(A_1 B_1) \odot (A_2 B_2)

    of rank up to ``r1 r2`` from ``(in + out)(r1 + r2)`` parameters. peft's ``hada_w1_a``
    (``[out, r1]``) is ``b1.T``, ``hada_w1_b`` (``[r1, in]``) is ``a1.T`` (the same for the
    second pair), and peft's ``[out, in]`` update is ``loha_delta(...).T``. The rule keeps only
    the four factors for reverse mode (not the two ``[in, out]`` products). 16-bit inputs are
    computed in float32 and rounded once.

    Args:
      a1: ``[in, r1]``.
      b1: ``[r1, out]``.
      a2: ``[in, r2]``.
      b2: ``[r2, out]``.
      scale: a static Python float :math:`s` (peft: ``alpha / r``; ABBA: ``alpha^2 /
        sqrt(r1 r2)``).
      precision: ``jax.lax.Precision`` of the matmuls.

    Returns:
      ``[in, out]``, dtype ``jnp.result_type`` of the factors.

    Raises:
      ValueError: factor shapes that do not chain; a non-finite ``scale``.
      TypeError: non-floating inputs, a traced ``scale``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import loha_delta
      >>> loha_delta(jnp.ones((3, 1)), jnp.full((1, 2), 2.0), jnp.ones((3, 1)), jnp.ones((1, 2)))
      Array([[2., 2.],
             [2., 2.],
             [2., 2.]], dtype=float32)
    """
    op = "loha_delta"
    args = [checks.as_array(v, k, op) for k, v in zip(("a1", "b1", "a2", "b2"), (a1, b1, a2, b2))]
    _check_factors(args[0], args[1], args[2], args[3], op)
    dtype, compute = _floating(args, op)
    s = _Static("form", _scale_of(scale, op), dtype, compute, precision)
    return _loha_delta_jit(s, *args)


@docstrings.fill(LOHA_PATHS=docstrings.choices(LOHA_PATHS))
def loha_matmul(
    x: ArrayLike,
    a1: ArrayLike,
    b1: ArrayLike,
    a2: ArrayLike,
    b2: ArrayLike,
    *,
    scale: float = 1.0,
    path: str = "auto",
    precision: Any = None,
) -> jax.Array:
    r"""``x @ loha_delta(a1, b1, a2, b2)``, without forming the ``[in, out]`` update when cheaper.

    .. math::
      y = s\, x \big((A_1 B_1) \odot (A_2 B_2)\big) = s\,(x (A_1 \bullet A_2))(B_1 \ast B_2)

    Two paths compute the same value (see the module docstring for the Khatri-Rao products):

    * ``"khatri_rao"``: ``(x @ K_A) @ K_B`` with ``K_A = A1 (.) A2`` ``[in, r1 r2]`` and
      ``K_B = B1 (.) B2`` ``[r1 r2, out]``: ``2 rows r1 r2 (in + out)`` flops, no ``[in, out]``
      array in the forward or backward pass;
    * ``"form"``: peft's way, ``x @ ((A1 B1) * (A2 B2))``: ``2 in out (rows + r1 + r2)`` flops
      and ``[in, out]`` intermediates.

    ``path="auto"`` takes the one with fewer flops by :func:`loha_costs` (ties: fewer
    intermediate bytes), i.e. Khatri-Rao when ``r1 r2 (in + out) < in out (1 + (r1 + r2) /
    rows)`` approximately: always for ``r1 = r2 = 8`` at ``in = out >= 128``. Either way
    reverse mode keeps only ``x`` and the factors (checked with ``print_saved_residuals``).

    Args:
      x: ``[..., in]``.
      a1: ``[in, r1]`` (peft ``hada_w1_b.T``).
      b1: ``[r1, out]`` (peft ``hada_w1_a.T``).
      a2: ``[in, r2]`` (peft ``hada_w2_b.T``).
      b2: ``[r2, out]`` (peft ``hada_w2_a.T``).
      scale: a static Python float :math:`s` (peft LoHa: ``alpha / r``).
      path: {{LOHA_PATHS}}.
      precision: ``jax.lax.Precision`` of the matmuls.

    Returns:
      ``[..., out]``, dtype ``jnp.result_type`` of the inputs (16-bit: computed in float32).

    Raises:
      ValueError: shapes that do not chain (naming the arguments); unknown ``path``.
      TypeError: non-floating inputs, a traced ``scale``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import loha_matmul
      >>> a, b = jnp.ones((4, 2)), jnp.ones((2, 3))
      >>> loha_matmul(jnp.ones((1, 4)), a, b, a, b)  # (2 * 2) summed over 4 rows
      Array([[16., 16., 16.]], dtype=float32)
    """
    op = "loha_matmul"
    names = ("x", "a1", "b1", "a2", "b2")
    args = [checks.as_array(v, k, op) for k, v in zip(names, (x, a1, b1, a2, b2))]
    n_in, n_out, r1, r2 = _check_factors(args[1], args[2], args[3], args[4], op)
    _check_x(args[0], n_in, "a1", jnp.shape(args[1]), op)
    path = checks.check_choice(path, "path", op, LOHA_PATHS)
    rows = math.prod(jnp.shape(args[0])[:-1])
    dtype, compute = _floating(args, op)
    chosen = _loha_path(path, rows, n_in, n_out, r1, r2)
    s = _Static(chosen, _scale_of(scale, op), dtype, compute, precision)
    return _loha_matmul_jit(s, *args)


# --- HiRA ----------------------------------------------------------------------------------------


def _hira_apply(s: _Static, x, w0, a, b):
    """``scale * x @ (w0 * (a b))`` by the chosen path, in the compute dtype."""
    if s.path == "sum":
        # sum_p ((x * a[:, p]) @ w0) * b[p, :]: r full matmuls, no [in, out] array.
        y = None
        for p in range(a.shape[1]):
            term = _bc(_mm(_bc(x, a[:, p]), w0, s.precision), b[p, :])
            y = term if y is None else y + term
        assert y is not None
    else:
        y = _mm(x, w0 * _mm(a, b, s.precision), s.precision)
    return y if s.scale == 1.0 else y * jnp.asarray(s.scale, y.dtype)


def _hira_tangent(s: _Static, ps: Any, ts: Any) -> jax.Array:
    """The tangent of :func:`_hira_apply` (the arguments in the compute dtype)."""
    x, w0, a, b = ps
    tx, tw0, ta, tb = ts
    if s.path == "sum":
        return _multilinear_tangent(functools.partial(_hira_apply, s), ps, ts)
    # One [in, out] tangent of the kernel, one matmul with x (a frozen w0 costs nothing).
    p = None if (tw0 is None and tx is None) else _mm(a, b, s.precision)
    inner = rules.sum_terms(
        [
            None if ta is None else _mm(ta, b, s.precision),
            None if tb is None else _mm(a, tb, s.precision),
        ]
    )
    dk = rules.sum_terms([None if tw0 is None else tw0 * p, None if inner is None else w0 * inner])
    terms = [
        None if tx is None else _mm(tx, w0 * p, s.precision),
        None if dk is None else _mm(x, dk, s.precision),
    ]
    y = rules.tangent_sum(terms)
    return y if s.scale == 1.0 else y * jnp.asarray(s.scale, y.dtype)


_hira_matmul = _custom_op(_hira_apply, _hira_tangent)


_hira_matmul_jit = jax.jit(_hira_matmul, static_argnums=(0,))


def hira_costs(rows: int, n_in: int, n_out: int, r: int) -> dict[str, tuple[int, int]]:
    """``{path: (flops, intermediate elements)}`` of one :func:`hira_matmul`.

    * ``"form"``: ``A B`` (``2 in out r``), ``W0 * (A B)`` (``in out``), ``x @ .``
      (``2 rows in out``); two ``[in, out]`` intermediates.
    * ``"sum"``: ``r`` full matmuls ``(x * A[:, p]) @ W0`` (``2 rows in out r`` flops);
      intermediates ``rows (in + out)``.
    """
    form = (2 * n_in * n_out * r + n_in * n_out + 2 * rows * n_in * n_out, 2 * n_in * n_out)
    summed = (2 * rows * n_in * n_out * r + rows * (n_in + 2 * n_out) * r, rows * (n_in + n_out))
    return {"form": form, "sum": summed}


@docstrings.fill(HIRA_PATHS=docstrings.choices(HIRA_PATHS))
def hira_matmul(
    x: ArrayLike,
    w0: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    *,
    scale: float = 1.0,
    path: str = "auto",
    precision: Any = None,
) -> jax.Array:
    r"""HiRA's update applied to ``x``: ``x @ (W0 * (A B))`` (Huang et al., ICLR 2025).

    .. math::
      y = s\, x \big(W_0 \odot (A B)\big)
        = s \sum_{p=1}^{r} \big((x \odot A_{:,p}^\top) W_0\big) \odot B_{p,:}

    The Hadamard product with the frozen base kernel ``W0`` gives the update the rank of
    ``W0``. Two paths (:func:`hira_costs`): ``"form"`` builds ``W0 * (A B)`` (``2 in out
    (rows + r)`` flops, ``[in, out]`` intermediates); ``"sum"`` runs ``r`` full matmuls with
    ``W0`` (``2 rows in out r`` flops, no ``[in, out]`` array). ``"auto"`` takes the one with
    fewer flops, which is ``"form"`` except for about one row (``rows r < rows + r``); pass
    ``path="sum"`` to trade ``r`` times the matmul time for memory. Reverse mode keeps only the
    inputs; a frozen (not differentiated) ``w0`` adds no work to the rule.

    peft layout (``tuners/hira/layer.py``): ``hira_A`` ``[r, in]`` is ``a.T``, ``hira_B``
    ``[out, r]`` is ``b.T``, the torch weight ``[out, in]`` is ``w0.T``; peft has no scale
    (``scale=1``) and merges as ``W *= 1 + B A``.

    Args:
      x: ``[..., in]``.
      w0: ``[in, out]``, the base kernel.
      a: ``[in, r]``.
      b: ``[r, out]``.
      scale: a static Python float :math:`s`.
      path: {{HIRA_PATHS}}.
      precision: ``jax.lax.Precision`` of the matmuls.

    Returns:
      ``[..., out]``, in the dtype :func:`loha_matmul` gives.

    Raises:
      ValueError: as :func:`loha_matmul`.
      TypeError: as :func:`loha_matmul`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import hira_matmul
      >>> w0 = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> hira_matmul(jnp.array([1.0, 1.0]), w0, jnp.ones((2, 1)), jnp.full((1, 2), 0.5))
      Array([2., 3.], dtype=float32)
    """
    op = "hira_matmul"
    args = [checks.as_array(v, k, op) for k, v in zip(("x", "w0", "a", "b"), (x, w0, a, b))]
    n_in, n_out = _matrix(args[1], "w0", op)
    _check_x(args[0], n_in, "w0", (n_in, n_out), op)
    r = _check_lora(op, *args[1:], w_name="w0")[2]
    path = checks.check_choice(path, "path", op, HIRA_PATHS)
    if path == "auto":
        rows = math.prod(jnp.shape(args[0])[:-1])
        costs = hira_costs(rows, n_in, n_out, r)
        path = "sum" if costs["sum"] < costs["form"] else "form"
    dtype, compute = _floating(args, op)
    s = _Static(path, _scale_of(scale, op), dtype, compute, precision)
    return _hira_matmul_jit(s, *args)


# --- DoRA ----------------------------------------------------------------------------------------


def _dora_norm(s: _Static, w, a, b):
    r"""Column norms of ``V = W + s A B`` without forming ``V``.

    ``|V_j|^2 = |W_j|^2 + 2 s b_j . (A^T W)_j + s^2 b_j^T (A^T A) b_j``.
    """
    aw = _mm(a.T, w, s.precision)  # [r, out]
    ata = _mm(a.T, a, s.precision)  # [r, r]
    sq = (
        jnp.sum(w * w, axis=0)
        + 2 * s.scale * jnp.sum(b * aw, axis=0)
        + s.scale**2 * jnp.sum(b * _mm(ata, b, s.precision), axis=0)
    )
    return jnp.sqrt(jnp.maximum(sq, 0))


def _dora_pre(s: _Static, x, w, a, b):
    """``x W + s (x A) B``: the un-normalised output."""
    return _mm(x, w, s.precision) + s.scale * _mm(_mm(x, a, s.precision), b, s.precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _dora_matmul(s: _Static, detach: bool, x, w, a, b, m):
    x, w, a, b, m = _up((x, w, a, b, m), s.compute)
    return _bc(_dora_pre(s, x, w, a, b), m / _dora_norm(s, w, a, b)).astype(s.dtype)


@functools.partial(_dora_matmul.defjvp, symbolic_zeros=True)
def _dora_matmul_jvp(s: _Static, detach: bool, primals, tangents):
    x, w, a, b, m = _up(primals, s.compute)
    # The [out] norms are computed once, outside the checkpoint: a residual of out elements.
    n = _dora_norm(s, w, a, b)
    if detach:
        n = lax.stop_gradient(n)
    # The un-normalised output z = x W + s x A B ([..., out], an activation) is kept too:
    # the magnitude's gradient needs it, and recomputing it would cost a full matmul x W.
    z = _dora_pre(s, x, w, a, b)
    out = _bc(z, m / n).astype(s.dtype)

    def tangent_fn(ps, ts):
        x, w, a, b, m, n, z = _up(ps, s.compute)
        tx, tw, ta, tb, tm = _up(ts, s.compute)
        f = functools.partial(_dora_pre, s)
        # d(x W + s x A B): multilinear in (x, W) and (x, A, B).
        dz = rules.sum_terms(
            [
                None if tx is None else f(tx, w, a, b),
                None if tw is None else _mm(x, tw, s.precision),
                None if ta is None else s.scale * _mm(_mm(x, ta, s.precision), b, s.precision),
                None if tb is None else s.scale * _mm(_mm(x, a, s.precision), tb, s.precision),
            ]
        )
        inv = 1 / n
        terms = [None if dz is None else _bc(dz, m * inv)]
        # d(m / n) = dm / n - m dn / n^2 (dn only without detach).
        dc = None if tm is None else tm * inv
        if not detach and (tw is not None or ta is not None or tb is not None):
            # n dn = V_j . dV_j, dV = dW + s (dA B + A dB), V = W + s A B.
            sc = s.scale
            vdv = rules.sum_terms(
                [
                    None
                    if tw is None
                    else jnp.sum(w * tw, axis=0)
                    + sc * jnp.sum(b * _mm(a.T, tw, s.precision), axis=0),
                    None
                    if ta is None
                    else sc * jnp.sum(b * _mm(ta.T, w, s.precision), axis=0)
                    + sc * sc * jnp.sum(b * _mm(_mm(a.T, ta, s.precision), b, s.precision), axis=0),
                    None
                    if tb is None
                    else sc * jnp.sum(tb * _mm(a.T, w, s.precision), axis=0)
                    + sc * sc * jnp.sum(b * _mm(_mm(a.T, a, s.precision), tb, s.precision), axis=0),
                ]
            )
            assert vdv is not None
            dc = rules.sum_terms([dc, -m * vdv * inv * inv * inv])
        if dc is not None:
            terms.append(_bc(z, dc))
        return rules.tangent_sum(terms).astype(s.dtype)

    return out, rules.checkpointed_tangent(tangent_fn, (*primals, n, z), tangents, out)


_dora_matmul_jit = jax.jit(_dora_matmul, static_argnums=(0, 1))


def dora_norm(
    w: ArrayLike, a: ArrayLike, b: ArrayLike, *, scale: float = 1.0, precision: Any = None
) -> jax.Array:
    r"""The column norms ``||W + s A B||_col`` of DoRA, without forming the ``[in, out]`` sum.

    .. math::
      \|V_{:,j}\|^2 = \|W_{:,j}\|^2 + 2 s\, B_{:,j}^\top (A^\top W)_{:,j}
        + s^2 B_{:,j}^\top (A^\top A) B_{:,j}

    DoRA initialises its magnitude to ``dora_norm(w, a, b)`` (``= ||W||_col`` when ``B = 0``).
    Plain JAX autodiff (no custom rule): use it for initialisation and merging.

    Args:
      w: ``[in, out]``.
      a: ``[in, r]``.
      b: ``[r, out]``.
      scale: the static LoRA scale :math:`s`.
      precision: ``jax.lax.Precision`` of the matmuls.

    Returns:
      ``[out]``, the norm of each column of ``W + s A B``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import dora_norm
      >>> dora_norm(jnp.array([[3.0], [0.0]]), jnp.zeros((2, 1)), jnp.zeros((1, 1)))
      Array([3.], dtype=float32)
    """
    op = "dora_norm"
    args = [checks.as_array(v, k, op) for k, v in zip(("w", "a", "b"), (w, a, b))]
    _check_lora(op, *args)
    dtype, compute = _floating(args, op)
    s = _Static("", _scale_of(scale, op), dtype, compute, precision)
    return _dora_norm(s, *_up(args, compute)).astype(dtype)


def _check_lora(op: str, w, a, b, *, w_name: str = "w") -> tuple[int, int, int]:
    """``(in, out, r)`` of a kernel ``w [in, out]`` and its factors ``a [in, r]``,
    ``b [r, out]`` (DoRA's ``w``, HiRA's ``w0``)."""
    n_in, n_out = _matrix(w, w_name, op)
    ai, r = _matrix(a, "a", op)
    br, bo = _matrix(b, "b", op)
    if ai != n_in:
        raise ValueError(
            f"{op}: a.shape={(ai, r)} must have {n_in} rows like {w_name}.shape={(n_in, n_out)}."
        )
    if (br, bo) != (r, n_out):
        raise ValueError(
            f"{op}: b.shape={(br, bo)} must be {(r, n_out)}: the columns of "
            f"a.shape={(ai, r)} by the columns of {w_name}.shape={(n_in, n_out)}."
        )
    return n_in, n_out, r


def dora_matmul(
    x: ArrayLike,
    w: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    m: ArrayLike,
    *,
    scale: float = 1.0,
    detach_norm: bool = True,
    precision: Any = None,
) -> jax.Array:
    r"""DoRA's weight-decomposed LoRA (Liu et al., 2024), applied to ``x`` (no bias).

    .. math::
      V = W + s A B, \qquad
      y = x \Big(m \odot \frac{V}{\|V\|_{\mathrm{col}}}\Big)
        = \big(x W + s (x A) B\big) \odot \frac{m}{\|V\|_{\mathrm{col}}}

    with :math:`\|V\|_{\mathrm{col}}` the ``[out]`` vector of column norms (computed as in
    :func:`dora_norm`, never forming ``V``). With ``detach_norm=True`` (the paper's section
    4.3 and peft's ``tuners/lora/dora.py``) the norm is treated as a constant in the derivative
    (``lax.stop_gradient``); with ``False`` it is differentiated too. The rule keeps the inputs,
    the ``[out]`` norms and, when ``m`` (or the norm) is differentiated, the un-normalised
    output ``x W + s x A B`` (``[..., out]``, as peft keeps its base output); no ``[in, out]``
    array beyond ``W`` itself, in the forward or backward pass.

    peft layout: ``lora_A.weight`` ``[r, in]`` is ``a.T``, ``lora_B.weight`` ``[out, r]`` is
    ``b.T``, the torch weight ``[out, in]`` is ``w.T``, ``scaling = lora_alpha / r`` is
    ``scale``, and ``lora_magnitude_vector`` ``[out]`` is ``m``; peft's norm over ``dim=1`` of
    the ``[out, in]`` weight is the norm over axis 0 (``in``) here.

    Args:
      x: ``[..., in]``.
      w: ``[in, out]``, the base kernel.
      a: ``[in, r]``, LoRA's down projection.
      b: ``[r, out]``, LoRA's up projection.
      m: ``[out]``, the magnitude.
      scale: a static Python float :math:`s`.
      detach_norm: treat the column norm as a constant in the derivative.
      precision: ``jax.lax.Precision`` of the matmuls.

    Returns:
      ``[..., out]``, dtype ``jnp.result_type`` of the inputs (16-bit: computed in float32).

    Raises:
      ValueError: shapes that do not chain (naming the arguments).
      TypeError: non-floating inputs, a traced ``scale``, a non-bool ``detach_norm``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import dora_matmul
      >>> w = jnp.array([[3.0, 0.0], [4.0, 2.0]])
      >>> dora_matmul(jnp.array([1.0, 1.0]), w, jnp.zeros((2, 1)), jnp.zeros((1, 2)),
      ...             jnp.array([10.0, 1.0]))  # columns scaled to norms 10 and 1
      Array([14.,  1.], dtype=float32)
    """
    op = "dora_matmul"
    names = ("x", "w", "a", "b", "m")
    args = [checks.as_array(v, k, op) for k, v in zip(names, (x, w, a, b, m))]
    n_in, n_out, _ = _check_lora(op, *args[1:4])
    _check_x(args[0], n_in, "w", (n_in, n_out), op)
    if jnp.shape(args[4]) != (n_out,):
        raise ValueError(
            f"{op}: m.shape={jnp.shape(args[4])} must be ({n_out},), the columns "
            f"of w.shape={(n_in, n_out)}."
        )
    detach = checks.check_bool(detach_norm, "detach_norm", op)
    dtype, compute = _floating(args, op)
    s = _Static("", _scale_of(scale, op), dtype, compute, precision)
    return _dora_matmul_jit(s, detach, *args)
