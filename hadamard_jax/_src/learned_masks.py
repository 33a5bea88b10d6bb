"""Learned masks: hard 0/1 masks with straight-through gradients, and the hard-concrete gate.

* :func:`ste_mask` (edge-popup, movement pruning, Piggyback): the forward value is a hard top-k
  or threshold mask of the scores, the backward pass treats it as the identity.
* :func:`bernoulli_ste`: a sampled Bernoulli(sigmoid(logits)) mask whose gradient is that of
  its mean, ``sigmoid'(logits)``.
* :func:`hard_concrete` and :func:`l0_penalty` (Louizos, Welling and Kingma, 2018, "Learning
  Sparse Neural Networks through L0 Regularization"): a stretched, clipped binary-concrete gate
  and its expected number of non-zero gates.

Each op has its own ``jax.custom_jvp`` rule in the pattern of :mod:`hadamard_jax._src.rules`:
linear in the tangents, division-free, keeping at most the op's inputs for the backward pass
(the straight-through mask keeps nothing; the hard-concrete gate keeps its key and
``log_alpha`` and redraws its noise in the backward pass). Sigmoid derivatives are written
``sigmoid(x) * sigmoid(-x)``, and 16-bit inputs are computed in float32 and cast back.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hadamard_jax._src import checks, rules
from hadamard_jax._src.activations import compute_dtype, sigmoid_and_grad
from hadamard_jax._src.checks import count_of, static_fraction, static_int
from hadamard_jax._src.sparsity.patterns import Pattern, Unstructured, as_pattern
from hadamard_jax._src.sparsity.ranking import keep_largest, rank_key


def _float_array(x: Any, name: str, op: str) -> jax.Array:
    x = jnp.asarray(checks.as_array(x, name, op))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: {name} must be a real floating array, got dtype {x.dtype}.")
    return x


def _sigmoid_grad(a: jax.Array) -> jax.Array:
    return sigmoid_and_grad(a)[1]


def _identity_tangent(t, out):
    return jnp.zeros(out.shape, out.dtype) if rules.is_zero(t) else t


# --- ste_mask -----------------------------------------------------------------------------------


def _hard_mask(rule: tuple, scores: jax.Array, threshold: jax.Array) -> jax.Array:
    kind, k, pattern = rule
    if kind == "k" and pattern is not None:  # a checked pattern: the top k units by value
        return pattern.top(scores, k)
    if kind == "k":
        key = rank_key(scores, magnitude=False)
        return keep_largest(key.reshape(-1), k).reshape(scores.shape)
    cd = compute_dtype(scores.dtype)
    return scores.astype(cd) > threshold.astype(cd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _ste(rule: tuple, scores: jax.Array, threshold: jax.Array) -> jax.Array:
    return _hard_mask(rule, scores, threshold).astype(scores.dtype)


@functools.partial(_ste.defjvp, symbolic_zeros=True)
def _ste_jvp(rule, primals, tangents):
    out = _ste(rule, *primals)
    # Straight through: d mask / d scores := identity; nothing is saved. The threshold gets no
    # gradient.
    return out, _identity_tangent(tangents[0], out)


_ste_jit = jax.jit(_ste, static_argnums=(0,))


def _structured_rule(scores: jax.Array, pattern: Pattern, given: tuple, op: str) -> tuple:
    """The rule ``("k", kept units, checked pattern)`` of a pattern other than unstructured:
    it keeps whole units by ``sparsity=`` (:class:`NM`: implied, may be left out)."""
    other = [f"{name}={v!r}" for name, v in given if v is not None and name != "sparsity"]
    if other:
        raise ValueError(
            f"{op}: pattern={pattern} keeps whole units by sparsity=, got {', '.join(other)}."
        )
    sparsity = dict(given)["sparsity"]
    if sparsity is None and pattern.sparsity() is None:
        raise ValueError(f"{op}: pattern={pattern} needs sparsity= (the fraction of units pruned).")
    if sparsity is not None:
        sparsity = static_fraction(sparsity, "sparsity", op)
    checked = pattern.check(scores.shape, 0, op, array="scores")
    return ("k", checked.kept(sparsity, checked.units(scores.shape), op), checked)  # type: ignore[arg-type]


def ste_mask(
    scores: ArrayLike,
    *,
    k: int | None = None,
    fraction: float | None = None,
    sparsity: float | None = None,
    threshold: ArrayLike | None = None,
    pattern: Pattern | str = "unstructured",
) -> jax.Array:
    r"""A hard 0/1 mask of ``scores`` with a straight-through gradient.

    The forward value is the hard mask (in ``scores``' dtype); the backward pass treats the
    mask as the identity, :math:`\partial m / \partial s := I`. Applied as ``w * m`` this gives
    :math:`\partial L / \partial s = \partial L / \partial (w \circ m) \circ w`, the gradient
    of edge-popup (Ramanujan et al. 2020), movement pruning (Sanh et al. 2020) and Piggyback
    (Mallya et al. 2018). No residuals are kept.

    Exactly one of the selection rules is given:

    * ``k``: keep the ``k`` largest scores (by value; pass ``jnp.abs(scores)`` for magnitudes),
      ties broken by position (smaller flat index kept first), NaN ranked above ``inf``;
    * ``fraction``: keep the ``round(fraction * scores.size)`` largest scores, as ``k``;
    * ``sparsity``: prune the ``round(sparsity * scores.size)`` smallest scores, as ``k``
      (the rounding of :func:`magnitude_mask` and ``prune``: 5 scores at 0.5 keep 3);
    * ``threshold``: keep ``scores > threshold`` (compared in float32 or wider; a NaN score is
      dropped). The threshold may be traced; it gets no gradient.

    ``pattern`` (a :class:`~hadamard_jax.Pattern` or its name; default single scores) keeps
    whole units instead: :class:`~hadamard_jax.NM` ``n`` of every ``m`` scores along its axis,
    :class:`~hadamard_jax.Block` whole blocks, :class:`~hadamard_jax.Channel` whole slices,
    ranked by the pattern's pooling of the scores' *values* (:meth:`Pattern.top`; Block: mean
    or max, Channel: sum or signed root of ``sum(s * |s|)``). It takes ``sparsity`` (the
    fraction of units pruned, ``round(sparsity * units)``), which :class:`~hadamard_jax.NM`
    implies (leave it out, or give ``1 - n/m``); ``k``, ``fraction`` and ``threshold`` select
    single scores.

    Args:
      scores: real floating array of any shape.
      k: static int in ``[0, scores.size]``.
      fraction: static number in ``[0, 1]``, the fraction kept.
      sparsity: static number in ``[0, 1]``, the fraction pruned.
      threshold: a scalar.
      pattern: what is kept whole (above), with ``sparsity``.

    Returns:
      The mask, of ``scores``' shape and dtype, with values 0 and 1.

    Raises:
      ValueError: none or more than one of ``k``/``fraction``/``sparsity``/``threshold``;
        ``k``, ``fraction`` or ``sparsity`` out of range; a non-scalar ``threshold``.
      TypeError: non-floating ``scores``; ``k``/``fraction``/``sparsity`` not static numbers.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import ste_mask
      >>> s = jnp.array([0.3, -1., 2., 0.5])
      >>> ste_mask(s, k=2)
      Array([0., 0., 1., 1.], dtype=float32)
      >>> w = jnp.array([1., 2., 3., 4.])
      >>> jax.grad(lambda s: jnp.sum(w * ste_mask(s, threshold=0.4)))(s)
      Array([1., 2., 3., 4.], dtype=float32)
      >>> from hadamard_jax import NM
      >>> ste_mask(s, pattern=NM(1, 2))  # 1 of every 2: the larger value
      Array([1., 0., 1., 0.], dtype=float32)
    """
    op = "ste_mask"
    scores = _float_array(scores, "scores", op)
    rules_given = (
        ("k", k),
        ("fraction", fraction),
        ("sparsity", sparsity),
        ("threshold", threshold),
    )
    pattern = as_pattern(pattern, "pattern", op)
    zero = jnp.zeros((), scores.dtype)
    if not isinstance(pattern, Unstructured):
        return _ste_jit(_structured_rule(scores, pattern, rules_given, op), scores, zero)
    if sum(v is not None for _, v in rules_given) != 1:
        listed = ", ".join(f"{name}={v!r}" for name, v in rules_given)
        raise ValueError(
            f"{op}: give exactly one of k, fraction, sparsity or threshold, got {listed}."
        )
    if k is not None:
        return _ste_jit(("k", static_int(k, "k", op, 0, scores.size), None), scores, zero)
    if fraction is not None:
        fraction = static_fraction(fraction, "fraction", op)
        return _ste_jit(("k", count_of(fraction, scores.size), None), scores, zero)
    if sparsity is not None:
        sparsity = static_fraction(sparsity, "sparsity", op)
        kept = scores.size - count_of(sparsity, scores.size)
        return _ste_jit(("k", kept, None), scores, zero)
    threshold = jnp.asarray(checks.as_array(threshold, "threshold", op))
    if threshold.ndim != 0:
        raise ValueError(f"{op}: threshold must be a scalar, got shape {threshold.shape}.")
    if jnp.issubdtype(threshold.dtype, jnp.complexfloating):
        raise TypeError(f"{op}: threshold must be real, got dtype {threshold.dtype}.")
    return _ste_jit(("threshold", None, None), scores, threshold)


# --- bernoulli_ste ------------------------------------------------------------------------------


@jax.custom_jvp
def _bernoulli(key: jax.Array, logits: jax.Array) -> jax.Array:
    cd = compute_dtype(logits.dtype)
    u = jax.random.uniform(key, logits.shape, cd)
    return (u < jax.nn.sigmoid(logits.astype(cd))).astype(logits.dtype)


@functools.partial(_bernoulli.defjvp, symbolic_zeros=True)
def _bernoulli_jvp(primals, tangents):
    key, logits = primals
    out = _bernoulli(key, logits)

    def tangent_fn(prims, ts):
        (logits,) = prims
        (t,) = ts
        cd = compute_dtype(logits.dtype)
        return (_sigmoid_grad(logits.astype(cd)) * t.astype(cd)).astype(logits.dtype)

    # Residual: logits only.
    return out, rules.checkpointed_tangent(tangent_fn, [logits], [tangents[1]], out)


_bernoulli_jit = jax.jit(_bernoulli)


def bernoulli_ste(key: jax.Array, logits: ArrayLike) -> jax.Array:
    r"""A sampled 0/1 mask, ``m ~ Bernoulli(sigmoid(logits))``, with a straight-through
    sigmoid gradient.

    .. math::
      m_i = [u_i < \sigma(\ell_i)],\ u_i \sim U[0, 1),\qquad
      \partial m_i / \partial \ell_i := \sigma'(\ell_i) = \sigma(\ell_i)\,\sigma(-\ell_i)

    i.e. the gradient of the mask's mean :math:`\sigma(\ell)`. The sample equals
    ``jax.random.bernoulli(key, jax.nn.sigmoid(logits))`` (float32 ``logits``). Only
    ``logits`` is kept for the backward pass.

    Args:
      key: a PRNG key.
      logits: real floating array of any shape.

    Returns:
      The mask, of ``logits``' shape and dtype, with values 0 and 1.

    Raises:
      TypeError: non-floating ``logits``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import bernoulli_ste
      >>> bernoulli_ste(jax.random.key(0), jnp.array([-100., 100.]))
      Array([0., 1.], dtype=float32)
      >>> jax.grad(lambda l: bernoulli_ste(jax.random.key(0), l).sum())(jnp.zeros(2))
      Array([0.25, 0.25], dtype=float32)
    """
    logits = _float_array(logits, "logits", "bernoulli_ste")
    return _bernoulli_jit(key, logits)


# --- hard concrete and its L0 penalty -----------------------------------------------------------

Params = tuple[float, float, float]


def check_params(beta: Any, gamma: Any, zeta: Any, op: str) -> Params:
    """The hard-concrete ``(beta, gamma, zeta)`` as floats, or an error naming the bad one."""
    return (
        checks.static_real(beta, "beta", op, lambda v: v > 0, "a finite number > 0"),
        checks.static_real(gamma, "gamma", op, lambda v: v < 0, "a finite number < 0"),
        checks.static_real(zeta, "zeta", op, lambda v: v > 1, "a finite number > 1"),
    )


def _preactivation(params: Params, key: jax.Array | None, log_alpha: jax.Array):
    """``(a, s*(zeta-gamma)+gamma, da/dlog_alpha)`` in the compute dtype."""
    beta, gamma, zeta = params
    cd = compute_dtype(log_alpha.dtype)
    la = log_alpha.astype(cd)
    if key is None:
        a, scale = la, 1.0
    else:
        # u in the open interval: log(u) and log(1 - u) stay finite.
        eps = float(jnp.finfo(cd).eps)
        u = jnp.clip(jax.random.uniform(key, la.shape, cd), eps, 1.0 - eps)
        a, scale = (jnp.log(u) - jnp.log1p(-u) + la) * (1.0 / beta), 1.0 / beta
    return a, jax.nn.sigmoid(a) * (zeta - gamma) + gamma, scale


def _hard_concrete_value(params, key, log_alpha):
    _, pre, _ = _preactivation(params, key, log_alpha)
    return jnp.clip(pre, 0.0, 1.0).astype(log_alpha.dtype)


def _gate_tangent(params, key, log_alpha, t):
    beta, gamma, zeta = params
    a, pre, scale = _preactivation(params, key, log_alpha)
    cd = a.dtype
    inside = (pre > 0) & (pre < 1)  # the clip passes the gradient strictly inside (0, 1)
    slope = jnp.where(inside, _sigmoid_grad(a) * ((zeta - gamma) * scale), jnp.zeros((), cd))
    return (slope * t.astype(cd)).astype(log_alpha.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _hard_concrete(params: Params, key: jax.Array, log_alpha: jax.Array) -> jax.Array:
    return _hard_concrete_value(params, key, log_alpha)


@functools.partial(_hard_concrete.defjvp, symbolic_zeros=True)
def _hard_concrete_jvp(params, primals, tangents):
    key, log_alpha = primals
    out = _hard_concrete(params, key, log_alpha)

    def tangent_fn(prims, ts):
        key, log_alpha = prims
        return _gate_tangent(params, key, log_alpha, ts[0])

    # Residuals: the key and log_alpha; the noise is redrawn from the key.
    return out, rules.checkpointed_tangent(tangent_fn, [key, log_alpha], [tangents[1]], out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _hard_concrete_det(params: Params, log_alpha: jax.Array) -> jax.Array:
    return _hard_concrete_value(params, None, log_alpha)


@functools.partial(_hard_concrete_det.defjvp, symbolic_zeros=True)
def _hard_concrete_det_jvp(params, primals, tangents):
    (log_alpha,) = primals
    out = _hard_concrete_det(params, log_alpha)

    def tangent_fn(prims, ts):
        return _gate_tangent(params, None, prims[0], ts[0])

    return out, rules.checkpointed_tangent(tangent_fn, [log_alpha], [tangents[0]], out)


_hard_concrete_jit = jax.jit(_hard_concrete, static_argnums=(0,))
_hard_concrete_det_jit = jax.jit(_hard_concrete_det, static_argnums=(0,))


def hard_concrete(
    key: jax.Array | None,
    log_alpha: ArrayLike,
    *,
    beta: float = 2.0 / 3.0,
    gamma: float = -0.1,
    zeta: float = 1.1,
    deterministic: bool = False,
) -> jax.Array:
    r"""The hard-concrete gate of Louizos et al. (2018): a relaxed 0/1 mask that is exactly 0
    or 1 with non-zero probability and differentiable in ``log_alpha``.

    .. math::
      u \sim U(0, 1),\quad
      s = \sigma\big((\log u - \log(1 - u) + \log\alpha) / \beta\big),\quad
      z = \min\big(1, \max(0,\ s\,(\zeta - \gamma) + \gamma)\big)

    With ``deterministic=True`` (test time) the gate is
    :math:`\min(1, \max(0, \sigma(\log\alpha)(\zeta - \gamma) + \gamma))` and ``key`` is
    ignored (it may be ``None``). ``u`` is clipped into ``[eps, 1 - eps]`` (float32 ``eps``)
    so every gradient is finite. The gradient is that of the formula, zero where the clip is
    active (``z`` exactly 0 or 1). The backward pass keeps only ``key`` and ``log_alpha`` and
    redraws ``u`` from the key.

    Args:
      key: a PRNG key (``None`` allowed when ``deterministic``).
      log_alpha: real floating array of any shape, the gates' location parameters.
      beta: temperature, a static number > 0.
      gamma: lower stretch bound, a static number < 0.
      zeta: upper stretch bound, a static number > 1.
      deterministic: use the test-time gate (static bool).

    Returns:
      The gate ``z`` in ``[0, 1]``, of ``log_alpha``'s shape and dtype.

    Raises:
      ValueError: ``beta``, ``gamma`` or ``zeta`` out of range.
      TypeError: non-floating ``log_alpha``; non-static parameters; ``key=None`` when
        sampling; ``deterministic`` not a bool.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import hard_concrete
      >>> hard_concrete(None, jnp.array([-10., 0., 10.]), deterministic=True)
      Array([0. , 0.5, 1. ], dtype=float32)
      >>> z = hard_concrete(jax.random.key(0), jnp.zeros(1000))
      >>> bool((z >= 0).all() & (z <= 1).all()), bool((z == 0).any() & (z == 1).any())
      (True, True)

    See also:
      :func:`l0_penalty`, the expected number of non-zero gates.
    """
    op = "hard_concrete"
    log_alpha = _float_array(log_alpha, "log_alpha", op)
    params = check_params(beta, gamma, zeta, op)
    if checks.check_bool(deterministic, "deterministic", op):
        return _hard_concrete_det_jit(params, log_alpha)
    if key is None:
        raise TypeError(f"{op}: key is required unless deterministic=True, got None.")
    return _hard_concrete_jit(params, key, log_alpha)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _l0(shift: float, log_alpha: jax.Array) -> jax.Array:
    cd = compute_dtype(log_alpha.dtype)
    return jnp.sum(jax.nn.sigmoid(log_alpha.astype(cd) - shift)).astype(log_alpha.dtype)


@functools.partial(_l0.defjvp, symbolic_zeros=True)
def _l0_jvp(shift, primals, tangents):
    (log_alpha,) = primals
    out = _l0(shift, log_alpha)

    def tangent_fn(prims, ts):
        (log_alpha,) = prims
        cd = compute_dtype(log_alpha.dtype)
        slope = _sigmoid_grad(log_alpha.astype(cd) - shift)
        return jnp.sum(slope * ts[0].astype(cd)).astype(log_alpha.dtype)

    # Residual: log_alpha only (a plain sigmoid would also keep its output).
    return out, rules.checkpointed_tangent(tangent_fn, [log_alpha], [tangents[0]], out)


_l0_jit = jax.jit(_l0, static_argnums=(0,))


def l0_penalty(
    log_alpha: ArrayLike,
    *,
    beta: float = 2.0 / 3.0,
    gamma: float = -0.1,
    zeta: float = 1.1,
) -> jax.Array:
    r"""The expected number of non-zero hard-concrete gates (Louizos et al. 2018, eq. 12).

    .. math::
      \mathbb{E}\,\|z\|_0 = \sum_i P(z_i \neq 0)
        = \sum_i \sigma\big(\log\alpha_i - \beta \log(-\gamma / \zeta)\big)

    Summed in float32 for 16-bit inputs. For per-gate probabilities use
    ``jax.nn.sigmoid(log_alpha - beta * math.log(-gamma / zeta))``. Only ``log_alpha`` is kept
    for the backward pass.

    Args:
      log_alpha: real floating array of any shape.
      beta: temperature, a static number > 0.
      gamma: lower stretch bound, a static number < 0.
      zeta: upper stretch bound, a static number > 1.

    Returns:
      A scalar of ``log_alpha``'s dtype.

    Raises:
      ValueError: ``beta``, ``gamma`` or ``zeta`` out of range.
      TypeError: non-floating ``log_alpha``; non-static parameters.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import l0_penalty
      >>> round(float(l0_penalty(jnp.zeros(4))), 4)
      3.3273
    """
    op = "l0_penalty"
    log_alpha = _float_array(log_alpha, "log_alpha", op)
    beta, gamma, zeta = check_params(beta, gamma, zeta, op)
    return _l0_jit(beta * math.log(-gamma / zeta), log_alpha)
