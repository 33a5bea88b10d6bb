"""The static part of :func:`~hadamard_jax.sparse.sparsify`: its checked configuration and the
plan of every parameter (path, shape, stacked axes, pattern, kept units per schedule level).

Everything here depends on shapes and paths only, so it runs at trace time and the plan of a
leaf is a hashable, static argument of the jitted selection (:mod:`._select`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hadamard_jax._src import checks
from hadamard_jax._src.sparsity.patterns import Pattern, Unstructured, as_pattern
from hadamard_jax.sparse._distributions import (
    DISTRIBUTIONS,
    Filter,
    check_overrides,
    layer_sparsities,
)
from hadamard_jax.sparse._schedules import Schedule, constant

#: The ``method=`` choices of :func:`~hadamard_jax.sparse.sparsify`.
METHODS = ("magnitude", "random", "saliency", "rigl", "set")
#: The methods that drop and regrow weights at a constant count (unstructured only).
REGROWING = ("rigl", "set")
OP = "sparsify"


class Rule(NamedTuple):
    """What mask selection needs of the configuration (hashable: a static jit argument)."""

    method: str
    drop_fraction: float
    end_step: int | None


@dataclasses.dataclass(frozen=True)
class Leaf:
    """Static plan of one parameter; ``pattern`` is ``None`` for a parameter left dense."""

    path: str
    shape: tuple[int, ...]
    batch_dims: int
    pattern: Pattern | None
    units: int = 0
    kept: tuple[int, ...] = ()  # kept units per layer at each schedule level

    @property
    def rows(self) -> int:
        """The number of stacked layers."""
        return math.prod(self.shape[: self.batch_dims])


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


def _is_inexact(leaf: Any) -> bool:
    """Whether a parameter leaf has a floating or complex dtype (a pruning candidate)."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = jnp.result_type(leaf)
    return bool(jnp.issubdtype(dtype, jnp.inexact))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A parameter before planning: path, shape, stacked axes, whether it is pruned."""

    path: str
    shape: tuple[int, ...]
    batch_dims: int
    pruned: bool


@dataclasses.dataclass(frozen=True)
class Config:
    """The checked, static configuration of :func:`~hadamard_jax.sparse.sparsify`."""

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
    def rule(self) -> Rule:
        """What mask selection needs (a static jit argument)."""
        return Rule(self.method, self.drop_fraction, self.schedule.end_step)

    def candidate(self, path: Any, leaf: Any) -> Candidate:
        """Which of ``leaf``'s axes are stacked and whether it is pruned."""
        name = path_name(path)
        shape = tuple(int(d) for d in np.shape(leaf))
        b = max(len(shape) - 2, 0) if self.batch_dims is None else self.batch_dims
        # Only inexact (floating, complex) leaves are candidates: integer and bool leaves
        # (index tables, flags) pass through untouched whatever the filter says.
        ok = _is_inexact(leaf) and bool(self.filter(name, shape))
        if ok and self.batch_dims is not None and b >= len(shape):
            raise ValueError(
                f"{OP}: batch_dims={b} leaves no layer axis in {name} of shape {shape} "
                f"(rank {len(shape)}); pass batch_dims < {len(shape)}, batch_dims=None "
                "(ndim - 2 per parameter) or a filter that leaves it out."
            )
        return Candidate(name, shape, b, ok and len(shape) > b)

    def sparsities(self, pruned: list[Candidate]) -> list[list[float]]:
        """``[level][leaf]``: each pruned parameter's sparsity at each schedule level."""
        levels = self.schedule.levels
        top = max(levels) if levels else 0.0
        out = []
        for s in levels:
            scaled = {k: (v * s / top if top else 0.0) for k, v in self.overrides}
            out.append(
                layer_sparsities(
                    [c.path for c in pruned],
                    [c.shape[c.batch_dims :] for c in pruned],
                    s,
                    self.distribution,
                    scaled,
                    [math.prod(c.shape[: c.batch_dims]) for c in pruned],
                )
            )
        return out

    def plan(self, params: Any) -> tuple[list[Leaf], Any]:
        """The static plan of every leaf of ``params`` (shapes and paths only)."""
        with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
        found = [self.candidate(path, leaf) for path, leaf in with_path]
        pruned = [c for c in found if c.pruned]
        per_level = self.sparsities(pruned)
        leaves, j = [], 0
        for c in found:
            if not c.pruned:
                leaves.append(Leaf(c.path, c.shape, c.batch_dims, None))
                continue
            op = f"{OP} ({c.path})"
            pattern = self.pattern.check(c.shape, c.batch_dims, op, array="param")
            units = pattern.units(c.shape, c.batch_dims)
            kept = tuple(pattern.kept(level[j], units, op) for level in per_level)
            leaves.append(Leaf(c.path, c.shape, c.batch_dims, pattern, units, kept))
            j += 1
        return leaves, treedef


def _check_filter(filter: Any) -> Filter:
    if not callable(filter):
        raise TypeError(
            f"{OP}: filter must be a callable (path, shape) -> bool, got "
            f"{type(filter).__name__}; the default is hadamard_jax.sparse.default_filter."
        )
    return filter  # type: ignore[return-value]


def _check_schedule(schedule: Any) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    try:
        return constant(schedule)
    except (TypeError, ValueError) as err:
        raise type(err)(
            f"{OP}: schedule must be a Schedule or a constant sparsity in [0, 1], got "
            f"{schedule!r:.60} ({err})"
        ) from None


def make_config(
    *,
    method: Any,
    schedule: Any,
    distribution: Any,
    pattern: Any,
    overrides: Any,
    filter: Any,
    batch_dims: Any,
    drop_fraction: Any,
    pack: Any,
    skip: Any,
) -> Config:
    """The checked, static configuration of :func:`~hadamard_jax.sparse.sparsify`."""
    method = checks.check_choice(method, "method", OP, METHODS)
    distribution = checks.check_choice(distribution, "distribution", OP, DISTRIBUTIONS)
    schedule = _check_schedule(schedule)
    pattern = as_pattern(pattern, "pattern", OP)
    if method in REGROWING:
        if not isinstance(pattern, Unstructured):
            raise ValueError(f"{OP}: method={method!r} supports pattern='unstructured' only.")
        if len(set(schedule.levels)) != 1:
            raise ValueError(
                f"{OP}: method={method!r} keeps the sparsity constant; pass a single-level "
                f"schedule (periodic(sparsity, every, end_step=...)), got {schedule!r}."
            )
    if batch_dims is not None:
        batch_dims = checks.static_int(batch_dims, "batch_dims", OP, 0)
    return Config(
        method=method,
        schedule=schedule,
        distribution=distribution,
        pattern=pattern,
        overrides=tuple(check_overrides(overrides, OP).items()),
        filter=_check_filter(filter),
        batch_dims=batch_dims,
        drop_fraction=checks.static_fraction(drop_fraction, "drop_fraction", OP),
        pack=checks.check_bool(pack, "pack", OP),
        skip_update_on_mask_step=checks.check_bool(skip, "skip_update_on_mask_step", OP),
    )
