"""NNX-vs-Linen parity, one table row per Flax module that both front ends export.

Each row builds the NNX module and the Linen module with the same arguments, then checks:

* the same variables: every NNX variable (``nnx.Param`` -> ``params``, ``AdapterParam`` ->
  ``adapters``, ``MaskVar`` -> ``masks``) at the same path, shape and dtype as in ``init`` of the
  Linen module (a row's ``convert`` maps the paths where the layouts differ by design);
* the same outputs: the NNX parameters, set to random values, copied into Linen variables give
  the same result as the NNX module (and the same ``step`` where the module decodes).

A module added to both ``hadamard_jax.nnx.__all__`` and ``hadamard_jax.linen.__all__`` must get a
row: ``test_every_shared_module_has_a_row`` fails otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import normal

B, T, D = 2, 5, 4
X = normal(42, (3, D))
XS = normal(43, (B, T, D))  # sequences, for attention and recurrences
H0 = normal(44, (B, D))
Flat = dict[tuple[str, ...], Any]


def _drop_base_module(flat: Flat) -> Flat:
    """Adapters: NNX keeps the wrapped layer at ``base_module``; Linen's params are flat."""
    return {tuple(k for k in key if k != "base_module"): v for key, v in flat.items()}


def _split_gate(head_dim: int) -> Callable[[Flat], Flat]:
    """GatedMultiHeadAttention: NNX fuses the gate into ``query``; Linen keeps Flax's attention."""

    def convert(flat: Flat) -> Flat:
        out = {}
        for (collection, layer, name), v in flat.items():
            if layer == "query":
                out[(collection, "gate", name)] = v[..., head_dim:]
                v = v[..., :head_dim]
            out[(collection, "attention", layer, name)] = v
        return out

    return convert


@dataclasses.dataclass(frozen=True)
class Row:
    nnx: Callable[[nnx.Rngs], Any]  # rngs -> NNX module
    linen: Any  # the Linen module
    args: tuple = (X,)
    kwargs: dict = dataclasses.field(default_factory=dict)
    convert: Callable[[Flat], Flat] = lambda flat: flat
    step: Callable[[Any], tuple] | None = None  # call output (None at init) -> step args
    rtol: float = 1e-6


GLA = dict(num_heads=2, gate_low_rank_dim=2, use_short_conv=True, conv_size=2, chunk_size=2)
GDN = dict(num_heads=2, head_dim=2, num_v_heads=2, expand_v=1.5, conv_size=2, chunk_size=2)
DET = {"deterministic": True}
DECODE = dict(step=lambda out: (H0, XS[:, 0]))
DECODE_CACHE = dict(step=lambda out: (None if out is None else out[1], XS[:, 0]), rtol=2e-5)

# One initialiser object for every build (a fresh closure per build is a new static attribute).
_HALF_MASK = nnx.initializers.constant(jnp.array([1, 0, 1, 0]))

# name -> Row; the name starts with the class name.

ROWS = {
    "GLU fused": Row(
        lambda r: hn.GLU(D, 5, activation="geglu", approximate=True, rngs=r),
        hl.GLU(5, activation="geglu", approximate=True),
    ),
    "GLU two kernels": Row(
        lambda r: hn.GLU(D, 5, activation="reglu", fused_kernel=False, rngs=r),
        hl.GLU(5, activation="reglu", fused_kernel=False),
    ),
    "GatedMLP": Row(lambda r: hn.GatedMLP(D, 8, 6, rngs=r), hl.GatedMLP(8, 6)),
    "GatedMLP masked ia3": Row(
        lambda r: hn.prune(hn.GatedMLP(D, 8, masked=True, ia3=True, rngs=r), 0.5),
        hl.GatedMLP(8, masked=True, ia3=True),
    ),
    "GatedMLP bf16": Row(
        lambda r: hn.GatedMLP(D, 8, use_bias=False, dtype=jnp.bfloat16, rngs=r),
        hl.GatedMLP(8, use_bias=False, dtype=jnp.bfloat16),
        rtol=0.0,
    ),
    "Highway": Row(lambda r: hn.Highway(D, activation=jnp.tanh, rngs=r), hl.Highway(D, jnp.tanh)),
    "GatedResidual": Row(
        lambda r: hn.GatedResidual(D, 8, 6, context_features=2, rngs=r),
        hl.GatedResidual(8, 6, context_features=2),
        args=(X, normal(45, (3, 2))),
    ),
    "GatedRMSNorm": Row(
        lambda r: hn.GatedRMSNorm(D, norm_before_gate=False, activation="geglu", rngs=r),
        hl.GatedRMSNorm(norm_before_gate=False, activation="geglu"),
        args=(X, normal(46, X.shape)),
    ),
    "GatedMultiHeadAttention elementwise": Row(
        lambda r: hn.GatedMultiHeadAttention(2, D, decode=False, rngs=r),
        hl.GatedMultiHeadAttention(2),
        args=(XS,),
        kwargs={"mask": jnp.tril(jnp.ones((T, T), bool))},
        convert=_split_gate(2),
        rtol=1e-5,
    ),
    "GatedMultiHeadAttention headwise": Row(
        lambda r: hn.GatedMultiHeadAttention(2, D, gate="headwise", decode=False, rngs=r),
        hl.GatedMultiHeadAttention(2, gate="headwise"),
        args=(XS,),
        convert=_split_gate(2),
        rtol=1e-5,
    ),
    "Mask": Row(
        lambda r: hn.Mask((D,), mask_init=_HALF_MASK, fill=3.0),
        hl.Mask((D,), fill=3.0),
    ),
    "MaskedLinear fixed": Row(
        lambda r: hn.prune(hn.MaskedLinear(D, 6, rngs=r), 0.5), hl.MaskedLinear(6)
    ),
    "MaskedLinear ste": Row(
        lambda r: hn.MaskedLinear(D, 6, mask_type="ste", sparsity=0.5, rngs=r),
        hl.MaskedLinear(6, mask_type="ste", sparsity=0.5),
    ),
    "MaskedLinear hard_concrete": Row(
        lambda r: hn.MaskedLinear(D, 6, mask_type="hard_concrete", rngs=r),
        hl.MaskedLinear(6, mask_type="hard_concrete"),
        kwargs=DET,
    ),
    "HardConcreteGate": Row(
        lambda r: hn.HardConcreteGate((D,), rngs=r), hl.HardConcreteGate((D,)), kwargs=DET
    ),
    "RGLRU": Row(
        lambda r: hn.RGLRU(D, num_heads=2, rngs=r),
        hl.RGLRU(D, num_heads=2),
        args=(XS, H0),
        **DECODE,
    ),
    "MinGRU": Row(lambda r: hn.MinGRU(D, D, rngs=r), hl.MinGRU(D), args=(XS, H0), **DECODE),
    "GatedDeltaNet": Row(
        lambda r: hn.GatedDeltaNet(D, **GDN, rngs=r),
        hl.GatedDeltaNet(D, **GDN),
        args=(XS,),
        **DECODE_CACHE,
    ),
    "GatedLinearAttention": Row(
        lambda r: hn.GatedLinearAttention(D, **GLA, rngs=r),
        hl.GatedLinearAttention(D, **GLA),
        args=(XS,),
        **DECODE_CACHE,
    ),
    "LoHaLinear": Row(
        lambda r: hn.LoHaLinear(D, 5, rank=2, rank2=3, alpha=4.0, rngs=r),
        hl.LoHaLinear(5, rank=2, rank2=3, alpha=4.0),
        convert=_drop_base_module,
    ),
    "HiRALinear": Row(
        lambda r: hn.HiRALinear(D, 5, rank=2, alpha=3.0, rngs=r),
        hl.HiRALinear(5, rank=2, alpha=3.0),
        convert=_drop_base_module,
    ),
    "DoRALinear": Row(
        lambda r: hn.DoRALinear(D, 5, rank=2, alpha=4.0, rngs=r),
        hl.DoRALinear(5, rank=2, alpha=4.0),
        convert=_drop_base_module,
        rtol=1e-5,
    ),
    "IA3Linear": Row(
        lambda r: hn.IA3Linear(D, 5, feedforward=True, rngs=r),
        hl.IA3Linear(5, feedforward=True),
        convert=_drop_base_module,
    ),
    "IA3": Row(lambda r: hn.IA3(D, rngs=r), hl.IA3(D)),
}


def _collection(variable: nnx.Variable) -> str:
    for kind, name in ((hn.AdapterParam, "adapters"), (nnx.Param, "params"), (hn.MaskVar, "masks")):
        if isinstance(variable, kind):
            return name
    raise AssertionError(f"a variable of no Linen collection: {type(variable).__name__}")


def _randomise(model: Any) -> None:
    """Every parameter (not the masks) set to random values: no zero or one left at its init."""
    for i, (_, variable) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.Param))):
        variable[...] = normal(i, variable.shape, scale=0.5).astype(variable.dtype)


def _linen_variables(model: Any, convert: Callable[[Flat], Flat]) -> Flat:
    flat = {
        (_collection(v), *map(str, path)): v[...]
        for path, v in nnx.to_flat_state(nnx.state(model))
        if not isinstance(v, nnx.RngState)  # dropout streams: Linen takes them at apply
    }
    return convert(flat)


def _signature(flat: Flat) -> dict:
    return {key: (v.shape, v.dtype) for key, v in flat.items()}


@pytest.mark.parametrize("name", ROWS)
def test_nnx_and_linen_agree(name):
    row = ROWS[name]
    model = row.nnx(nnx.Rngs(0))
    keys = {"params": jax.random.key(1), "hard_concrete": jax.random.key(2)}
    init = traverse_util.flatten_dict(row.linen.init(keys, *row.args, **row.kwargs))
    # The same variables: names, collections, shapes and dtypes.
    _randomise(model)
    flat = _linen_variables(model, row.convert)
    assert _signature(init) == _signature(flat)
    variables = traverse_util.unflatten_dict(flat)
    ours = row.linen.apply(variables, *row.args, **row.kwargs)
    ref = model(*row.args, **row.kwargs)
    assert jax.tree.map(jnp.dtype, ours) == jax.tree.map(jnp.dtype, ref)
    tol = dict(rtol=row.rtol, atol=row.rtol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), ours, ref)
    if row.step is not None:
        # The decode step: the same result, and ``init`` through it creates the same variables.
        step = row.linen.apply(variables, *row.step(ours), method="step")
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, **tol), step, model.step(*row.step(ref))
        )
        init_step = row.linen.init(keys, *row.step(None), method="step")
        assert _signature(traverse_util.flatten_dict(init_step)) == _signature(init)


def test_every_shared_module_has_a_row():
    shared = {
        name
        for name in set(hn.__all__) & set(hl.__all__)
        if isinstance(getattr(hn, name), type) and issubclass(getattr(hn, name), nnx.Module)
    }
    covered = {name.split()[0] for name in ROWS}
    assert shared == covered, (shared - covered, covered - shared)


@pytest.mark.parametrize("name", ROWS)
def test_nnx_graphdef_is_hashable(name):
    # A graph definition is a jit static argument: an attribute that is a plain dict (or list)
    # makes it unhashable, so ``jax.jit(..., static_argnums=...)`` fails on it.
    model = ROWS[name].nnx(nnx.Rngs(0))
    assert hash(nnx.graphdef(model)) == hash(nnx.graphdef(model))
    # Two modules built alike have equal graph definitions, so a jit keyed on the graph (nnx.jit,
    # a static graphdef) compiles once for both: no attribute holds a per-instance closure.
    again = ROWS[name].nnx(nnx.Rngs(1))
    assert nnx.graphdef(again) == nnx.graphdef(model)
    assert hash(nnx.graphdef(again)) == hash(nnx.graphdef(model))


@pytest.mark.parametrize("name", ["GatedDeltaNet", "GatedMLP masked ia3"])
def test_nnx_graphdef_as_a_static_jit_argument(name):
    row = ROWS[name]
    model = row.nnx(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda g, s: nnx.merge(g, s)(*row.args, **row.kwargs), static_argnums=0)
    ours = apply(graphdef, state)
    ref = model(*row.args, **row.kwargs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, ref)
