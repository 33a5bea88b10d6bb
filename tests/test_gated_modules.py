"""GatedRMSNorm and GatedMultiHeadAttention (NNX and Linen): values against Flax and the plain
composition, NNX == Linen for the same parameters, masks, decoding, transforms and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import hadamard_jax as hj
import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from tests.utils import normal

X = normal(1, (2, 5, 8))
HEADS, HEAD_DIM = 2, 4


def _rms_plain(x, g, s, before):
    def rms(z):
        return z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-6)

    with jax.numpy_rank_promotion("allow"):
        return rms(x) * s * jax.nn.silu(g) if before else rms(x * jax.nn.silu(g)) * s


# --- GatedRMSNorm ------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [True, False])
def test_gated_rms_norm_and_plain_agree(before):
    g = normal(2, X.shape)
    init = nnx.initializers.normal(1.0)
    layer = hn.GatedRMSNorm(8, norm_before_gate=before, scale_init=init, rngs=nnx.Rngs(0))
    out = nnx.jit(lambda m, x, g: m(x, g))(layer, X, g)
    np.testing.assert_allclose(out, _rms_plain(X, g, layer.scale[...], before), rtol=2e-5)
    grads = nnx.grad(lambda m: jnp.sum(m(X, g) ** 2))(layer)
    ref = jax.grad(lambda s: jnp.sum(_rms_plain(X, g, s, before) ** 2))(layer.scale[...])
    np.testing.assert_allclose(grads["scale"][...], ref, rtol=1e-4, atol=1e-5)


def test_gated_rms_norm_scan_over_layers_and_errors():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return hn.GatedRMSNorm(8, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, layer):
        return layer(x, x)

    assert run(X, stack).shape == X.shape
    with pytest.raises(ValueError, match="GatedRMSNorm: num_features must be >= 1"):
        hn.GatedRMSNorm(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GatedRMSNorm: eps must be a number > 0"):
        hl.GatedRMSNorm(eps=-1.0)
    with pytest.raises(ValueError, match="transforms its value"):
        hn.GatedRMSNorm(8, activation="clamped_swiglu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expected inputs with last axis 8"):
        hn.GatedRMSNorm(8, rngs=nnx.Rngs(0))(X[..., :4], X[..., :4])


# --- GatedMultiHeadAttention -------------------------------------------------------------------


def _manual(layer, x, mask=None):
    """The gated attention written out from Flax's pieces and the fused query kernel."""
    fused = layer.query(x)
    q, pre = fused[..., :HEAD_DIM], fused[..., HEAD_DIM:]
    o = nnx.dot_product_attention(q, layer.key(x), layer.value(x), mask=mask)
    with jax.numpy_rank_promotion("allow"):
        o = o * jax.nn.sigmoid(pre)
    return layer.out(o)


def test_no_gate_is_flax_multi_head_attention():
    ours = hn.GatedMultiHeadAttention(HEADS, 8, gate=None, decode=False, rngs=nnx.Rngs(0))
    flax = nnx.MultiHeadAttention(HEADS, 8, decode=False, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours(X), flax(X))
    linen = hl.GatedMultiHeadAttention(HEADS, gate=None)
    variables = linen.init(jax.random.key(0), X)
    reference = nn.MultiHeadDotProductAttention(HEADS)
    ref = reference.apply({"params": variables["params"]["attention"]}, X)
    np.testing.assert_array_equal(linen.apply(variables, X), ref)


@pytest.mark.parametrize("gate", ["elementwise", "headwise"])
def test_gate_values_and_masks(gate):
    layer = hn.GatedMultiHeadAttention(HEADS, 8, gate=gate, decode=False, rngs=nnx.Rngs(0))
    g = HEAD_DIM if gate == "elementwise" else 1
    assert layer.query.kernel.shape == (8, HEADS, HEAD_DIM + g)
    mask = hj.combine_masks(
        hj.causal_mask(5, extra_batch_dims=1),
        hj.attention_mask(
            hj.padding_mask(jnp.array([5, 3]), 5), hj.padding_mask(jnp.array([5, 3]), 5)
        ),
    )
    out = layer(X, mask=mask)
    np.testing.assert_allclose(out, _manual(layer, X, mask), rtol=1e-5, atol=1e-6)
    # The gate goes through the library's glu rule: a gradient reaches its kernel.
    grads = nnx.grad(lambda m: jnp.sum(m(X, mask=mask) ** 2))(layer)
    assert float(jnp.abs(grads["query"]["kernel"][..., HEAD_DIM:]).sum()) > 0


def test_decode_step_by_step_equals_causal_forward():
    layer = hn.GatedMultiHeadAttention(HEADS, 8, decode=False, rngs=nnx.Rngs(0))
    full = layer(X, mask=hj.causal_mask(5))
    layer.init_cache(X.shape)
    steps = [layer(X[:, t : t + 1], decode=True) for t in range(5)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-6)


def test_transforms_and_dropout():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return hn.GatedMultiHeadAttention(HEADS, 8, decode=False, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    @nnx.remat
    def run(x, layer):
        return x + layer(x)

    out = nnx.jit(run)(X, stack)
    assert out.shape == X.shape and bool(jnp.isfinite(out).all())
    grads = nnx.grad(lambda s: jnp.sum(run(X, s) ** 2))(stack)
    assert grads["query"]["kernel"].shape == (3, 8, HEADS, 2 * HEAD_DIM)
    drop = hn.GatedMultiHeadAttention(
        HEADS, 8, dropout_rate=0.5, deterministic=False, decode=False, rngs=nnx.Rngs(0)
    )
    assert not np.allclose(drop(X), drop(X, deterministic=True))
    linen = hl.GatedMultiHeadAttention(HEADS)
    variables = linen.init(jax.random.key(0), X)
    g = jax.jit(jax.grad(lambda p: jnp.sum(linen.apply({"params": p}, X) ** 2)))(
        variables["params"]
    )
    assert g["gate"]["kernel"].shape == (8, HEADS, HEAD_DIM)


def test_attention_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown gate 'channel'"):
        hn.GatedMultiHeadAttention(HEADS, 8, gate="channel", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="normalize_qk=True"):
        hn.GatedMultiHeadAttention(HEADS, 8, normalize_qk=True, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="gate must be a string"):
        hl.GatedMultiHeadAttention(HEADS, gate=1)
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        hl.GatedMultiHeadAttention(0)


# --- docstrings generated from the tables -------------------------------------------------------


@pytest.mark.parametrize("front", [hn, hl])
def test_docstrings_list_every_gate_of_the_gate_table(front):
    """A gate added to the table appears in every docstring that lists the choices, NNX and
    Linen alike, and no placeholder is left unfilled."""
    from hadamard_jax._src import gates

    for cls in (front.GLU, front.GatedMLP):
        for name in gates.NAMES:
            assert f'``"{name}"``' in cls.__doc__, (cls, name)
    plain = [g.name for g in gates.GATES.values() if not g.clamps_value]
    clamped = [g.name for g in gates.GATES.values() if g.clamps_value]
    doc = front.GatedRMSNorm.__doc__
    assert all(f'``"{n}"``' in doc for n in plain) and not any(f'``"{n}"``' in doc for n in clamped)
    for name in ("GLU", "GatedMLP", "Highway", "GatedResidual", "GatedRMSNorm"):
        assert "{{" not in getattr(front, name).__doc__, name
    assert '``"headwise"``' in front.GatedMultiHeadAttention.__doc__


def test_an_option_without_a_check_is_refused():
    import dataclasses
    from typing import ClassVar

    from hadamard_jax._layers import glu

    @dataclasses.dataclass(frozen=True)
    class Unchecked(glu.GLUOptions):
        op: ClassVar[str] = "GLU"
        outfeatures: int = 3

    args = dict(out_features=3, activation="swiglu", approximate=False, fused_kernel=True)
    args |= dict(use_bias=True, dtype=None, param_dtype="float32", precision=None)
    args |= dict(
        kernel_init=glu.options.default_kernel_init, bias_init=glu.options.default_bias_init
    )
    assert glu.GLUOptions(**args).out_features == 3
    with pytest.raises(TypeError, match="GLU: unexpected argument 'outfeatures'"):
        Unchecked(**args)
