"""Sparsity schedules: ``step -> sparsity``, and which steps recompute the masks.

A :class:`Schedule` is an optax-style function of the step (``schedule(step)`` is traceable,
like ``optax.polynomial_schedule``) that also says whether a step is an *update step*, one on
which :func:`hadamard_jax.sparse.sparsify` recomputes the masks inside the jitted step.

Counts are exact and follow the library's one rounding rule: every schedule has finitely many
sparsity *levels* (Python floats, the sparsity in effect before the first update and after each
update step); the masks of a parameter with ``n`` prunable units keep
``n - round(level * n)`` of them (``count_of``). The counts are computed once on the host from
these Python floats, so float32 arithmetic inside the step never miscounts;
``schedule(step)`` returns the level in effect at ``step`` as a float32 array.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hadamard_jax._src import checks

Step = ArrayLike


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A sparsity schedule with finitely many levels.

    Attributes:
      levels: the sparsities in effect, ``levels[0]`` from initialisation until the first update
        step, ``levels[i]`` after the ``i``-th update (Python floats in ``[0, 1]``).
      level: ``step -> index into levels`` (jnp-traceable, int32).
      is_update: ``step -> bool``: whether the masks are recomputed at this step (traceable).
      end_step: the last step on which masks change (``None``: no end); RigL's drop fraction
        decays to zero over ``[0, end_step]``.
      name: for messages and ``repr``.
    """

    levels: tuple[float, ...]
    level: Callable[[Step], jax.Array]
    is_update: Callable[[Step], jax.Array]
    end_step: int | None = None
    name: str = "schedule"

    def __call__(self, step: Step) -> jax.Array:
        """The sparsity in effect at ``step`` (after that step's update, if it is one)."""
        table = jnp.asarray(self.levels, jnp.float32)
        return table[self.level(step)]

    def sparsity_at(self, step: int) -> float:
        """The level in effect at a concrete ``step``, as the Python float the counts use."""
        return self.levels[int(self.level(step))]

    def __repr__(self) -> str:
        return f"{self.name}(levels={len(self.levels)}, end_step={self.end_step})"


def _as_step(step: Step) -> jax.Array:
    return jnp.asarray(step, jnp.int32)


def constant(sparsity: float) -> Schedule:
    """A fixed sparsity from initialisation on; masks never recomputed (static sparse training).

    The masks are chosen once: by ``sparsify``'s ``init`` (by magnitude of the initial weights,
    at random, ...), or for ``method="saliency"`` by its first ``update``, which has the first
    gradient (the masks are dense until then). Pass :func:`periodic` to recompute them (e.g.
    RigL, SET).

    Examples:
      >>> from hadamard_jax.sparse import constant
      >>> s = constant(0.9)
      >>> round(float(s(0)), 6), round(float(s(1000)), 6), bool(s.is_update(0))
      (0.9, 0.9, False)
    """
    sparsity = checks.static_fraction(sparsity, "sparsity", "constant")
    return Schedule(
        levels=(sparsity,),
        level=lambda step: jnp.zeros_like(_as_step(step)),
        is_update=lambda step: jnp.zeros(jnp.shape(step), jnp.bool_),
        end_step=0,
        name="constant",
    )


def one_shot(sparsity: float, step: int = 0) -> Schedule:
    """Dense until ``step``, then pruned to ``sparsity`` once at ``step`` (kept thereafter).

    Examples:
      >>> from hadamard_jax.sparse import one_shot
      >>> s = one_shot(0.5, step=10)
      >>> [float(s(t)) for t in (0, 9, 10, 50)], [bool(s.is_update(t)) for t in (9, 10, 11)]
      ([0.0, 0.0, 0.5, 0.5], [False, True, False])
    """
    op = "one_shot"
    sparsity = checks.static_fraction(sparsity, "sparsity", op)
    at = checks.static_int(step, "step", op, 0)
    return Schedule(
        levels=(0.0, sparsity),
        level=lambda t: (_as_step(t) >= at).astype(jnp.int32),
        is_update=lambda t: _as_step(t) == at,
        end_step=at,
        name="one_shot",
    )


def periodic(
    sparsity: float, every: int, *, begin_step: int = 0, end_step: int | None = None
) -> Schedule:
    """A fixed sparsity from initialisation on, masks recomputed every ``every`` steps.

    Update steps are ``begin_step + i * every`` before ``end_step`` (exclusive; ``None``: no
    end). With ``method="rigl"``/``"set"`` these are the drop-and-grow steps; with
    ``"magnitude"`` the mask is re-chosen among the weights at constant sparsity.

    Examples:
      >>> from hadamard_jax.sparse import periodic
      >>> s = periodic(0.8, 100, begin_step=100, end_step=1000)
      >>> [bool(s.is_update(t)) for t in (0, 100, 150, 200, 1000)]
      [False, True, False, True, False]
    """
    op = "periodic"
    sparsity = checks.static_fraction(sparsity, "sparsity", op)
    every = checks.static_int(every, "every", op, 1)
    begin = checks.static_int(begin_step, "begin_step", op, 0)
    end = None if end_step is None else checks.static_int(end_step, "end_step", op, begin)

    def is_update(t: Step) -> jax.Array:
        t = _as_step(t)
        on = (t >= begin) & ((t - begin) % every == 0)
        return on if end is None else on & (t < end)

    return Schedule(
        levels=(sparsity,),
        level=lambda t: jnp.zeros_like(_as_step(t)),
        is_update=is_update,
        end_step=end,
        name="periodic",
    )


def polynomial(
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    *,
    initial: float = 0.0,
    power: float = 3,
    every: int = 1,
) -> Schedule:
    r"""Gradual pruning (Zhu & Gupta 2017): sparsity rises from ``initial`` to ``final_sparsity``.

    At the update steps :math:`t = t_0 + i\,\Delta t` (``begin_step``, ``every``) up to
    ``end_step`` (always an update step) the sparsity becomes

    .. math::
      s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^{p}

    (``p = power``, 3 in the paper) and stays there until the next update step; before
    ``begin_step`` it is ``initial`` (the masks of ``init``), after ``end_step`` ``final_sparsity``.

    Args:
      final_sparsity: :math:`s_f`, static, in ``[0, 1]``.
      begin_step, end_step: :math:`t_0 \le t_1`, static ints.
      initial: :math:`s_i`, static, in ``[0, 1]``.
      power: :math:`p > 0`.
      every: :math:`\Delta t >= 1`, steps between mask updates.

    Examples:
      >>> from hadamard_jax.sparse import polynomial
      >>> s = polynomial(0.9, 0, 100, every=50)
      >>> [round(float(s(t)), 4) for t in (0, 49, 50, 99, 100)]
      [0.0, 0.0, 0.7875, 0.7875, 0.9]
    """
    op = "polynomial"
    final = checks.static_fraction(final_sparsity, "final_sparsity", op)
    initial = checks.static_fraction(initial, "initial", op)
    begin = checks.static_int(begin_step, "begin_step", op, 0)
    end = checks.static_int(end_step, "end_step", op, begin)
    power = checks.static_real(power, "power", op, lambda v: v > 0, "a number > 0")
    every = checks.static_int(every, "every", op, 1)
    span = end - begin
    grid = math.ceil(span / every)  # update steps begin + i * every for i < grid, then end
    updates = [begin + i * every for i in range(grid)] + [end]

    def value(t: int) -> float:
        p = 1.0 if span == 0 else min(1.0, (t - begin) / span)
        return final + (initial - final) * (1.0 - p) ** power

    levels = (initial, *(value(t) for t in updates))

    def level(t: Step) -> jax.Array:
        t = _as_step(t)
        inside = jnp.clip((t - begin) // every, 0, grid - 1) + 1 if grid else jnp.zeros_like(t)
        return jnp.where(t < begin, 0, jnp.where(t >= end, grid + 1, inside)).astype(jnp.int32)

    def is_update(t: Step) -> jax.Array:
        t = _as_step(t)
        on_grid = (t >= begin) & (t < end) & ((t - begin) % every == 0)
        return on_grid | (t == end)

    return Schedule(
        levels=levels, level=level, is_update=is_update, end_step=end, name="polynomial"
    )
