"""Mask selection of :func:`~hadamard_jax.sparse.sparsify`: the new mask of one parameter.

Counts come from the schedule inside a jitted step (traced, no recompilation); what is pruned
whole comes from the leaf's pattern (:mod:`hadamard_jax._src.sparsity.patterns`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hadamard_jax._src.sparsity.ranking import keep_largest, rank_key
from hadamard_jax.sparse._plan import Leaf, Rule


def float_score(x: jax.Array) -> jax.Array:
    """``|x|`` as a float (integer keys as float32)."""
    key = rank_key(x, magnitude=True)
    return key if jnp.issubdtype(key.dtype, jnp.floating) else key.astype(jnp.float32)


def select(
    rule: Rule,
    leaf: Leaf,
    param: jax.Array,
    grad: jax.Array | None,
    old: jax.Array,
    key: jax.Array,
    level: jax.Array,
    step: jax.Array,
) -> jax.Array:
    """The new mask of one parameter (traced counts; inside or outside jit)."""
    pattern, shape, b = leaf.pattern, leaf.shape, leaf.batch_dims
    assert pattern is not None
    if rule.method == "saliency":
        if grad is None:
            return jnp.ones(shape, jnp.bool_)  # dense until the first gradient
        param = param * grad.astype(param.dtype)  # scored by |w * grad| below
    kept = jnp.asarray(leaf.kept, jnp.int32)[level]
    if rule.method in ("rigl", "set"):
        return _drop_and_grow(rule, leaf, param, grad, old, key, kept, step)
    if rule.method == "random":
        scores = pattern.random_scores(key, shape, b)
    else:  # magnitude, saliency (param is w * grad)
        scores = pattern.scores(param, b)
    scores = pattern.prefer_kept(scores, old, b)
    return pattern.expand(pattern.keep(scores, kept), shape, b)


def explicit_spec(x: jax.Array) -> Any:
    """The ``PartitionSpec`` of ``x`` if it is sharded over Explicit mesh axes, else ``None``."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    types = getattr(mesh, "axis_types", ())
    if not any(t == jax.sharding.AxisType.Explicit for t in types):
        return None
    return sharding.spec  # type: ignore[union-attr]


def select_sharded(rule: Rule, leaf: Leaf, param, grad, old, key, level, step) -> jax.Array:
    """:func:`select`, whose mask has ``param``'s sharding.

    Under Explicit mesh axes the selection runs with Auto axes (the compiler places the
    per-layer sort: a layer sharded along a stacked axis is ranked where it lives, a layer
    split over devices is gathered one layer at a time) and the mask comes back with the
    parameter's own ``PartitionSpec``. Under Auto axes the caller pins the sharding.
    """
    spec = explicit_spec(param)
    fn = lambda p, g, o, k, lv, st: select(rule, leaf, p, g, o, k, lv, st)  # noqa: E731
    if spec is None:
        return fn(param, grad, old, key, level, step)
    auto: Any = jax.sharding.auto_axes(fn, out_sharding=spec)
    return auto(param, grad, old, key, level, step)


select_jit = jax.jit(select_sharded, static_argnums=(0, 1))


def _drop_fraction(rule: Rule, step: jax.Array) -> jax.Array:
    end = rule.end_step
    if not end:
        return jnp.asarray(rule.drop_fraction, jnp.float32)
    t = jnp.minimum(step, end).astype(jnp.float32) / end
    return rule.drop_fraction * 0.5 * (1.0 + jnp.cos(jnp.pi * t))


def _drop_and_grow(rule, leaf: Leaf, param, grad, old, key, kept, step) -> jax.Array:
    """RigL / SET: drop the ``d`` smallest active weights, grow ``d`` pruned ones."""
    rows = leaf.rows
    flat_old = old.reshape(rows, -1)
    if grad is None:  # initial masks: uniformly random at the target sparsity
        return keep_largest(jax.random.uniform(key, (rows, leaf.units)), kept).reshape(leaf.shape)
    n_drop = jnp.round(_drop_fraction(rule, step) * kept.astype(jnp.float32)).astype(jnp.int32)
    n_drop = jnp.clip(n_drop, 0, kept)
    alive = jnp.where(flat_old, float_score(param.reshape(rows, -1)), -1.0)
    survivors = keep_largest(alive, kept - n_drop)
    if rule.method == "rigl":
        grow_score = float_score(grad.reshape(rows, -1))
    else:
        grow_score = jax.random.uniform(key, (rows, leaf.units))
    grown = keep_largest(jnp.where(survivors, -1.0, grow_score), n_drop)
    return (survivors | grown).reshape(leaf.shape)
