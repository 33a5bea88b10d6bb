r"""The gated RMS norm of linear-attention and state-space blocks, with its own derivative rule.

Two orders, both normalising over the last axis ``d``:

* ``norm_before_gate=True`` (flash-linear-attention's fused gated norm):
  :math:`y = \mathrm{rms}(x) \odot s \odot \mathrm{act}(g)`;
* ``norm_before_gate=False`` (Mamba2's ``RMSNormGated``):
  :math:`y = \mathrm{rms}(x \odot \mathrm{act}(g)) \odot s`,

with :math:`\mathrm{rms}(z) = z\, r`, :math:`r = (\overline{z^2} + \epsilon)^{-1/2}` per row and
``act`` a gate of the gate table (:mod:`hadamard_jax._src.gates`). The rule is a ``custom_jvp``
in the pattern of :mod:`hadamard_jax._src.rules`; the per-row :math:`r` is computed outside the
checkpoint and handed to it, so reverse mode keeps ``x``, ``gate``, ``scale`` and one value per
row, never a normalised copy of ``x``. With :math:`n = z r`, the tangent of the norm is

.. math::
  dn = r\,\big(dz - n\, \overline{n\, dz}\big),

linear in :math:`dz`, which is what JAX transposes for reverse mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, gates, rules

OP = "gated_rms_norm"


def _reciprocal_rms(z: jax.Array, eps: float) -> jax.Array:
    """``r = 1 / sqrt(mean(z^2, -1) + eps)``, shape ``[..., 1]``."""
    return jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + eps)


def _norm_tangent(n: jax.Array, r: jax.Array, dz: jax.Array) -> jax.Array:
    """``d(z r)`` for a tangent ``dz``: ``r (dz - n mean(n dz))``."""
    return r * (dz - n * jnp.mean(n * dz, axis=-1, keepdims=True))


def _gated_input(spec, before, x, gate):
    """The normalised input ``z``: ``x``, or ``act(gate) * x`` when the gate comes first."""
    return x if before else gates.evaluate(spec, gate, x)[0]


def _forward(static, x, gate, scale, r):
    spec, eps, before, dtype = static
    cdt = activations.compute_dtype(dtype)
    x, gate = x.astype(cdt), gate.astype(cdt)
    scale = jnp.broadcast_to(scale.astype(cdt), x.shape)  # explicit: no rank promotion
    z = _gated_input(spec, before, x, gate)
    n = z * (_reciprocal_rms(z, eps) if r is None else r)
    return (gates.evaluate(spec, gate, n * scale)[0] if before else n * scale).astype(dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _gated_rms_norm(static, x, gate, scale):
    return _forward(static, x, gate, scale, None)


@functools.partial(_gated_rms_norm.defjvp, symbolic_zeros=True)
def _gated_rms_norm_jvp(static, primals, tangents):
    spec, eps, before, dtype = static
    cdt = activations.compute_dtype(dtype)
    x, gate, scale = primals
    # The per-row reciprocal RMS, outside the checkpoint: one residual value per row.
    z = _gated_input(spec, before, x.astype(cdt), gate.astype(cdt))
    r = _reciprocal_rms(z, eps)
    out = _forward(static, x, gate, scale, r)

    def tangent_fn(ps, ts):
        x, gate, scale, r = (a.astype(cdt) for a in ps)
        dx, dgate, dscale = (None if t is None else t.astype(cdt) for t in ts)
        scale = jnp.broadcast_to(scale, x.shape)
        dscale = None if dscale is None else jnp.broadcast_to(dscale, x.shape)
        if before:
            n = x * r
            dn = None if dx is None else _norm_tangent(n, r, dx)
            _, dh_dgate, act = gates.evaluate(spec, gate, n * scale)
            dvalue = rules.sum_terms(
                [None if dn is None else dn * scale, None if dscale is None else n * dscale]
            )
            terms = [
                None if dgate is None else dh_dgate * dgate,
                None if dvalue is None else act * dvalue,
            ]
        else:
            z, dz_dgate, act = gates.evaluate(spec, gate, x)
            dz = rules.sum_terms(
                [None if dx is None else act * dx, None if dgate is None else dz_dgate * dgate]
            )
            n = z * r
            terms = [
                None if dz is None else _norm_tangent(n, r, dz) * scale,
                None if dscale is None else n * dscale,
            ]
        return rules.tangent_sum(terms).astype(dtype)

    # The primals after the tangents' (here r) are residuals without a tangent of their own.
    tangent = rules.checkpointed_tangent(tangent_fn, (x, gate, scale, r), tangents, out)
    return out, tangent


_gated_rms_norm_jit = jax.jit(_gated_rms_norm, static_argnums=(0,))


def gated_rms_norm(
    x: ArrayLike,
    gate: ArrayLike,
    scale: ArrayLike,
    *,
    eps: float = 1e-6,
    activation: str = "swiglu",
    norm_before_gate: bool = True,
) -> jax.Array:
    r"""RMS normalisation with a multiplicative gate, over the last axis.

    .. math::
      y = \mathrm{rms}(x) \odot s \odot \mathrm{act}(g) \quad\text{or}\quad
      y = \mathrm{rms}(x \odot \mathrm{act}(g)) \odot s,
      \qquad \mathrm{rms}(z) = \frac{z}{\sqrt{\overline{z^2} + \epsilon}}

    ``norm_before_gate=True`` is flash-linear-attention's fused gated norm,
    ``norm_before_gate=False`` Mamba2's ``RMSNormGated``. The derivative rule keeps ``x``,
    ``gate``, ``scale`` and one reciprocal RMS per row for the backward pass (a plain
    composition also keeps the normalised ``x`` and the activation), and works in forward and
    reverse mode, under ``vmap``, ``jax.checkpoint`` and ``lax.scan``. 16-bit inputs are
    normalised in float32 and rounded once.

    Args:
      x: array of shape ``[..., d]``.
      gate: the gate's pre-activation, shape ``[..., d]`` (equal to ``x``'s).
      scale: the learned scale, shape ``[d]``.
      eps: added to the mean square, a static number > 0.
      activation: a gate of the gate table without a value transform (``"swiglu"``: SiLU,
        ``"glu"``: sigmoid, ``"geglu"``, ``"quick_geglu"``, ...).
      norm_before_gate: the order (see above).

    Returns:
      ``y``, of ``x``'s shape and ``jnp.result_type(x, gate, scale)`` promoted to floating.

    Raises:
      ValueError: ``x`` is a scalar; ``gate.shape != x.shape``; ``scale.shape != (d,)``; an
        unknown or value-clamping ``activation``; ``eps <= 0``.
      TypeError: an argument is complex, not an array, or a flag is not a bool.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import gated_rms_norm
      >>> x = jnp.array([[3.0, -4.0]])  # rms 3.5355
      >>> gated_rms_norm(x, jnp.full((1, 2), 100.0), jnp.ones(2), activation="glu")  # gate 1
      Array([[ 0.8485281, -1.1313708]], dtype=float32)
      >>> jax.grad(lambda x: gated_rms_norm(x, x, jnp.ones(2)).sum())(x).shape
      (1, 2)
    """
    return _gated_rms_norm_checked((x, gate, scale), (eps, activation, norm_before_gate))


def _gated_rms_norm_impl(x, gate, scale, eps, activation, norm_before_gate) -> jax.Array:
    """:func:`gated_rms_norm`'s checks and op."""
    spec = gates.plain_spec_of(activation, OP)
    before = checks.check_bool(norm_before_gate, "norm_before_gate", OP)
    eps = checks.static_real(eps, "eps", OP, lambda v: v > 0, "a number > 0")
    x, gate, scale = checks.real_arrays((x, gate, scale), ("x", "gate", "scale"), OP)
    shape = tuple(jnp.shape(x))
    if not shape:
        raise ValueError(f"{OP}: x must have a feature axis, got a scalar.")
    if tuple(jnp.shape(gate)) != shape:
        raise ValueError(f"{OP}: gate.shape={jnp.shape(gate)} must equal x.shape={shape}.")
    if tuple(jnp.shape(scale)) != shape[-1:]:
        raise ValueError(
            f"{OP}: scale.shape={jnp.shape(scale)} must be ({shape[-1]},), the last axis of "
            f"x.shape={shape}."
        )
    dtype, _ = checks.result_type((x, gate, scale), floating=True)
    static = (spec, eps, before, np.dtype(dtype))
    return _gated_rms_norm_jit(static, *(jnp.asarray(a).astype(dtype) for a in (x, gate, scale)))


_gated_rms_norm_checked = checks.checked_once(_gated_rms_norm_impl)
