"""``sparsify``: sparse training as an optax ``GradientTransformation``.

The wrapped optimizer sees gradients with the pruned entries zeroed; its updates are then
*selected*, not multiplied::

    update = where(mask, inner_update, -param)

so ``param + update`` is exactly ``0`` for every pruned entry after every step (a newly pruned
weight is set to zero by the step that prunes it, and weight decay or momentum inside the wrapped
optimizer cannot revive a pruned one). On the schedule's update steps the masks are recomputed
inside the jitted step under ``lax.cond``: no recompilation, no host round trip.

Parameters may be any pytree: a plain dict, Linen's ``variables["params"]``, or the
``nnx.State`` that ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes. Identical arrays give
identical masks whichever container holds them (masks depend on the leaves' paths only through
``overrides`` and the filter).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.core import Tracer

from hadamard_jax._src import checks
from hadamard_jax._src.checks import count_of
from hadamard_jax._src.mask_packing import _pack, _unpack
from hadamard_jax._src.pruning import _nm_mask, input_axis, keep_largest, rank_key
from hadamard_jax._src.structured import (
    check_pattern_args,
    expand_units,
    n_units,
    unit_scores,
)
from hadamard_jax.sparse._distributions import (
    DISTRIBUTIONS,
    Filter,
    check_overrides,
    default_filter,
    layer_sparsities,
)
from hadamard_jax.sparse._schedules import Schedule, constant

METHODS = ("magnitude", "random", "saliency", "rigl", "set")
_OP = "sparsify"


# --- patterns -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NM:
    """N:M structure: keep the ``n`` largest of every ``m`` consecutive entries along ``axis``.

    ``axis`` counts in the layer's axes; ``None`` (default) is the library's one N:M
    convention, the layer's *input* axis (``-2`` for a layer of rank >= 2, i.e. the ``in`` of a
    Dense kernel ``(in, out)``, the reduction axis sparse tensor cores want for ``x @ W``;
    ``-1`` for a rank-1 layer), the same default as :func:`hadamard_jax.nm_mask` and
    :func:`hadamard_jax.nnx.prune`. The sparsity is ``1 - n/m``: every nonzero level of the
    schedule must equal it (``one_shot(0.5)`` for 2:4).
    """

    n: int = 2
    m: int = 4
    axis: int | None = None


@dataclasses.dataclass(frozen=True)
class Block:
    """Whole blocks of ``shape`` (one int per layer axis) ranked by the ``pool`` of the score."""

    shape: tuple[int, ...]
    pool: str = "mean"


@dataclasses.dataclass(frozen=True)
class Channel:
    """Whole slices along the layer ``axis`` (``-1``: output units) ranked by an L1/L2 norm."""

    axis: int = -1
    norm: int = 1


Pattern = Any  # "unstructured" | NM | Block | Channel


# --- state --------------------------------------------------------------------------------------


class SparseState(NamedTuple):
    """The state of :func:`sparsify`.

    Attributes:
      step: int32 scalar, the number of updates done (the schedule's step).
      masks: one entry per leaf of the parameters (``jax.tree.leaves`` order): a bool mask of
        the parameter's shape (``True`` = kept; with the parameter's sharding), a ``uint8``
        bit-packed mask with ``pack=True``, or ``None`` for a parameter that is not pruned.
      inner_state: the wrapped optimizer's state.
      key: ``uint32[2]`` raw PRNG key data (random masks, SET's growth).
    """

    step: jax.Array
    masks: tuple[Any, ...]
    inner_state: Any
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """Static plan of one parameter."""

    path: str
    shape: tuple[int, ...]
    batch_dims: int
    kind: str  # "none" | "unstructured" | "block" | "channel" | "nm"
    args: tuple  # sorted items of the pattern arguments
    units: int
    kept: tuple[int, ...]  # kept units per layer at each schedule level


def path_name(path: Sequence[Any]) -> str:
    """``"a/b/kernel"`` from a key path (an ``nnx.Variable``'s own ``.value`` key dropped)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value" and isinstance(path[-1], jax.tree_util.GetAttrKey):
        parts.pop()
    return "/".join(parts)


def _pattern_kind(pattern: Pattern) -> tuple[str, dict[str, Any]]:
    if isinstance(pattern, str):
        checks.check_choice(pattern, "pattern", _OP, ("unstructured",))
        return "unstructured", {}
    if isinstance(pattern, NM):
        return "nm", {"n": pattern.n, "m": pattern.m, "axis": pattern.axis}
    if isinstance(pattern, Block):
        return "block", {"block_shape": pattern.shape, "pool": pattern.pool}
    if isinstance(pattern, Channel):
        return "channel", {"axis": pattern.axis, "norm": pattern.norm}
    raise TypeError(
        f"{_OP}: pattern must be 'unstructured', NM(n, m, axis), Block(shape, pool) or "
        f"Channel(axis, norm), got {type(pattern).__name__}."
    )


@dataclasses.dataclass(frozen=True)
class _Config:
    method: str
    schedule: Schedule
    distribution: str
    pattern: Pattern
    overrides: tuple[tuple[str, float], ...]
    filter: Filter
    batch_dims: int | None
    drop_fraction: float
    pack: bool
    skip_update_on_mask_step: bool = False

    @property
    def rule(self) -> _Rule:
        return _Rule(self.method, self.drop_fraction, self.schedule.end_step)

    def plan(self, params: Any) -> tuple[list[_Leaf], Any]:
        """The static plan of every leaf of ``params`` (shapes and paths only)."""
        with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
        kind, raw_args = _pattern_kind(self.pattern)
        paths, shapes, prunable, bdims = [], [], [], []
        for path, leaf in with_path:
            name = path_name(path)
            shape = tuple(int(d) for d in np.shape(leaf))
            b = max(len(shape) - 2, 0) if self.batch_dims is None else self.batch_dims
            # Only inexact (floating, complex) leaves are candidates: integer and bool leaves
            # (index tables, flags) pass through untouched whatever the filter says.
            ok = _is_inexact(leaf) and bool(self.filter(name, shape))
            if ok and self.batch_dims is not None and b >= len(shape):
                raise ValueError(
                    f"{_OP}: batch_dims={b} leaves no layer axis in {name} of shape {shape} "
                    f"(rank {len(shape)}); pass batch_dims < {len(shape)}, batch_dims=None "
                    "(ndim - 2 per parameter) or a filter that leaves it out."
                )
            ok = ok and len(shape) > b
            paths.append(name)
            shapes.append(shape)
            prunable.append(ok)
            bdims.append(b)
        idx = [i for i, ok in enumerate(prunable) if ok]
        levels = self.schedule.levels
        top = max(levels) if levels else 0.0
        per_level = []
        for s in levels:
            scaled = {k: (v * s / top if top else 0.0) for k, v in self.overrides}
            per_level.append(
                layer_sparsities(
                    [paths[i] for i in idx],
                    [shapes[i][bdims[i] :] for i in idx],
                    s,
                    self.distribution,
                    scaled,
                    [math.prod(shapes[i][: bdims[i]]) for i in idx],
                )
            )
        leaves = []
        for i, (name, shape, b) in enumerate(zip(paths, shapes, bdims)):
            if not prunable[i]:
                leaves.append(_Leaf(name, shape, b, "none", (), 0, ()))
                continue
            j = idx.index(i)
            op = f"{_OP} ({name})"
            if kind == "nm":
                args = _nm_args(raw_args, shape, b, op)
                n, m = args["n"], args["m"]
                for s in (per_level[lvl][j] for lvl in range(len(levels))):
                    if s != 0.0 and not math.isclose(s, 1 - n / m, abs_tol=1e-9):
                        raise ValueError(
                            f"{op}: an {n}:{m} pattern has sparsity {1 - n / m}, but the "
                            f"schedule/distribution asks for {s}; use one_shot({1 - n / m}) "
                            "with distribution='uniform'."
                        )
                units = math.prod(shape[b:])
                kept = tuple(
                    units if per_level[lvl][j] == 0.0 else units * n // m
                    for lvl in range(len(levels))
                )
                leaves.append(_Leaf(name, shape, b, "nm", tuple(sorted(args.items())), units, kept))
                continue
            args = check_pattern_args(kind, shape, b, op, **raw_args)
            units = n_units(kind, shape, b, args)
            kept = tuple(units - count_of(per_level[lvl][j], units) for lvl in range(len(levels)))
            leaves.append(_Leaf(name, shape, b, kind, tuple(sorted(args.items())), units, kept))
        return leaves, treedef


def _is_inexact(leaf: Any) -> bool:
    """Whether a parameter leaf has a floating or complex dtype (a pruning candidate)."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = jnp.result_type(leaf)
    return bool(jnp.issubdtype(dtype, jnp.inexact))


def _nm_args(raw: dict[str, Any], shape: tuple[int, ...], b: int, op: str) -> dict[str, Any]:
    n = checks.static_int(raw["n"], "NM.n", op, 0)
    m = checks.static_int(raw["m"], "NM.m", op, 1)
    if n > m:
        raise ValueError(f"{op}: NM.n must be <= NM.m, got n={n}, m={m}.")
    layer_rank = len(shape) - b
    raw_axis = input_axis(layer_rank) if raw["axis"] is None else raw["axis"]
    axis = checks.check_axis(raw_axis, layer_rank, "NM.axis", op) + b
    if shape[axis] % m:
        raise ValueError(
            f"{op}: NM.m={m} must divide axis {axis} of the parameter's shape {shape}."
        )
    return {"n": n, "m": m, "axis": axis}


# --- mask selection -----------------------------------------------------------------------------


def _float_score(x: jax.Array) -> jax.Array:
    key = rank_key(x, magnitude=True)
    return key if jnp.issubdtype(key.dtype, jnp.floating) else key.astype(jnp.float32)


class _Rule(NamedTuple):
    """What mask selection needs of the configuration (hashable: a static jit argument)."""

    method: str
    drop_fraction: float
    end_step: int | None


def _select(
    cfg: _Rule,
    leaf: _Leaf,
    param: jax.Array,
    grad: jax.Array | None,
    old: jax.Array,
    key: jax.Array,
    level: jax.Array,
    step: jax.Array,
) -> jax.Array:
    """The new mask of one parameter (traced counts; inside or outside jit)."""
    args = dict(leaf.args)
    shape, b = leaf.shape, leaf.batch_dims
    if cfg.method == "saliency":
        if grad is None:
            return jnp.ones(shape, jnp.bool_)  # dense until the first gradient
        param = param * grad.astype(param.dtype)  # scored by |w * grad| below
    rows = math.prod(shape[:b])
    kept = jnp.asarray(leaf.kept, jnp.int32)[level]
    if leaf.kind == "nm":
        score = jax.random.uniform(key, shape) if cfg.method == "random" else param
        nm = _nm_mask(score, args["n"], args["m"], args["axis"])
        return nm | (kept == leaf.units)
    method = cfg.method
    if method in ("rigl", "set"):
        return _drop_and_grow(cfg, leaf, param, grad, old, key, kept, step)
    if method == "random":
        scores = jax.random.uniform(key, (rows, leaf.units))
    else:  # magnitude, saliency (param is w * grad)
        scores = unit_scores(param, leaf.kind, b, args)
    if leaf.kind == "unstructured":
        # Nested masks: a pruned entry ranks below every kept one, so raising the sparsity
        # only prunes more (a stored zero never outranks a live weight that is also zero).
        scores = jnp.where(old.reshape(rows, -1), _float_score(scores), -1.0)
    return expand_units(keep_largest(scores, kept), shape, leaf.kind, b, args)


def _explicit_spec(x: jax.Array) -> Any:
    """The ``PartitionSpec`` of ``x`` if it is sharded over Explicit mesh axes, else ``None``."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    types = getattr(mesh, "axis_types", ())
    if not any(t == jax.sharding.AxisType.Explicit for t in types):
        return None
    return sharding.spec  # type: ignore[union-attr]


def _select_sharded(cfg: _Rule, leaf: _Leaf, param, grad, old, key, level, step) -> jax.Array:
    """:func:`_select`, whose mask has ``param``'s sharding.

    Under Explicit mesh axes the selection runs with Auto axes (the compiler places the
    per-layer sort: a layer sharded along a stacked axis is ranked where it lives, a layer
    split over devices is gathered one layer at a time) and the mask comes back with the
    parameter's own ``PartitionSpec``. Under Auto axes the caller pins the sharding.
    """
    spec = _explicit_spec(param)
    fn = lambda p, g, o, k, lv, st: _select(cfg, leaf, p, g, o, k, lv, st)
    if spec is None:
        return fn(param, grad, old, key, level, step)
    auto: Any = jax.sharding.auto_axes(fn, out_sharding=spec)
    return auto(param, grad, old, key, level, step)


_select_jit = jax.jit(_select_sharded, static_argnums=(0, 1))


def _drop_fraction(cfg: _Rule, step: jax.Array) -> jax.Array:
    end = cfg.end_step
    if not end:
        return jnp.asarray(cfg.drop_fraction, jnp.float32)
    t = jnp.minimum(step, end).astype(jnp.float32) / end
    return cfg.drop_fraction * 0.5 * (1.0 + jnp.cos(jnp.pi * t))


def _drop_and_grow(cfg, leaf, param, grad, old, key, kept, step) -> jax.Array:
    """RigL / SET: drop the ``d`` smallest active weights, grow ``d`` pruned ones."""
    rows = math.prod(leaf.shape[: leaf.batch_dims])
    flat_old = old.reshape(rows, -1)
    if grad is None:  # initial masks: uniformly random at the target sparsity
        return keep_largest(jax.random.uniform(key, (rows, leaf.units)), kept).reshape(leaf.shape)
    n_drop = jnp.round(_drop_fraction(cfg, step) * kept.astype(jnp.float32)).astype(jnp.int32)
    n_drop = jnp.clip(n_drop, 0, kept)
    alive = jnp.where(flat_old, _float_score(param.reshape(rows, -1)), -1.0)
    survivors = keep_largest(alive, kept - n_drop)
    if cfg.method == "rigl":
        grow_score = _float_score(grad.reshape(rows, -1))
    else:
        grow_score = jax.random.uniform(key, (rows, leaf.units))
    grown = keep_largest(jnp.where(survivors, -1.0, grow_score), n_drop)
    return (survivors | grown).reshape(leaf.shape)


# --- the transformation -------------------------------------------------------------------------


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _reset_leaf(leaf: Any, r: Any) -> Any:
    """``leaf`` with zeros where ``r`` is True, if it is a per-parameter leaf of ``r``'s shape."""
    if r is None or not hasattr(leaf, "shape") or tuple(leaf.shape) != tuple(r.shape):
        return leaf
    return jnp.where(r, jnp.zeros((), leaf.dtype), leaf)


def _reset_by_optax(tx: Any, inner_state: Any, index: Any, regrown: list[Any]) -> Any:
    """The reset through ``optax.tree_utils.tree_map_params``: optax's own notion of which
    subtrees of the state are copies of the parameters (it inits ``tx`` on a placeholder), with
    ``optax.MaskedNode`` (``masked``, ``multi_transform``) taken as a leaf and left alone."""

    def reset(value: Any, i: Any) -> Any:
        return value if _is_masked_node(value) else _reset_leaf(value, regrown[i])

    return optax.tree_utils.tree_map_params(tx, reset, inner_state, index, is_leaf=_is_masked_node)


def _reset_by_path(inner_state: Any, index: Any, regrown: list[Any]) -> Any:
    """The reset by key paths: a state leaf whose key path ends with a parameter's key path
    (the longest such) and has its shape is that parameter's state (``...mu['dense']['kernel']``
    for ``['dense']['kernel']``), whatever wrappers lie above it."""
    owner = {tuple(path): i for path, i in jax.tree_util.tree_flatten_with_path(index)[0]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(inner_state, is_leaf=_is_masked_node)
    out = []
    for path, leaf in flat:
        path = tuple(path)
        i = next((owner[path[k:]] for k in range(len(path) + 1) if path[k:] in owner), None)
        out.append(leaf if i is None else _reset_leaf(leaf, regrown[i]))
    return treedef.unflatten(out)


def reset_where(
    inner_state: Any, params_treedef: Any, regrown: Sequence[Any], *, tx: Any = None
) -> Any:
    """Zeroes the wrapped optimizer's per-parameter state at ``regrown`` positions.

    A leaf of ``inner_state`` that belongs to parameter ``i`` (adam's ``mu``/``nu``, momentum's
    ``trace``, ``MultiSteps``' accumulated gradients, ...) and has its shape is set to zero
    where ``regrown[i]`` is True. Other leaves (counts, hyperparameters, factored second
    moments of another shape) are left as they are. Which leaf belongs to which parameter
    survives optax's wrappers (``chain``, ``masked``, ``multi_transform``, ``MultiSteps``,
    ``inject_hyperparams``, ``apply_if_finite``, ...):

    * with ``tx`` (the optimizer whose state it is): ``optax.tree_utils.tree_map_params``,
      optax's own map over the copies of the parameters inside a state (``MaskedNode``
      entries of ``masked``/``multi_transform`` skipped);
    * without ``tx``, or if ``tx.init`` cannot run on optax's placeholder: by key path, a state
      leaf whose path ends with parameter ``i``'s path (``...mu['dense']['kernel']``).

    A state that keeps no per-parameter tree (``optax.flatten``'s one flat vector) is left as
    it is.

    Args:
      inner_state: the wrapped optimizer's state.
      params_treedef: the parameters' tree structure (``jax.tree.structure(params)``) or the
        parameters themselves.
      regrown: one entry per parameter leaf (``jax.tree.leaves`` order): a bool array of the
        parameter's shape, or ``None`` (nothing to reset).
      tx: optional, the optimizer (``GradientTransformation``) that made ``inner_state``.

    Returns:
      ``inner_state`` with the same structure.
    """
    if not isinstance(params_treedef, jax.tree_util.PyTreeDef):
        params_treedef = jax.tree.structure(params_treedef)
    regrown = list(regrown)
    index = params_treedef.unflatten(range(params_treedef.num_leaves))
    if tx is not None:
        try:
            return _reset_by_optax(tx, inner_state, index, regrown)
        except Exception:  # an init that does not run on optax's placeholder: by path
            pass
    return _reset_by_path(inner_state, index, regrown)


def _check_filter(filter: Any) -> Filter:
    if not callable(filter):
        raise TypeError(
            f"{_OP}: filter must be a callable (path, shape) -> bool, got "
            f"{type(filter).__name__}; the default is hadamard_jax.sparse.default_filter."
        )
    return filter  # type: ignore[return-value]


def _check_tx(tx: Any) -> None:
    if callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None)):
        return
    hint = ""
    if callable(tx):
        name = getattr(tx, "__name__", type(tx).__name__)
        hint = f" (a factory: call it, e.g. optax.{name}(learning_rate))"
    raise TypeError(
        f"{_OP}: tx must be an optax GradientTransformation (with init and update), got "
        f"{type(tx).__name__}{hint}."
    )


def _commit_target(params: Any) -> Any:
    """Where the state's unplaced leaves go: the mesh (or the one device) of the first
    committed parameter, or ``None`` when no parameter is committed (then nothing is)."""
    for p in jax.tree.leaves(params):
        if not isinstance(p, jax.Array) or isinstance(p, Tracer) or not p.committed:
            continue
        sharding = p.sharding
        if isinstance(sharding, jax.sharding.NamedSharding):
            return sharding.mesh
        if len(sharding.device_set) == 1:
            return jax.sharding.SingleDeviceSharding(next(iter(sharding.device_set)))
        return None
    return None


def _place_alike(state: Any, target: Any) -> Any:
    """Commits every concrete leaf of ``state`` as a jitted step's outputs will be: an
    uncommitted leaf to ``target`` (replicated over a mesh), and over a mesh every
    ``PartitionSpec`` spelled as the step's outputs are (:func:`_spelled`; ``P()`` and
    ``P(None)`` are equal layouts but distinct cache keys), so the step compiles once."""
    if target is None:
        return state

    def place(x: Any) -> Any:
        if not isinstance(x, jax.Array) or isinstance(x, Tracer):
            return x
        sharding = x.sharding if x.committed else target
        if isinstance(sharding, jax.sharding.Mesh):
            sharding = jax.sharding.NamedSharding(sharding, jax.sharding.PartitionSpec())
        if isinstance(sharding, jax.sharding.NamedSharding):
            sharding = jax.sharding.NamedSharding(sharding.mesh, _spelled(sharding, x.ndim))
        if x.committed and sharding == x.sharding:
            return x
        return jax.device_put(x, sharding)

    return jax.tree.map(place, state)


def _spelled(sharding: jax.sharding.NamedSharding, ndim: int) -> Any:
    """``sharding``'s spec as a jitted step spells its outputs: one entry per axis under
    Explicit mesh axes (``P(None)``), no trailing ``None`` under Auto ones (``P()``)."""
    spec = list(sharding.spec)
    if any(t == jax.sharding.AxisType.Explicit for t in sharding.mesh.axis_types):
        spec += [None] * (ndim - len(spec))
    else:
        while spec and spec[-1] is None:
            spec.pop()
    return jax.sharding.PartitionSpec(*spec)


def _replicated(mask: jax.Array) -> jax.Array:
    """``mask`` resharded to replicated if it is sharded over Explicit mesh axes (a packed
    mask is flat: it cannot keep the parameter's ``PartitionSpec``)."""
    spec = _explicit_spec(mask)
    if spec is None or all(s is None for s in spec):
        return mask
    return jax.sharding.reshard(mask, jax.sharding.PartitionSpec())


def _skip_on(skip: jax.Array, updates: Any, new_state: Any, old_state: Any) -> tuple[Any, Any]:
    """``(0, old_state)`` where ``skip`` is True, else ``(updates, new_state)``."""
    updates = jax.tree.map(lambda u: jnp.where(skip, jnp.zeros((), u.dtype), u), updates)
    state = jax.tree.map(lambda new, old: jnp.where(skip, old, new), new_state, old_state)
    return updates, state


def sparsify(
    tx: optax.GradientTransformation,
    *,
    method: str = "magnitude",
    schedule: Schedule | float,
    distribution: str = "uniform",
    pattern: Pattern = "unstructured",
    overrides: dict[str, float] | None = None,
    filter: Filter = default_filter,
    batch_dims: int | None = None,
    drop_fraction: float = 0.3,
    seed: int = 0,
    pack: bool = False,
    skip_update_on_mask_step: bool = False,
) -> optax.GradientTransformation:
    r"""Wraps ``tx`` so that it trains a sparse network: masks in the state, pruned weights zero.

    Each step, with ``m`` the masks after this step's (possible) update:

    .. math::
      g' = m \odot g, \qquad (u, s') = \mathrm{tx.update}(g', s, p), \qquad
      \mathrm{update} = \mathrm{where}(m, u, -p)

    so ``optax.apply_updates`` leaves every pruned entry exactly ``0``. Put ``sparsify``
    outermost (weight decay, clipping and learning-rate schedules inside ``tx``).

    Which parameters are pruned: the inexact (floating or complex) leaves that ``filter``
    accepts and that have a layer axis beyond ``batch_dims``. Integer and boolean leaves (an
    embedding index table, a frozen lookup, a flag) are never pruned: their gradients (also
    ``float0`` ones) go to ``tx`` and its updates come back untouched.

    Methods (how masks are chosen on the schedule's update steps, and at ``init`` for the
    schedule's first level):

    * ``"magnitude"``: the smallest ``|w|`` are pruned (per layer; pruned entries rank below
      live ones, so a rising schedule only prunes more); ``"random"``: uniformly at random.
    * ``"saliency"``: the smallest first-order saliency ``|w * grad|``. ``init`` has no
      gradient, so its masks are dense; the first ``update`` (step 0, whatever the schedule)
      computes the masks from ``|w * grad|`` at the level in effect, and each later update
      step of the schedule from that step's gradient. (A constant or step-0 schedule thus
      prunes by saliency at step 0, never by magnitude.)
    * These three take any schedule and any ``pattern``: ``"unstructured"``, :class:`NM`,
      :class:`Block`, :class:`Channel`.
    * ``"rigl"`` (Evci et al. 2020): random initial masks; on each update step drop the
      ``d = round(f_t k)`` active weights of smallest ``|w|`` and grow the ``d`` pruned ones of
      largest ``|grad|`` (ties: smaller index), ``f_t = drop_fraction (1 + cos(pi t / T)) / 2``
      with ``T = schedule.end_step``. ``"set"`` (Mocanu et al. 2018): the same with random
      growth. The count ``k`` of each layer never changes. Regrown weights start at exactly 0:
      their update on the growth step is ``0`` and the wrapped optimizer's per-parameter state
      (adam's ``mu``/``nu``, momentum's ``trace``, ...) is reset to 0 at their positions,
      inside any optax wrapper (:func:`reset_where`). They need the dense gradient:
      differentiate the loss in the stored parameters (pruned ones are stored zeros), as
      ``nnx.grad``/``jax.grad`` on the model do. Unstructured only; the schedule must have a
      single level (:func:`~hadamard_jax.sparse.periodic`).

    On a mask-update step ``tx`` still takes its step by default (``skip_update_on_mask_step=
    False``, so the gradient of that batch is used and results do not depend on where the
    update steps fall). jaxpruner's RigL and SET skip it: with ``skip_update_on_mask_step=True``
    the wrapped optimizer's update on a mask-update step is replaced by ``0`` and its state is
    kept as it was (after the reset of regrown weights): kept weights do not move, newly
    pruned ones are set to 0. Use it to reproduce jaxpruner's runs.

    Args:
      tx: the optimizer to wrap, an ``optax.GradientTransformation`` (``optax.adam(1e-3)``,
        not the factory ``optax.adam``).
      method: ``"magnitude"``, ``"random"``, ``"saliency"``, ``"rigl"`` or ``"set"``.
      schedule: a :class:`~hadamard_jax.sparse.Schedule`, or a number (``constant``).
      distribution: ``"uniform"`` or ``"erk"`` (per-parameter sparsities).
      pattern: ``"unstructured"`` or :class:`NM`/:class:`Block`/:class:`Channel`
        (``NM(2, 4)`` groups along each layer's input axis, the library's N:M convention,
        :func:`hadamard_jax.nm_mask`).
      overrides: ``{path regex: sparsity}`` at the schedule's largest level (scaled with it).
      filter: ``(path, shape) -> bool``, which inexact parameters are pruned
        (:func:`~hadamard_jax.sparse.default_filter`: kernels of rank >= 2).
      batch_dims: leading axes of a parameter that index stacked layers, ranked separately;
        ``None``: ``ndim - 2`` (a kernel ``[*stack, in, out]``). An int must be below the rank
        of every parameter the filter accepts.
      drop_fraction: RigL/SET's initial drop fraction, in ``[0, 1]``.
      seed: seeds the random masks and SET's growth.
      pack: store masks bit-packed (``uint8``, 1 bit per entry, unpacked in each step; a
        packed mask is flat and replicated, also under a mesh with Explicit axes, so prefer
        ``pack=False`` for parameters sharded over many devices).
      skip_update_on_mask_step: skip the wrapped optimizer's step on mask-update steps
        (jaxpruner's RigL/SET default); ``False`` (default) keeps it.

    Returns:
      An ``optax.GradientTransformation`` with :class:`SparseState`. Its ``update`` needs
      ``params``. Every leaf of the state ``init`` returns is placed alike: where the
      parameters are committed to devices, masks take their parameter's sharding and every
      other leaf (counters, key, the wrapped optimizer's state) is committed replicated on the
      same devices, so a jitted train step compiles once.

    Raises:
      TypeError: ``tx`` not a ``GradientTransformation`` (e.g. the factory ``optax.adam``),
        ``filter`` not callable, a non-bool ``pack``/``skip_update_on_mask_step``.
      ValueError: unknown method/distribution, a pattern that does not fit a parameter (naming
        it), an ``overrides`` key that is not a valid regex, ``batch_dims`` not below a pruned
        parameter's rank, RigL/SET with a multi-level schedule or a structured pattern;
        ``update`` without ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from hadamard_jax.sparse import sparsify, one_shot, masks_of
      >>> params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4), "b": jnp.ones(4)}
      >>> tx = sparsify(optax.sgd(0.1), method="magnitude", schedule=one_shot(0.5))
      >>> state = tx.init(params)
      >>> grads = {"w": jnp.ones((2, 4)), "b": jnp.ones(4)}
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([[0. , 0. , 0. , 0. ],
             [4.9, 5.9, 6.9, 7.9]], dtype=float32)
      >>> masks_of(state, params)["b"] is None  # biases are not pruned
      True
    """
    _check_tx(tx)
    cfg = _make_config(
        method=method,
        schedule=schedule,
        distribution=distribution,
        pattern=pattern,
        overrides=overrides,
        filter=filter,
        batch_dims=batch_dims,
        drop_fraction=drop_fraction,
        pack=pack,
        skip=skip_update_on_mask_step,
    )
    seed = checks.static_int(seed, "seed", _OP)
    # Param shardings seen by init (committed parameters only): update pins each mask to its
    # parameter's sharding under Auto mesh axes, where a traced value does not carry one.
    shardings: dict[int, Any] = {}

    def init_fn(params: Any) -> SparseState:
        return _init(cfg, tx, seed, shardings, params)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return _update(cfg, tx, shardings, updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


def _make_config(
    *,
    method,
    schedule,
    distribution,
    pattern,
    overrides,
    filter: Any,
    batch_dims,
    drop_fraction,
    pack,
    skip,
) -> _Config:
    """The checked, static configuration of :func:`sparsify`."""
    method = checks.check_choice(method, "method", _OP, METHODS)
    distribution = checks.check_choice(distribution, "distribution", _OP, DISTRIBUTIONS)
    if not isinstance(schedule, Schedule):
        try:
            schedule = constant(schedule)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{_OP}: schedule must be a Schedule or a constant sparsity in [0, 1], got "
                f"{schedule!r:.60} ({err})"
            ) from None
    kind, _ = _pattern_kind(pattern)
    if method in ("rigl", "set"):
        if kind != "unstructured":
            raise ValueError(f"{_OP}: method={method!r} supports pattern='unstructured' only.")
        if len(set(schedule.levels)) != 1:
            raise ValueError(
                f"{_OP}: method={method!r} keeps the sparsity constant; pass a single-level "
                f"schedule (periodic(sparsity, every, end_step=...)), got {schedule!r}."
            )
    if batch_dims is not None:
        batch_dims = checks.static_int(batch_dims, "batch_dims", _OP, 0)
    return _Config(
        method=method,
        schedule=schedule,
        distribution=distribution,
        pattern=pattern,
        overrides=tuple(check_overrides(overrides, _OP).items()),
        filter=_check_filter(filter),
        batch_dims=batch_dims,
        drop_fraction=checks.static_fraction(drop_fraction, "drop_fraction", _OP),
        pack=checks.check_bool(pack, "pack", _OP),
        skip_update_on_mask_step=checks.check_bool(skip, "skip_update_on_mask_step", _OP),
    )


def _store(cfg: _Config, mask: jax.Array) -> jax.Array:
    return _pack(_replicated(mask)) if cfg.pack else mask


def _load(cfg: _Config, leaf: _Leaf, stored: jax.Array, param: Any) -> jax.Array:
    """The bool mask from its stored form; an unpacked mask takes ``param``'s Explicit
    sharding (a packed one is replicated)."""
    if not cfg.pack:
        return stored
    mask = _unpack(stored, leaf.shape)
    spec = _explicit_spec(jnp.asarray(param))
    return mask if spec is None else jax.sharding.reshard(mask, spec)


def _init(cfg: _Config, tx: Any, seed: int, shardings: dict[int, Any], params: Any) -> SparseState:
    """:func:`sparsify`'s ``init``: the first level's masks, counters, key, ``tx.init``."""
    leaves, _ = cfg.plan(params)
    arrays = jax.tree.leaves(params)
    base = jax.random.key(seed)
    level = cfg.schedule.level(0)
    masks = []
    for i, (leaf, p) in enumerate(zip(leaves, arrays)):
        if leaf.kind == "none":
            masks.append(None)
            continue
        if isinstance(p, jax.Array) and not isinstance(p, Tracer) and p.committed:
            shardings[i] = p.sharding
        p = jnp.asarray(p)
        ones = jnp.ones(p.shape, jnp.bool_)
        mask = _select_jit(cfg.rule, leaf, p, None, ones, jax.random.fold_in(base, i), level, 0)
        if i in shardings:
            mask = jax.device_put(mask, shardings[i])
        masks.append(_store(cfg, mask))
    state = SparseState(
        step=jnp.zeros((), jnp.int32),
        masks=tuple(masks),
        inner_state=tx.init(params),
        key=jax.random.key_data(jax.random.split(base)[1]),
    )
    return _place_alike(state, _commit_target(params))


def _is_mask_step(cfg: _Config, step: jax.Array) -> jax.Array:
    """Whether the masks are recomputed at ``step``: the schedule's update steps, and step 0
    for ``"saliency"`` (its first gradient; its masks are dense before)."""
    due = cfg.schedule.is_update(step)
    if cfg.method == "saliency":
        due = due | (step == 0)
    return jnp.asarray(due)


def _new_masks(cfg, shardings, leaves, values, grads, old, key, step, due) -> list[Any]:
    """Every pruned parameter's mask after this step (recomputed under ``lax.cond``)."""
    level = cfg.schedule.level(step)
    live = [i for i, leaf in enumerate(leaves) if leaf.kind != "none"]

    def recompute(_):
        return tuple(
            _select_sharded(
                cfg.rule,
                leaves[i],
                values[i],
                grads[i],
                old[i],
                jax.random.fold_in(key, i),
                level,
                step,
            )
            for i in live
        )

    new_live = lax.cond(due, recompute, lambda _: tuple(old[i] for i in live), None)
    new: list[Any] = [None] * len(leaves)
    for i, m in zip(live, new_live):
        if i in shardings and isinstance(shardings[i], jax.sharding.NamedSharding):
            m = lax.with_sharding_constraint(m, shardings[i])
        new[i] = m
    return new


def _update(cfg, tx, shardings, updates, state, params) -> tuple[Any, SparseState]:
    """:func:`sparsify`'s ``update``."""
    if params is None:
        raise ValueError(
            f"{_OP}: update needs the parameters: call tx.update(grads, state, params) "
            "(pruned weights are set to zero through the update, update = -param)."
        )
    leaves, treedef = cfg.plan(params)
    grads = treedef.flatten_up_to(updates)
    values = treedef.flatten_up_to(params)
    old = [
        None if m is None else _load(cfg, leaf, m, p)
        for leaf, m, p in zip(leaves, state.masks, values)
    ]
    step = state.step
    key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
    due = _is_mask_step(cfg, step)
    new = _new_masks(cfg, shardings, leaves, values, grads, old, sub, step, due)
    # Entries whose update passes through: kept, and (RigL/SET) not regrown this step.
    grow = cfg.method in ("rigl", "set")
    through = [None if n is None else (n & o if grow else n) for n, o in zip(new, old)]
    inner_state = state.inner_state
    if grow:
        regrown = [None if n is None or o is None else n & ~o for n, o in zip(new, old)]
        inner_state = reset_where(inner_state, treedef, regrown, tx=tx)
    masked = [
        g if t is None else jnp.where(t, g, jnp.zeros((), g.dtype)) for g, t in zip(grads, through)
    ]
    inner_updates, new_inner = tx.update(treedef.unflatten(masked), inner_state, params)
    if cfg.skip_update_on_mask_step:
        inner_updates, new_inner = _skip_on(due, inner_updates, new_inner, inner_state)
    out = [
        u if t is None else jnp.where(t, u, -jnp.asarray(p).astype(u.dtype))
        for u, p, t in zip(treedef.flatten_up_to(inner_updates), values, through)
    ]
    stored = tuple(None if m is None else _store(cfg, m) for m in new)
    return treedef.unflatten(out), SparseState(
        step=step + 1,
        masks=stored,
        inner_state=new_inner,
        key=jax.random.key_data(key),
    )


# --- reading the state --------------------------------------------------------------------------


def _find_state(state: Any) -> SparseState:
    if isinstance(state, SparseState):
        return state
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, SparseState))
        if isinstance(s, SparseState)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one SparseState in the optimizer state, found {len(found)}.")
    return found[0]


def masks_of(state: Any, params: Any) -> Any:
    """The masks as a pytree like ``params``: a bool mask per pruned leaf, ``None`` elsewhere.

    ``state`` is :func:`sparsify`'s state (or an optimizer state containing one, e.g.
    ``nnx.Optimizer.opt_state`` after ``nnx.as_pure``).
    """
    sparse = _find_state(state)
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for p, m in zip(leaves, sparse.masks):
        if m is not None and m.dtype == jnp.uint8 and m.shape != np.shape(p):
            m = _unpack(m, tuple(np.shape(p)))
        out.append(m)
    return treedef.unflatten(out)


def apply_masks(params: Any, state: Any) -> Any:
    """``params`` with every pruned entry set to exactly zero (e.g. right after ``init``)."""
    masks = jax.tree.leaves(masks_of(state, params), is_leaf=lambda x: x is None)
    leaves, treedef = jax.tree.flatten(params)
    return treedef.unflatten(
        [
            p if m is None else jnp.where(m, p, jnp.zeros((), jnp.asarray(p).dtype))
            for p, m in zip(leaves, masks)
        ]
    )


def sparsity_of(state: Any) -> float:
    """The fraction of pruned entries over all pruned parameters (masks of ``state``)."""
    sparse = _find_state(state)
    total = kept = 0
    for m in sparse.masks:
        if m is None:
            continue
        if m.dtype == jnp.uint8:
            raise ValueError("sparsity_of: packed masks; use masks_of(state, params).")
        total += m.size
        kept += int(jnp.sum(m))
    return 1.0 - kept / total if total else 0.0
