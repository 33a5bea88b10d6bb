"""What the NNX and Linen adapter layers share: checks, initialisers, scales, forward and merge.

The adapters (:class:`~hadamard_jax.nnx.LoHaLinear`, ``HiRALinear``, ``DoRALinear``,
``IA3Linear``, ``IA3``) wrap a frozen base kernel ``W`` ``[in, out]`` (and bias). Their
parameters, their initialisers and their scales follow HF peft (``tuners/loha``,
``tuners/hira``, ``tuners/lora/dora.py``, ``tuners/ia3``) in JAX's ``[in, out]`` layout:

=========  ==========================================  ==========================================
adapter    output                                      merged kernel
=========  ==========================================  ==========================================
LoHa       ``x W + b + s x ((A1 B1) * (A2 B2))``       ``W + s (A1 B1) * (A2 B2)``
HiRA       ``x W + b + s x (W * (A B))``               ``W * (1 + s A B)``
DoRA       ``x (m * V / ||V||_col) + b``, ``V = W +    ``m * V / ||V||_col``
           s A B``
(IA)^3     ``(x W + b) * l`` or ``(x * l) W + b``      ``W * l`` (output or input axis)
=========  ==========================================  ==========================================

Every function here is pure (arrays in, arrays out), so equal parameters give equal outputs in
both front ends.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hadamard_jax._layers import params as P
from hadamard_jax._src import adapters as ops
from hadamard_jax._src import checks, docstrings
from hadamard_jax._src.hadamard import hadamard

#: The Linen collection of the adapter parameters (NNX: the ``AdapterParam`` variable type).
ADAPTERS = P.ADAPTERS

#: torch's ``kaiming_uniform_(w, a=sqrt(5))`` (the ``nn.Linear`` default that peft uses for its
#: adapter matrices) in JAX's layout: uniform on ``+-1/sqrt(fan_in)`` with ``fan_in`` the
#: second-to-last axis (``[in, r]``: ``in``; ``[r, out]``: ``r``), as torch's ``[r, in]`` and
#: ``[out, r]`` give.
kaiming_uniform_sqrt5 = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

#: The choices of LoHa's ``init_weights`` and of HiRA's/DoRA's ``init_hira_weights``/
#: ``init_lora_weights`` (peft's).
LOHA_INITS = (True, False, "abba")
LOW_RANK_INITS = (True, False, "gaussian")


#: The two tables as docstring prose, for the ``{{LOHA_INITS}}``/``{{LOW_RANK_INITS}}``
#: placeholders of the adapter classes.
LOHA_INITS_DOC = docstrings.choices(LOHA_INITS)
LOW_RANK_INITS_DOC = docstrings.choices(LOW_RANK_INITS)


# --- checks -------------------------------------------------------------------------------------


def check_common(op: str, in_features: Any, out_features: Any, rank: Any, alpha: Any) -> None:
    """Sizes are positive ints, ``rank >= 1``, ``alpha`` a finite number or ``None``."""
    if in_features is not None:
        checks.static_int(in_features, "in_features", op, lo=1)
    checks.static_int(out_features, "out_features", op, lo=1)
    if rank is not None:
        checks.static_int(rank, "rank", op, lo=1)
    if alpha is not None:
        checks.static_real(alpha, "alpha", op)


def check_init(op: str, name: str, value: Any, choices: tuple) -> None:
    """``value`` is one of ``choices`` (``True``/``False``/strings), as peft's ``init_*``."""
    if not any(value is c if isinstance(c, bool) else value == c for c in choices):
        raise ValueError(f"{op}: {name} must be one of {list(choices)}, got {value!r}.")


# --- scales ---------------------------------------------------------------------------------------


def loha_scale(alpha: float | None, r1: int, r2: int, abba: bool) -> float:
    """peft's LoHa scale ``alpha / r`` or, for ABBA, ``(alpha / sqrt(r1)) (alpha / sqrt(r2))``.

    ``alpha=None`` means ``alpha = r`` (scale 1 for LoHa).
    """
    alpha = float(r1 if alpha is None else alpha)
    if abba:
        return (alpha / math.sqrt(r1)) * (alpha / math.sqrt(r2))
    return alpha / r1


def lora_scale(alpha: float | None, rank: int, use_rslora: bool = False) -> float:
    """peft's LoRA/DoRA scale ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA)."""
    alpha = float(rank if alpha is None else alpha)
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


# --- initialisers ------------------------------------------------------------------------------


def loha_params(key, kernel: Any, r1: int, r2: int, init_weights: Any, dtype) -> dict:
    """``{a1, b1, a2, b2}`` as peft's LoHa ``init_weights`` makes them.

    ``True``: ``a2 = 0`` (peft's ``hada_w2_b``), the others ``kaiming_uniform_sqrt5``: zero
    update. ``False``: all random. ``"abba"``: from the SVD of ``kernel`` (peft's
    ``reset_adapter_parameters_abba``): singular values ``1..r1`` go to the first pair and
    ``r1+1..r1+r2`` (or again ``1..r2`` if there are too few) to the second, each factor taking
    the fourth root of its singular values. ABBA's initial update is not zero (as in peft).
    """
    n_in, n_out = jnp.shape(kernel)
    if init_weights == "abba":
        u, sv, vh = jnp.linalg.svd(jnp.asarray(kernel, jnp.float32), full_matrices=False)
        total = min(r1 + r2, sv.shape[0])
        k1, k2 = min(r1, total), min(r2, total)
        lo = k1 if k1 + k2 <= sv.shape[0] else 0
        if k1 < r1 or k2 < r2:
            raise ValueError(
                f"init_weights='abba' needs rank <= min(in, out) = {sv.shape[0]}, got ranks "
                f"{r1} and {r2}."
            )

        def pair(start, r):
            root = sv[start : start + r] ** 0.25
            return u[:, start : start + r] * root[None, :], root[:, None] * vh[start : start + r]

        a1, b1 = pair(0, r1)
        a2, b2 = pair(lo, r2)
        return {k: v.astype(dtype) for k, v in dict(a1=a1, b1=b1, a2=a2, b2=b2).items()}
    keys = jax.random.split(key, 4)
    init = kaiming_uniform_sqrt5
    a2 = jnp.zeros((n_in, r2), dtype) if init_weights is True else init(keys[2], (n_in, r2), dtype)
    return {
        "a1": init(keys[0], (n_in, r1), dtype),
        "b1": init(keys[1], (r1, n_out), dtype),
        "a2": a2,
        "b2": init(keys[3], (r2, n_out), dtype),
    }


def low_rank_params(key, n_in: int, n_out: int, rank: int, init: Any, dtype) -> dict:
    """``{a [in, r], b [r, out]}`` as peft's LoRA/HiRA ``init_*_weights`` make them.

    ``True``: ``a`` ``kaiming_uniform_sqrt5``, ``b = 0``; ``"gaussian"``: ``a ~ N(0, 1/r^2)``,
    ``b = 0``; ``False``: both random (``a`` as ``True``, ``b`` ``kaiming_uniform_sqrt5``).
    """
    ka, kb = jax.random.split(key)
    if init == "gaussian":
        a = jax.random.normal(ka, (n_in, rank), dtype) / rank
    else:
        a = kaiming_uniform_sqrt5(ka, (n_in, rank), dtype)
    b = (
        kaiming_uniform_sqrt5(kb, (rank, n_out), dtype)
        if init is False
        else jnp.zeros((rank, n_out), dtype)
    )
    return {"a": a, "b": b}


# --- forward --------------------------------------------------------------------------------------


def _cast(arrays, dtype) -> list[Any]:
    if dtype is None:
        return [None if a is None else jnp.asarray(a) for a in arrays]
    return [None if a is None else jnp.asarray(a).astype(dtype) for a in arrays]


def linear(x, kernel, bias, *, dtype=None, precision=None) -> jax.Array:
    """``x @ kernel + bias`` (rank-strict bias broadcast)."""
    x, kernel, bias = _cast((x, kernel, bias), dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    return y if bias is None else y + jnp.broadcast_to(bias, y.shape)


def loha_update(x, p: dict, scale: float, *, dtype=None, precision=None) -> jax.Array:
    """``s x ((A1 B1) * (A2 B2))`` by :func:`hadamard_jax.loha_matmul`."""
    x, a1, b1, a2, b2 = _cast((x, p["a1"], p["b1"], p["a2"], p["b2"]), dtype)
    return ops.loha_matmul(x, a1, b1, a2, b2, scale=scale, precision=precision)


def hira_update(x, kernel, p: dict, scale: float, *, dtype=None, precision=None) -> jax.Array:
    """``s x (W * (A B))`` by :func:`hadamard_jax.hira_matmul`."""
    x, kernel, a, b = _cast((x, kernel, p["a"], p["b"]), dtype)
    return ops.hira_matmul(x, kernel, a, b, scale=scale, precision=precision)


def dora(x, kernel, bias, p: dict, scale: float, detach_norm: bool, *, dtype=None, precision=None):
    """``x (m * V / ||V||_col) + b`` by :func:`hadamard_jax.dora_matmul`."""
    x, kernel, bias, a, b, m = _cast((x, kernel, bias, p["a"], p["b"], p["magnitude"]), dtype)
    y = ops.dora_matmul(
        x, kernel, a, b, m, scale=scale, detach_norm=detach_norm, precision=precision
    )
    return y if bias is None else y + jnp.broadcast_to(bias, y.shape)


# --- merged kernels ----------------------------------------------------------------------------


def loha_merged(kernel, p: dict, scale: float):
    """``W + s (A1 B1) * (A2 B2)``."""
    delta = ops.loha_delta(p["a1"], p["b1"], p["a2"], p["b2"], scale=scale)
    return (jnp.asarray(kernel) + delta).astype(jnp.result_type(kernel))


def hira_merged(kernel, p: dict, scale: float):
    """``W * (1 + s A B)`` (peft's ``W *= 1 + B A``)."""
    kernel = jnp.asarray(kernel)
    return (kernel * (1 + scale * (jnp.asarray(p["a"]) @ jnp.asarray(p["b"])))).astype(kernel.dtype)


def dora_merged(kernel, p: dict, scale: float):
    """``m * V / ||V||_col`` with ``V = W + s A B``."""
    kernel = jnp.asarray(kernel)
    v = kernel + scale * (jnp.asarray(p["a"]) @ jnp.asarray(p["b"]))
    norm = ops.dora_norm(kernel, p["a"], p["b"], scale=scale)
    c = jnp.asarray(p["magnitude"]) / norm
    return (v * jnp.broadcast_to(c, v.shape)).astype(kernel.dtype)


def dora_magnitude(kernel, p: dict, scale: float):
    """DoRA's initial magnitude ``||W + s A B||_col`` (``||W||_col`` when ``B = 0``)."""
    return ops.dora_norm(kernel, p["a"], p["b"], scale=scale)


def ia3_merged(kernel, bias, l: Any, feedforward: bool):
    """``(W * l[:, None], b)`` (feedforward: the input axis) or ``(W * l, b * l)``."""
    kernel, l = jnp.asarray(kernel), jnp.asarray(l)
    if feedforward:
        return kernel * jnp.broadcast_to(l[:, None], kernel.shape), bias
    merged_bias = None if bias is None else jnp.asarray(bias) * l
    return kernel * jnp.broadcast_to(l, kernel.shape), merged_bias


def count(tree) -> int:
    """The number of elements of the arrays in ``tree``."""
    return int(sum(np.prod(jnp.shape(x)) for x in jax.tree.leaves(tree)))


# --- the options and parameter tables -----------------------------------------------------------


def made_together(
    names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], make: Callable, *, key: bool
) -> tuple[P.Spec, ...]:
    """The specs of adapter variables made together by ``make(key, dtype) -> {name: array}``.

    peft makes an adapter's matrices together from one random state; so does this: the first
    spec draws the key (NNX: one ``rngs.params()``, only if ``key``; Linen: one ``make_rng``)
    and calls ``make``, the others take its results. Build the specs once per module.
    """
    made: dict[str, Any] = {}

    def init_of(name: str, first: bool) -> Callable:
        def init(k: Any, shape: Any, dtype: Any) -> Any:
            del shape
            if first:
                made.update(make(k, dtype))
            return made[name]

        return init

    return tuple(
        P.Spec(n, s, init_of(n, i == 0), P.ADAPTERS, draws_key=key and i == 0)
        for i, (n, s) in enumerate(zip(names, shapes, strict=True))
    )


def ia3_specs(size: int) -> tuple[P.Spec, ...]:
    """``ia3_l`` ``[size]``, ones (no key drawn)."""
    ones = lambda key, shape, dtype: jnp.ones(shape, dtype)  # noqa: E731
    return (P.Spec("ia3_l", (size,), ones, P.ADAPTERS, draws_key=False),)


@dataclasses.dataclass(frozen=True)
class AdapterOptions(P.Options):
    """An adapter's options, checked once; its parameter table, forward and merged kernel.

    ``base`` below is the wrapped layer: ``base.base_forward(x)``, ``base.base_kernel()``
    (masked), ``base.base_bias()``.
    """

    op: ClassVar[str] = ""
    #: the adapter parameters, in creation order
    names: ClassVar[tuple[str, ...]] = ()

    def specs(self, kernel: Any, n_in: int, n_out: int) -> tuple[P.Spec, ...]:
        """The adapter variables for a base kernel ``[n_in, n_out]``."""
        raise NotImplementedError

    def apply(self, x: Any, base: Any, p: dict, dtype: Any, precision: Any) -> jax.Array:
        """The adapted layer's output for ``x`` ``[..., in]``."""
        raise NotImplementedError

    def merged(self, kernel: Any, bias: Any, p: dict) -> tuple[jax.Array, Any]:
        """``(kernel, bias)`` of the plain linear layer with equal outputs."""
        raise NotImplementedError


def _check_rank(op: str, rank: Any, alpha: Any, init_name: str, init: Any, inits: tuple) -> None:
    check_common(op, None, 1, rank, alpha)
    check_init(op, init_name, init, inits)


@dataclasses.dataclass(frozen=True)
class LoHaOptions(AdapterOptions):
    """``LoHaLinear``'s options (``rank2`` resolved, ``scale`` derived)."""

    op: ClassVar[str] = "LoHaLinear"
    names: ClassVar[tuple[str, ...]] = ("a1", "b1", "a2", "b2")

    rank: int
    alpha: float | None
    rank2: int | None
    init_weights: Any
    abba_scaling: bool | None
    scale: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        check_common(self.op, None, 1, self.rank, self.alpha)
        rank2 = self.rank if self.rank2 is None else self.rank2
        _check_rank(self.op, rank2, None, "init_weights", self.init_weights, LOHA_INITS)
        abba = self.init_weights == "abba" if self.abba_scaling is None else self.abba_scaling
        self.set(rank2=rank2, scale=loha_scale(self.alpha, self.rank, rank2, bool(abba)))

    def specs(self, kernel: Any, n_in: int, n_out: int) -> tuple[P.Spec, ...]:
        r1, r2 = self.rank, self.rank2
        assert r2 is not None
        shapes = ((n_in, r1), (r1, n_out), (n_in, r2), (r2, n_out))
        make = lambda k, dtype: loha_params(k, kernel, r1, r2, self.init_weights, dtype)  # noqa: E731
        return made_together(self.names, shapes, make, key=True)

    def apply(self, x: Any, base: Any, p: dict, dtype: Any, precision: Any) -> jax.Array:
        return base.base_forward(x) + loha_update(
            x, p, self.scale, dtype=dtype, precision=precision
        )

    def merged(self, kernel: Any, bias: Any, p: dict) -> tuple[jax.Array, Any]:
        return loha_merged(kernel, p, self.scale), bias


@dataclasses.dataclass(frozen=True)
class HiRAOptions(AdapterOptions):
    """``HiRALinear``'s options (``scale`` derived)."""

    op: ClassVar[str] = "HiRALinear"
    names: ClassVar[tuple[str, ...]] = ("a", "b")

    rank: int
    alpha: float | None
    init_hira_weights: Any
    scale: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        init = self.init_hira_weights
        _check_rank(self.op, self.rank, self.alpha, "init_hira_weights", init, LOW_RANK_INITS)
        self.set(scale=lora_scale(self.alpha, self.rank))

    def specs(self, kernel: Any, n_in: int, n_out: int) -> tuple[P.Spec, ...]:
        return _low_rank_specs(self, n_in, n_out, self.init_hira_weights, None)

    def apply(self, x: Any, base: Any, p: dict, dtype: Any, precision: Any) -> jax.Array:
        k = base.base_kernel()
        return base.base_forward(x) + hira_update(
            x, k, p, self.scale, dtype=dtype, precision=precision
        )

    def merged(self, kernel: Any, bias: Any, p: dict) -> tuple[jax.Array, Any]:
        return hira_merged(kernel, p, self.scale), bias


def _low_rank_specs(o: Any, n_in: int, n_out: int, init: Any, kernel: Any) -> tuple:
    """``a [in, r]``, ``b [r, out]`` (HiRA's names; DoRA's ``lora_a``, ``lora_b`` and, from
    ``kernel``, ``magnitude [out]``), made together by :func:`low_rank_params`."""
    shapes = ((n_in, o.rank), (o.rank, n_out), (n_out,))

    def make(key: Any, dtype: Any) -> dict:
        ab = low_rank_params(key, n_in, n_out, o.rank, init, dtype)
        if kernel is not None:
            ab["magnitude"] = dora_magnitude(kernel, ab, o.scale).astype(dtype)
        return dict(zip(o.names, ab.values(), strict=True))

    return made_together(o.names, shapes[: len(o.names)], make, key=True)


@dataclasses.dataclass(frozen=True)
class DoRAOptions(AdapterOptions):
    """``DoRALinear``'s options (``scale`` derived)."""

    op: ClassVar[str] = "DoRALinear"
    names: ClassVar[tuple[str, ...]] = ("lora_a", "lora_b", "magnitude")

    rank: int
    alpha: float | None
    use_rslora: bool
    init_lora_weights: Any
    detach_norm: bool
    scale: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        init = self.init_lora_weights
        _check_rank(self.op, self.rank, self.alpha, "init_lora_weights", init, LOW_RANK_INITS)
        self.set(detach_norm=bool(self.detach_norm))
        self.set(scale=lora_scale(self.alpha, self.rank, bool(self.use_rslora)))

    def specs(self, kernel: Any, n_in: int, n_out: int) -> tuple[P.Spec, ...]:
        return _low_rank_specs(self, n_in, n_out, self.init_lora_weights, kernel)

    @staticmethod
    def _p(p: dict) -> dict:
        return {"a": p["lora_a"], "b": p["lora_b"], "magnitude": p["magnitude"]}

    def apply(self, x: Any, base: Any, p: dict, dtype: Any, precision: Any) -> jax.Array:
        k, b = base.base_kernel(), base.base_bias()
        s, detach = self.scale, self.detach_norm
        return dora(x, k, b, self._p(p), s, detach, dtype=dtype, precision=precision)

    def merged(self, kernel: Any, bias: Any, p: dict) -> tuple[jax.Array, Any]:
        return dora_merged(kernel, self._p(p), self.scale), bias


@dataclasses.dataclass(frozen=True)
class IA3Options(AdapterOptions):
    """``IA3Linear``'s options: scale the input (``feedforward``) or the output."""

    op: ClassVar[str] = "IA3Linear"
    names: ClassVar[tuple[str, ...]] = ("ia3_l",)

    feedforward: bool

    def __post_init__(self) -> None:
        self.set(feedforward=bool(self.feedforward))

    def specs(self, kernel: Any, n_in: int, n_out: int) -> tuple[P.Spec, ...]:
        return ia3_specs(n_in if self.feedforward else n_out)

    def apply(self, x: Any, base: Any, p: dict, dtype: Any, precision: Any) -> jax.Array:
        l = p["ia3_l"]
        if self.feedforward:
            return base.base_forward(hadamard(x, l, broadcast=True))
        return hadamard(base.base_forward(x), l, broadcast=True)

    def merged(self, kernel: Any, bias: Any, p: dict) -> tuple[jax.Array, Any]:
        return ia3_merged(kernel, bias, p["ia3_l"], self.feedforward)
