"""GatedRMSNorm (NNX and Linen): values against the plain composition in both orders, a scan
over layers, errors. NNX == Linen: the rows of ``tests/test_parity.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from tests.utils import normal

X = normal(1, (2, 5, 8))


def _rms_plain(x, g, s, before):
    def rms(z):
        return z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-6)

    with jax.numpy_rank_promotion("allow"):
        return rms(x) * s * jax.nn.silu(g) if before else rms(x * jax.nn.silu(g)) * s


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
