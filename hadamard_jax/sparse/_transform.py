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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.core import Tracer

from hadamard_jax._src import checks, docstrings
from hadamard_jax._src.mask_packing import pack_bits, unpack_bits
from hadamard_jax._src.sparsity.patterns import Pattern, table
from hadamard_jax.sparse._distributions import Filter, default_filter
from hadamard_jax.sparse._plan import OP, REGROWING, Config, Leaf, make_config
from hadamard_jax.sparse._reset import reset_where
from hadamard_jax.sparse._schedules import Schedule
from hadamard_jax.sparse._select import explicit_spec, select_jit, select_sharded

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


# --- the transformation -------------------------------------------------------------------------


def _check_tx(tx: Any) -> None:
    if callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None)):
        return
    hint = ""
    if callable(tx):
        name = getattr(tx, "__name__", type(tx).__name__)
        hint = f" (a factory: call it, e.g. optax.{name}(learning_rate))"
    raise TypeError(
        f"{OP}: tx must be an optax GradientTransformation (with init and update), got "
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
    spec = explicit_spec(mask)
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
    pattern: Pattern | str = "unstructured",
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
    * These three take any schedule and any ``pattern`` (the pattern object, or its name where
      it needs no arguments):

      {{PATTERNS}}

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
      pattern: what is pruned whole (above; default ``"unstructured"``, the same as
        ``Unstructured()``); ``NM(2, 4)`` groups along each layer's input axis, the library's
        N:M convention (:func:`hadamard_jax.nm_mask`). A pattern's ``axis`` is an axis of the
        layer (after ``batch_dims``).
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
    cfg = make_config(
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
    seed = checks.static_int(seed, "seed", OP)
    # Param shardings seen by init (committed parameters only): update pins each mask to its
    # parameter's sharding under Auto mesh axes, where a traced value does not carry one.
    shardings: dict[int, Any] = {}

    def init_fn(params: Any) -> SparseState:
        return _init(cfg, tx, seed, shardings, params)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return _update(cfg, tx, shardings, updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


docstrings.fill_in(sparsify, PATTERNS=table())


def _store(cfg: Config, mask: jax.Array) -> jax.Array:
    return pack_bits(_replicated(mask)) if cfg.pack else mask


def _load(cfg: Config, leaf: Leaf, stored: jax.Array, param: Any) -> jax.Array:
    """The bool mask from its stored form; an unpacked mask takes ``param``'s Explicit
    sharding (a packed one is replicated)."""
    if not cfg.pack:
        return stored
    mask = unpack_bits(stored, leaf.shape)
    spec = explicit_spec(jnp.asarray(param))
    return mask if spec is None else jax.sharding.reshard(mask, spec)


def _init(cfg: Config, tx: Any, seed: int, shardings: dict[int, Any], params: Any) -> SparseState:
    """:func:`sparsify`'s ``init``: the first level's masks, counters, key, ``tx.init``."""
    leaves, _ = cfg.plan(params)
    arrays = jax.tree.leaves(params)
    base = jax.random.key(seed)
    level = cfg.schedule.level(0)
    masks = []
    for i, (leaf, p) in enumerate(zip(leaves, arrays)):
        if leaf.pattern is None:
            masks.append(None)
            continue
        if isinstance(p, jax.Array) and not isinstance(p, Tracer) and p.committed:
            shardings[i] = p.sharding
        p = jnp.asarray(p)
        ones = jnp.ones(p.shape, jnp.bool_)
        mask = select_jit(cfg.rule, leaf, p, None, ones, jax.random.fold_in(base, i), level, 0)
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


def _is_mask_step(cfg: Config, step: jax.Array) -> jax.Array:
    """Whether the masks are recomputed at ``step``: the schedule's update steps, and step 0
    for ``"saliency"`` (its first gradient; its masks are dense before)."""
    due = cfg.schedule.is_update(step)
    if cfg.method == "saliency":
        due = due | (step == 0)
    return jnp.asarray(due)


def _new_masks(cfg, shardings, leaves, values, grads, old, key, step, due) -> list[Any]:
    """Every pruned parameter's mask after this step (recomputed under ``lax.cond``)."""
    level = cfg.schedule.level(step)
    live = [i for i, leaf in enumerate(leaves) if leaf.pattern is not None]

    def recompute(_):
        return tuple(
            select_sharded(
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
            f"{OP}: update needs the parameters: call tx.update(grads, state, params) "
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
    grow = cfg.method in REGROWING
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
            m = unpack_bits(m, tuple(np.shape(p)))
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
