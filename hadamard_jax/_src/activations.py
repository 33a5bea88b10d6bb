"""Gate activations and their derivatives, written for the hand-written rules.

Each activation is one function ``x -> (act(x), act'(x))`` (an :class:`Activation` row of
:data:`ACTIVATIONS`), meant to be evaluated in float32 or wider (see :func:`compute_dtype`).

**Range.** For every finite ``x`` up to the dtype's largest finite value (``finfo.max``, in
float32, bfloat16 and float16 inputs alike) both parts are finite and equal to the mathematical
value rounded, and at ``+-inf`` they are the mathematical limits (``act(-inf) = 0`` for SiLU,
GELU and QuickGELU; ``act'(+-inf)`` is 0 or 1), never NaN. The one exception is squared ReLU,
whose value ``x^2`` and derivative ``2 x`` outgrow the dtype at finite ``x`` (beyond ``sqrt(max)``
and ``max / 2``): there they are ``inf``, the honest float result, and a gate forms its products
with the value as ``r (r v)`` (:func:`squared_relu_scaled`), finite wherever the product is. A
gate at ``+-inf`` meets its value in IEEE arithmetic: ``act(inf) * 0`` is NaN, as
``jnp.multiply(inf, 0)`` is.

**Transcendentals against memory.** A rule that keeps only its inputs evaluates the activation
twice, in the forward and in the backward pass, and the backward pass has two consumers: the
value's cotangent needs ``act(g)``, the gate's ``act'(g)``. On XLA's CPU backend, sharing one
transcendental between them materialises it as a buffer in a scanned training step (+16 to
+48 MiB in the 8-layer FFN benchmark); computing the value with one transcendental
(``jax.nn.sigmoid``/``silu``, ``erfc``) and the derivative with another (the sigmoid pair, the
density) fuses each into its consumer. The forms below take the second way: per element of
fwd+bwd, 3 transcendentals for the sigmoid family and tanh-GELU and 4 for exact GELU, and the
training step's memory of the library's rule (468 MiB for the scanned SwiGLU, GeGLU and
GeGLU-tanh FFNs). The floor of 2 (one forward, one backward) needs the backward pass's two
cotangents computed in one loop (a multi-output fusion), which XLA's CPU backend does not do.

* ``sigmoid'(x) = sigmoid(x) * sigmoid(-x)``, not ``s * (1 - s)``, which is exactly 0 in bfloat16
  for x >= 6.25 and loses all relative precision in float32 for large x.
* ``silu'`` and ``gelu'`` contain ``x * (something that decays to 0)``, which is ``inf * 0 = nan``
  at +-inf; their limits (0 at -inf, 1 at +inf) are substituted there, with the formula branch
  evaluated at a safe point so that no NaN leaks into higher derivatives.
* Products of a large ``x`` with decaying factors are grouped so that no partial product
  overflows: QuickGELU's derivative is ``s + (x s)(alpha s_neg)``; ``alpha x s s_neg`` from the
  left is ``inf * 0 = nan`` for ``|x| > max / alpha`` (2e38 in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


class Activation(NamedTuple):
    """An element-wise activation as one function returning its value and its derivative.

    ``value_and_grad(x)`` returns ``(act(x), act'(x))`` in ``x``'s dtype, both finite wherever
    the math is, with the mathematical limits at ``+-inf`` (``act(-inf) = 0`` for SiLU and GELU,
    where ``x * sigmoid(x)`` would evaluate to ``-inf * 0 = nan``). The forward pass of every
    op takes its value part (XLA drops the unused derivative), and the derivative rules take
    both, so an op's value, its derivative in the gated value (``act(g)`` itself) and its
    derivative in the gate come from one function and agree at every input.

    ``scaled(x, v, *params)``, where given, returns ``(act(x) v, act'(x) v)`` grouped so that
    each is finite wherever the product is, for an activation whose value or derivative can
    exceed the dtype's range at a finite ``x`` (squared ReLU); ``None``: the plain products.
    """

    name: str
    value_and_grad: Callable[..., tuple[jax.Array, jax.Array]]
    scaled: Callable[..., tuple[jax.Array, jax.Array]] | None = None

    def value(self, x: jax.Array, *params: float) -> jax.Array:
        """``act(x)`` alone (the value part of :attr:`value_and_grad`)."""
        return self.value_and_grad(x, *params)[0]


def compute_dtype(dtype) -> np.dtype:
    """The dtype activations are evaluated in: float32 for 16-bit floats, else ``dtype``."""
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
        return jnp.dtype(jnp.float32)
    return dtype


def _with_limits(x: jax.Array, formula: Callable[[jax.Array], jax.Array], at_neg_inf, at_pos_inf):
    """``formula(x)`` for finite x, the given limits at -inf/+inf, NaN-free in derivatives."""
    is_inf = jnp.isinf(x)
    safe_x = jnp.where(is_inf, jnp.zeros_like(x), x)
    limit = jnp.where(x > 0, jnp.asarray(at_pos_inf, x.dtype), jnp.asarray(at_neg_inf, x.dtype))
    return jnp.where(is_inf, limit, formula(safe_x))


def _sigmoid_pair(x):
    """``(sigmoid(x), sigmoid(-x))`` from one ``exp``, each with full relative precision."""
    e = jnp.exp(-jnp.abs(x))
    r = 1.0 / (1.0 + e)  # the denominator lies in [1, 2]
    small = e * r
    positive = x >= 0
    return jnp.where(positive, r, small), jnp.where(positive, small, r)


def _finite_part(x):
    """``x`` with +-inf replaced by 0: a multiplier whose products with decaying terms stay 0."""
    return jnp.where(jnp.isinf(x), jnp.zeros_like(x), x)


def _above_neg_inf(x):
    """``x`` with ``-inf`` raised to the lowest finite float: ``x * decay(x)`` there is
    ``-max * 0 = -0``, the limit at ``-inf``, not ``-inf * 0 = nan``; finite ``x`` unchanged.
    (One ``max`` per element: measured, it fuses where a ``where`` cost a buffer, 468 vs 476 MiB
    in the scanned FFN benchmark.)"""
    return jnp.maximum(x, jnp.finfo(x.dtype).min)


# --- identity (bilinear) -------------------------------------------------------------------


def identity_and_grad(x):
    """``(x, 1)``."""
    return x, jnp.ones_like(x)


# --- sigmoid (GLU) ---------------------------------------------------------------------------


def sigmoid_and_grad(x):
    """``(sigmoid(x), sigmoid(x) sigmoid(-x))``: the derivative never cancels to 0."""
    s, s_neg = _sigmoid_pair(x)
    return jax.nn.sigmoid(x), s * s_neg


# --- relu (ReGLU) -----------------------------------------------------------------------------


def relu_and_grad(x):
    """``(relu(x), [x > 0])``; the derivative at 0 is 0, as ``jax.nn.relu``'s."""
    return jax.nn.relu(x), (x > 0).astype(x.dtype)


# --- silu (SwiGLU) ---------------------------------------------------------------------------


def silu_and_grad(x):
    """``(x s(x), s(x) + x s(x) s(-x))`` with ``s = sigmoid``; limits 0 and 1 at -inf, +inf."""
    # The value is jax.nn.silu (not x * s from the pair): measured, this lets XLA fuse the
    # recomputation without materialising an extra buffer in a scanned training step (468 vs
    # 500 MiB in the 8-layer FFN benchmark).
    s, s_neg = _sigmoid_pair(x)
    xf = _finite_part(x)
    return jax.nn.silu(_above_neg_inf(x)), s + xf * s * s_neg


# --- gelu, exact (GeGLU) -----------------------------------------------------------------------


def _gelu_grad(x):
    # d/dx x Phi(x) = Phi(x) + x phi(x).
    def formula(x):
        # erfc, not 1 + erf: 1 + erf cancels to 0 in float32 below x ~ -5.5 (a 3% error at -6).
        cdf = 0.5 * jax.lax.erfc(-x / _SQRT_2)
        pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)
        return cdf + x * pdf

    return _with_limits(x, formula, 0.0, 1.0)


def gelu_and_grad(x):
    """``(x Phi(x), Phi(x) + x phi(x))`` with ``Phi`` from ``erfc`` (accurate for x << 0)."""
    # The derivative keeps its own formula: sharing its pdf term with the value changed XLA's
    # fusion in a scanned training step for the worse (516 vs 468 MiB in the FFN benchmark).
    xc = _above_neg_inf(x)
    return xc * (0.5 * jax.lax.erfc(-xc / _SQRT_2)), _gelu_grad(x)


# --- gelu, tanh approximation (GeGLU, approximate=True) ----------------------------------------


def gelu_tanh_and_grad(x):
    """The tanh-approximate GELU ``0.5 x (1 + tanh u)``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``,
    evaluated as ``x sigmoid(2u)`` (``1 + tanh u`` cancels for x <= -3), and its derivative
    ``sigmoid(2u) + 0.5 x sech^2(u) u'``, the value from ``jax.nn.sigmoid`` and the derivative
    from the ``sigmoid`` pair (one ``exp``)."""
    # Beyond |x| = 1e4 the derivative is exactly 0 or 1 in any float; clipping keeps x^2 and x^3
    # finite (they overflow float32 near 1e13 and gave 0 * inf = nan). With e = exp(-2|u|):
    # sigmoid(2u) = 1/(1+e) or e/(1+e), and sech^2(u) = 4 sigmoid(2u) sigmoid(-2u).
    # As for SiLU, the value has its own transcendental: taking it from the pair too made the
    # backward pass's two consumers share one buffer (fwd+bwd 1.8x plain at 2048^2, measured).
    xf = _finite_part(x)
    xc = jnp.clip(x, -1e4, 1e4)
    u = _SQRT_2_OVER_PI * (xc + _GELU_TANH_C * xc * xc * xc)
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * xc * xc)
    sig_2u, sig_neg_2u = _sigmoid_pair(2.0 * u)
    sech2 = 4.0 * sig_2u * sig_neg_2u
    value = _above_neg_inf(x) * jax.nn.sigmoid(2.0 * u)  # -inf: -max * 0 = -0; +inf: inf * 1
    return value, sig_2u + 0.5 * xf * sech2 * du


# --- quick gelu (QuickGeGLU) -------------------------------------------------------------------


def quick_gelu_and_grad(x, alpha=1.702):
    """QuickGELU ``x sigmoid(alpha x)`` (CLIP) and its derivative
    ``s + alpha x s(alpha x) s(-alpha x)``."""
    # As for SiLU: the value from jax.nn.sigmoid, the derivative from the sigmoid pair, so that
    # the two backward consumers need no shared buffer (468 vs 500 MiB in a scanned FFN).
    # The derivative's product is grouped as (x s) (alpha s_neg): each factor is finite for
    # every finite x, and one of them is 0 where the other is large. ``alpha * x s s_neg`` from
    # the left overflowed to inf beyond |x| = max / alpha (2e38 in float32) and met s or s_neg
    # = 0 there: inf * 0 = nan (issue 22, item 8).
    s, s_neg = _sigmoid_pair(alpha * x)
    xf, xc = _finite_part(x), _above_neg_inf(x)
    return xc * jax.nn.sigmoid(alpha * xc), s + (xf * s) * (alpha * s_neg)


# --- squared relu (squared ReGLU) ----------------------------------------------------------------


def squared_relu_and_grad(x):
    """``relu(x)^2`` (Primer) and its derivative ``2 relu(x)``.

    Both are unbounded: beyond ``sqrt(max)`` (1.8e19 in float32) the value, and beyond
    ``max / 2`` the derivative, is larger than any float of the dtype and is ``inf``, the honest
    float result. A gate multiplies them by its value with :func:`squared_relu_scaled`, which
    stays finite wherever the product is."""
    r = jax.nn.relu(x)
    return r * r, 2.0 * r


def squared_relu_scaled(x, v):
    """``(relu(x)^2 v, 2 relu(x) v)`` grouped as ``r (r v)`` and ``2 (r v)``: finite wherever
    the product is (``v = 0`` gives 0 for every finite ``x``, ``v = 1e-30`` at ``x = 1e30``
    gives ``1e30``), where ``(r r) v`` is ``inf * 0 = nan`` or ``inf``."""
    r = jax.nn.relu(x)
    rv = r * v
    return r * rv, 2.0 * rv


# --- clamped silu (gpt-oss) -----------------------------------------------------------------------


def clamp_grad(x, lo=None, hi=None):
    """The derivative of ``clip(x, lo, hi)`` as JAX differentiates it: 1 inside, 0 outside, 1/2
    at a bound (``jnp.minimum``/``jnp.maximum`` split a tie evenly). A ``None`` bound is open."""
    grad = jnp.ones_like(x)
    half, zero = jnp.full_like(x, 0.5), jnp.zeros_like(x)
    if hi is not None:
        grad = jnp.where(x > hi, zero, jnp.where(x == hi, half, grad))
    if lo is not None:
        grad = jnp.where(x < lo, zero, jnp.where(x == lo, half, grad))
    return grad


def clamped_silu_and_grad(x, alpha=1.702, limit=7.0):
    """gpt-oss's gate ``g sigmoid(alpha g)`` with ``g = min(x, limit)``, and its derivative
    (zero above ``limit``, half at it, as ``jnp.minimum``'s)."""
    g = jnp.minimum(x, limit)
    value, grad = quick_gelu_and_grad(g, alpha)
    return value, grad * clamp_grad(x, hi=limit)


#: The activations, by name: each one row, its value and derivative from one function (extra
#: positional arguments are a gate's static parameters, e.g. ``alpha`` and ``limit``).
ACTIVATIONS: dict[str, Activation] = {
    act.name: act
    for act in (
        Activation("identity", identity_and_grad),
        Activation("sigmoid", sigmoid_and_grad),
        Activation("relu", relu_and_grad),
        Activation("silu", silu_and_grad),
        Activation("gelu", gelu_and_grad),
        Activation("gelu_tanh", gelu_tanh_and_grad),
        Activation("quick_gelu", quick_gelu_and_grad),
        Activation("squared_relu", squared_relu_and_grad, squared_relu_scaled),
        Activation("clamped_silu", clamped_silu_and_grad),
    )
}


def get(name: str) -> Activation:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`), or a ``ValueError``."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}."
        ) from None
