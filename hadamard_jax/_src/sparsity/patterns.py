"""Mask patterns: what a pruning mask removes whole, one object per kind of structure.

A pattern is a frozen (hashable) dataclass; every entry point that prunes takes the same objects
with the same defaults: the mask makers (:func:`hadamard_jax.nm_mask`, ...), ``prune``
(:func:`hadamard_jax.nnx.prune`, :func:`hadamard_jax.linen.prune`) and
:func:`hadamard_jax.sparse.sparsify`. Each pattern splits an array ``[*stack, *layer]`` (the
leading ``batch_dims`` axes index separate layers) into *units*, the things pruned whole:

{{PATTERNS}}

A mask is computed in four steps, each a method, so that a caller with its own scores or counts
(a schedule's traced count inside a jitted step) reuses the parts:

1. :meth:`Pattern.check` validates the pattern against a shape and returns it resolved
   (axes made non-negative, sizes made tuples of ints); errors name the argument and the shape;
2. :meth:`Pattern.scores` pools ``|x|`` into one score per unit, ``(n_layers, n_units)``: the
   magnitude default of :meth:`Pattern.unit_scores`, which pools any per-entry key (larger
   ranks higher);
3. :meth:`Pattern.keep` keeps the ``kept`` best units of each layer (exact counts; ties: the
   smaller unit index is kept first);
4. :meth:`Pattern.expand` turns the unit mask back into an element mask of the array's shape.

:meth:`Pattern.top` runs steps 2-4 on given scores ranked by *value* (learned scores, as
:func:`hadamard_jax.ste_mask` and ``MaskedLinear(mask_type="ste", pattern=...)`` rank them):
the pooling is monotone in every score, so a larger score never lowers its unit's rank.

**Axes.** A pattern's ``axis`` is an axis of the *layer* (``x.shape[batch_dims:]``); a negative
axis counts from the end, so it is also an axis of ``x``. The N:M default (``axis=None``) is the
library's one N:M convention, the layer's input axis (:func:`input_axis`).

A new pattern is one subclass here with a ``name`` (``check``, ``units``, ``unit_scores``,
``expand``; ``keep`` and ``kept`` when it does not prune a fraction of its units): it registers
itself, so strings, messages and the docstrings that list the patterns pick it up; then export
it from ``hadamard_jax/__init__.py`` (and document it in ``docs/api/hadamard_jax.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from hadamard_jax._src import checks, docstrings
from hadamard_jax._src.checks import Shape, count_of
from hadamard_jax._src.sparsity.ranking import check_batch_dims, keep_largest, rank_key

Names = Mapping[str, str]

#: The ``pool=`` choices of :class:`Block`.
POOLS = ("mean", "max")
#: The ``norm=`` choices of :class:`Channel`.
NORMS = (1, 2)


def input_axis(layer_rank: int) -> int:
    """The default N:M group axis of a layer of rank ``layer_rank``: its input axis.

    ``-2`` for rank >= 2 (the ``in`` of a kernel ``[in, out]``), ``-1`` for rank 1: the one
    N:M convention of the library.
    """
    return -2 if layer_rank >= 2 else -1


def _rows(shape: Shape, batch_dims: int) -> int:
    return math.prod(shape[:batch_dims])


def _float_key(key: jax.Array) -> jax.Array:
    """A rank key as a float (float32 at least) for pooling; NaN kept."""
    dtype = jnp.promote_types(key.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return key.astype(dtype)


def _layer_axis(axis: Any, shape: Shape, batch_dims: int, name: str, op: str, array: str) -> int:
    """A layer axis as a non-negative index into the layer ``shape[batch_dims:]``."""
    rank = len(shape) - batch_dims
    if rank == 0:
        raise ValueError(
            f"{op}: batch_dims={batch_dims} leaves no layer axis of {array}.shape={shape}."
        )
    return checks.check_axis(axis, rank, name, op)


#: Every pattern class, by its string name, in definition order: the one place strings map to
#: objects (:func:`as_pattern`). A subclass with a ``name`` registers itself.
PATTERNS: dict[str, type[Pattern]] = {}


@dataclasses.dataclass(frozen=True)
class Pattern:
    """The interface of a mask pattern (see the module docstring). Not used directly."""

    #: The pattern's name as a string argument (``pattern="unstructured"``).
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            PATTERNS[cls.name] = cls

    def validate(self, op: str = "mask", **kw: Any) -> Pattern:
        """This pattern with the fields that need no shape checked (:class:`NM`'s ``n``,
        ``m``); keywords as :meth:`check`."""
        return self

    def check(self, shape: Shape, batch_dims: int = 0, op: str = "mask", **kw: Any) -> Pattern:
        """This pattern resolved for an array of ``shape``; raises naming the argument.

        Keyword ``names`` maps a field to the name used in messages (default
        ``"<Class>.<field>"``), ``array`` names the array (default ``"x"``).
        """
        return self

    def units(self, shape: Shape, batch_dims: int = 0) -> int:
        """How many units one layer of ``shape`` has (a checked pattern)."""
        return math.prod(shape[batch_dims:])

    def sparsity(self) -> float | None:
        """The sparsity the pattern itself implies (:class:`NM`: ``1 - n/m``), or ``None`` when
        it prunes whatever fraction it is given."""
        return None

    def kept(self, sparsity: float, units: int, op: str = "mask") -> int:
        """Units kept per layer at ``sparsity``: ``units - round(sparsity * units)``."""
        return units - count_of(sparsity, units)

    def unit_scores(self, key: jax.Array, batch_dims: int = 0) -> jax.Array:
        """One score per unit from a per-entry ``key`` of a checked shape (larger = kept):
        ``(n_layers, n_units)``, monotone in every entry of ``key``."""
        raise NotImplementedError

    def scores(self, x: jax.Array, batch_dims: int = 0) -> jax.Array:
        """One score per unit from ``|x|``: ``(n_layers, n_units)``, the :meth:`unit_scores` of
        ``|x|``."""
        return self.unit_scores(rank_key(x, magnitude=True), batch_dims)

    def top(self, scores: jax.Array, kept: int, batch_dims: int = 0) -> jax.Array:
        """Bool mask of ``scores``' shape keeping the ``kept`` units of largest pooled *value*
        per layer (:meth:`unit_scores` of ``scores`` itself, not ``|scores|``; a checked
        pattern)."""
        ranked = self.unit_scores(rank_key(scores, magnitude=False), batch_dims)
        return self.expand(self.keep(ranked, kept), scores.shape, batch_dims)

    def random_scores(self, key: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        """Uniform random unit scores ``(n_layers, n_units)`` (random pruning)."""
        return jax.random.uniform(key, (_rows(shape, batch_dims), self.units(shape, batch_dims)))

    def prefer_kept(self, scores: jax.Array, old: jax.Array, batch_dims: int = 0) -> jax.Array:
        """``scores`` with the units that the mask ``old`` prunes ranked below the kept ones
        (nested masks, so that a rising sparsity only prunes more); default: unchanged."""
        return scores

    def keep(self, scores: jax.Array, kept: int | jax.Array) -> jax.Array:
        """Bool ``(n_layers, n_units)``: the ``kept`` largest scores of each layer (a static
        or traced count)."""
        return keep_largest(scores, kept)

    def expand(self, kept: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        """The element mask of ``shape`` from the unit mask ``(n_layers, n_units)``."""
        raise NotImplementedError

    def mask(
        self,
        x: Any,
        sparsity: float | None = None,
        *,
        batch_dims: int = 0,
        op: str | None = None,
        **kw: Any,
    ) -> jax.Array:
        """The bool mask of ``x``'s shape that prunes ``round(sparsity * n_units)`` units of
        smallest score per layer (``True`` = kept).

        ``sparsity`` is a static number in ``[0, 1]``; :class:`NM` takes ``None`` (its own
        ``1 - n/m``). ``op`` and the keywords of :meth:`check` set the names in messages.
        """
        op = op or f"{type(self).__name__}.mask"
        x = jnp.asarray(checks.as_array(x, kw.get("array", "x"), op))
        if sparsity is not None:
            sparsity = checks.static_fraction(sparsity, "sparsity", op)
        batch_dims = check_batch_dims(batch_dims, x.ndim, op)
        checked = self.check(x.shape, batch_dims, op, **kw)
        kept = checked.kept(sparsity, checked.units(x.shape, batch_dims), op)  # type: ignore[arg-type]
        return select(x, checked, kept, batch_dims)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def select(x: jax.Array, pattern: Pattern, kept: int, batch_dims: int) -> jax.Array:
    """``pattern.expand(pattern.keep(pattern.scores(x), kept))`` (a checked pattern)."""
    unit_mask = pattern.keep(pattern.scores(x, batch_dims), kept)
    return pattern.expand(unit_mask, x.shape, batch_dims)


def _label(kw: dict[str, Any], cls: type, field: str) -> str:
    names: Names = kw.get("names") or {}
    return names.get(field, f"{cls.__name__}.{field}")


@dataclasses.dataclass(frozen=True)
class Unstructured(Pattern):
    """Single entries: each weight is a unit, ranked by ``|x|``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import Unstructured
      >>> Unstructured().mask(jnp.array([0.5, -3., 1., 0.1]), 0.5)
      Array([False,  True,  True, False], dtype=bool)
    """

    name: ClassVar[str] = "unstructured"

    def unit_scores(self, key: jax.Array, batch_dims: int = 0) -> jax.Array:
        return key.reshape(_rows(key.shape, batch_dims), -1)

    def expand(self, kept: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        return kept.reshape(shape)

    def prefer_kept(self, scores: jax.Array, old: jax.Array, batch_dims: int = 0) -> jax.Array:
        # A pruned entry ranks below every kept one: a stored zero never outranks a live
        # weight that is also zero.
        if not jnp.issubdtype(scores.dtype, jnp.floating):
            scores = scores.astype(jnp.float32)
        return jnp.where(old.reshape(scores.shape[0], -1), scores, -1.0)


@dataclasses.dataclass(frozen=True)
class NM(Pattern):
    """N:M structure: keep the ``n`` largest of every ``m`` consecutive entries along ``axis``.

    ``axis`` is an axis of the layer; ``None`` (default) is the library's one N:M convention,
    the layer's *input* axis (``-2`` for a layer of rank >= 2, i.e. the ``in`` of a Dense kernel
    ``(in, out)``, the reduction axis sparse tensor cores want for ``x @ W``; ``-1`` for a
    rank-1 layer), the same default as :func:`hadamard_jax.nm_mask` and
    :func:`hadamard_jax.nnx.prune`. The sparsity is ``1 - n/m``: every nonzero level of a
    schedule must equal it (``one_shot(0.5)`` for 2:4).

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import NM
      >>> w = jnp.array([[4., 1.], [3., 2.], [1., 5.], [2., 6.]])  # a kernel [in=4, out=2]
      >>> NM(2, 4).mask(w).astype(int)  # 2 of the 4 inputs of each output unit
      Array([[1, 0],
             [1, 0],
             [0, 1],
             [0, 1]], dtype=int32)
    """

    n: int = 2
    m: int = 4
    axis: int | None = None
    name: ClassVar[str] = "nm"

    def validate(self, op: str = "mask", **kw: Any) -> NM:
        n_name, m_name = _label(kw, NM, "n"), _label(kw, NM, "m")
        m = checks.static_int(self.m, m_name, op, 1)
        n = checks.static_int(self.n, n_name, op, 0)
        if n > m:
            raise ValueError(f"{op}: {n_name} must be <= {m_name}, got n={n} and m={m}.")
        return NM(n, m, self.axis)

    def check(self, shape: Shape, batch_dims: int = 0, op: str = "mask", **kw: Any) -> NM:
        n, m = (valid := self.validate(op, **kw)).n, valid.m
        m_name = _label(kw, NM, "m")
        array = kw.get("array", "x")
        rank = len(shape) - batch_dims
        raw = input_axis(rank) if self.axis is None else self.axis
        axis = _layer_axis(raw, shape, batch_dims, _label(kw, NM, "axis"), op, array)
        length = shape[batch_dims + axis]
        if length % m:
            raise ValueError(
                f"{op}: {m_name}={m} must divide the length of axis {batch_dims + axis}, got "
                f"{array}.shape={shape} (length {length})."
            )
        return NM(n, m, axis)

    def sparsity(self) -> float:
        return 1 - self.n / self.m

    def kept(self, sparsity: float | None, units: int, op: str = "mask") -> int:
        """``units * n / m``; a ``sparsity`` must be ``None``, ``0`` (dense) or ``1 - n/m``."""
        implied = 1 - self.n / self.m
        if sparsity == 0.0 and implied != 0.0:
            return units
        if sparsity is not None and not math.isclose(sparsity, implied, abs_tol=1e-9):
            raise ValueError(
                f"{op}: an {self.n}:{self.m} pattern has sparsity {implied}, but "
                f"sparsity={sparsity} was asked for."
            )
        return units * self.n // self.m

    def _moved(self, shape: Shape, batch_dims: int) -> Shape:
        axis = batch_dims + (self.axis or 0)
        return (*shape[:axis], *shape[axis + 1 :], shape[axis])

    def unit_scores(self, key: jax.Array, batch_dims: int = 0) -> jax.Array:
        moved = jnp.moveaxis(key, batch_dims + (self.axis or 0), -1)
        return moved.reshape(_rows(key.shape, batch_dims), -1)

    def random_scores(self, key: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        return self.scores(jax.random.uniform(key, shape), batch_dims)

    def keep(self, scores: jax.Array, kept: int | jax.Array) -> jax.Array:
        """``n`` of every group of ``m``; all kept where ``kept`` is every unit (dense)."""
        units = scores.shape[-1]
        if not isinstance(kept, jax.Array) and kept >= units:
            return jnp.ones(scores.shape, jnp.bool_)
        groups = scores.reshape(*scores.shape[:-1], units // self.m, self.m)
        nm = keep_largest(groups, self.n).reshape(scores.shape)
        return nm if not isinstance(kept, jax.Array) else nm | (kept >= units)

    def expand(self, kept: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        moved = kept.reshape(self._moved(shape, batch_dims))
        return jnp.moveaxis(moved, -1, batch_dims + (self.axis or 0))


@dataclasses.dataclass(frozen=True)
class Block(Pattern):
    r"""Whole blocks of ``shape`` (one int per layer axis, each dividing it), ranked by the
    ``pool`` (``"mean"`` or ``"max"``) of ``|x|`` over the block.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import Block
      >>> x = jnp.array([[1., 1., 5., 5.], [1., 1., 5., 5.]])
      >>> Block((2, 2)).mask(x, 0.5).astype(int)
      Array([[0, 0, 1, 1],
             [0, 0, 1, 1]], dtype=int32)
    """

    shape: tuple[int, ...]
    pool: str = "mean"
    name: ClassVar[str] = "block"

    def check(self, shape: Shape, batch_dims: int = 0, op: str = "mask", **kw: Any) -> Block:
        label, array = _label(kw, Block, "shape"), kw.get("array", "x")
        block = self.shape
        if isinstance(block, int) and not isinstance(block, bool):
            block = (block,)
        if not isinstance(block, (tuple, list)):
            raise TypeError(f"{op}: {label} must be a tuple of ints, got {type(block).__name__}.")
        block = tuple(checks.static_int(b, f"{label}[{i}]", op, 1) for i, b in enumerate(block))
        layer = shape[batch_dims:]
        if len(block) != len(layer):
            raise ValueError(
                f"{op}: {label}={block} needs one entry per layer axis of {array}.shape={shape} "
                f"(batch_dims={batch_dims}: layer shape {layer})."
            )
        if any(d % b for d, b in zip(layer, block)):
            raise ValueError(
                f"{op}: {array}.shape={shape} is not divisible by {label}={block} "
                f"(layer shape {layer}, batch_dims={batch_dims})."
            )
        pool = checks.check_choice(self.pool, _label(kw, Block, "pool"), op, POOLS)
        return Block(block, pool)

    def units(self, shape: Shape, batch_dims: int = 0) -> int:
        return math.prod(d // b for d, b in zip(shape[batch_dims:], self.shape))

    def unit_scores(self, key: jax.Array, batch_dims: int = 0) -> jax.Array:
        rows, layer = _rows(key.shape, batch_dims), key.shape[batch_dims:]
        split = [n for d, b in zip(layer, self.shape) for n in (d // b, b)]
        key = _float_key(key).reshape((rows, *split))
        inner = tuple(range(2, 2 * len(layer) + 1, 2))
        pooled = key.mean(axis=inner) if self.pool == "mean" else key.max(axis=inner)
        return pooled.reshape(rows, -1)

    def expand(self, kept: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        grid = tuple(d // b for d, b in zip(shape[batch_dims:], self.shape))
        full = kept.reshape((kept.shape[0], *grid))
        for i, b in enumerate(self.shape):
            full = jnp.repeat(full, b, axis=1 + i)
        return full.reshape(shape)


@dataclasses.dataclass(frozen=True)
class Channel(Pattern):
    r"""Whole slices along the layer ``axis`` (``-1``: a kernel's output units, ``-2``: its
    input features), ranked by the L1 (``norm=1``) or L2 (``norm=2``) norm of the slice.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import Channel
      >>> w = jnp.array([[1., -4., 0.], [2., 1., 0.5]])  # column norms 3, 5, 0.5
      >>> Channel().mask(w, 1 / 3).astype(int)
      Array([[1, 1, 0],
             [1, 1, 0]], dtype=int32)
    """

    axis: int = -1
    norm: int = 1
    name: ClassVar[str] = "channel"

    def check(self, shape: Shape, batch_dims: int = 0, op: str = "mask", **kw: Any) -> Channel:
        label = _label(kw, Channel, "axis")
        axis = _layer_axis(self.axis, shape, batch_dims, label, op, kw.get("array", "x"))
        if self.norm not in NORMS or isinstance(self.norm, bool):
            norm_label = _label(kw, Channel, "norm")
            raise ValueError(f"{op}: {norm_label} must be 1 or 2, got norm={self.norm!r}.")
        return Channel(axis, int(self.norm))

    def units(self, shape: Shape, batch_dims: int = 0) -> int:
        return shape[batch_dims + self.axis]

    def unit_scores(self, key: jax.Array, batch_dims: int = 0) -> jax.Array:
        """The L1 or L2 norm of each slice of a key ``>= 0`` (``|x|``); of a signed key (learned
        scores), its sum (``norm=1``) or ``sign(t) sqrt(|t|)`` of ``t = sum(key * |key|)``
        (``norm=2``): monotone in every entry, the same ranking as the norm where ``key >= 0``."""
        rows, layer = _rows(key.shape, batch_dims), key.shape[batch_dims:]
        key = _float_key(key).reshape((rows, *layer))
        key = jnp.moveaxis(key, 1 + self.axis, 1).reshape(rows, layer[self.axis], -1)
        if self.norm == 1:
            return key.sum(axis=-1)
        total = (key * jnp.abs(key)).sum(axis=-1)
        return jnp.sign(total) * jnp.sqrt(jnp.abs(total))

    def expand(self, kept: jax.Array, shape: Shape, batch_dims: int = 0) -> jax.Array:
        layer, axis, rows = shape[batch_dims:], self.axis, kept.shape[0]
        moved = (layer[axis], *layer[:axis], *layer[axis + 1 :])
        full = jnp.broadcast_to(
            kept.reshape((rows, layer[axis]) + (1,) * (len(layer) - 1)), (rows, *moved)
        )
        return jnp.moveaxis(full, 1, 1 + axis).reshape(shape)


def as_pattern(value: Any, name: str = "pattern", op: str = "mask") -> Pattern:
    """A pattern object from a pattern or its string name (``"unstructured"``, ``"nm"`` for
    the default 2:4, ``"channel"``); a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, Pattern):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{op}: {name} must be {choices()} or a name, got {type(value).__name__}.")
    cls = PATTERNS.get(value)
    if cls is None:
        raise ValueError(f"{op}: unknown {name} {value!r}; expected one of {list(PATTERNS)}.")
    try:
        return cls()
    except TypeError:
        message = f"{op}: {name}={value!r} needs arguments: pass {cls.__name__}(...)."
        raise ValueError(message) from None


def choices() -> str:
    """The pattern classes, for messages: ``"Unstructured(), NM(n, m, axis), ..."``."""
    return ", ".join(
        f"{cls.__name__}({', '.join(f.name for f in dataclasses.fields(cls))})"
        for cls in PATTERNS.values()
    )


def table() -> str:
    """A bullet list of the patterns (name, string form, first docstring line), for docs."""
    lines = []
    for key, cls in PATTERNS.items():
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"* :class:`~hadamard_jax.{cls.__name__}` (``{key!r}``): {summary}")
    return "\n".join(lines)


if __doc__:
    __doc__ = docstrings.expand(__doc__, __name__, PATTERNS=table())
