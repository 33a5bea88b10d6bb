"""GatedMultiHeadAttention (NNX and Linen): values against Flax's attention and the plain
composition, masks, decoding, transforms, dropout and errors. NNX == Linen: the rows of
``tests/test_parity.py``."""

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
