"""Highway and GatedResidual (NNX and Linen): values against the plain composition, argument
checks at construction. NNX == Linen: the rows of ``tests/test_parity.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import affine, nnx_rngs, normal, raises_in_both_front_ends

X = normal(42, (3, 4))


def test_highway():
    layer = hn.Highway(4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.gate_bias[...], -2.0)
    p = {k: v[...] for k, v in nnx.state(layer, nnx.Param).items()}
    t = jax.nn.sigmoid(affine(X, p["gate_kernel"], p["gate_bias"]))
    h = jax.nn.relu(affine(X, p["kernel"], p["bias"]))
    np.testing.assert_allclose(layer(X), t * h + (1 - t) * X, rtol=1e-5, atol=1e-6)


def test_gated_residual():
    grn = hn.GatedResidual(4, 8, 6, context_features=2, rngs=nnx.Rngs(0))
    c = jnp.ones((3, 2))
    p = nnx.state(grn, nnx.Param)
    eta = jax.nn.elu(
        affine(X, p["hidden"]["kernel"][...], p["hidden"]["bias"][...])
        + c @ p["context"]["kernel"][...]
    )
    eta = affine(eta, p["output"]["kernel"][...], p["output"]["bias"][...])
    gl = p["glu"]
    gated = jax.nn.sigmoid(affine(eta, gl["gate_kernel"][...], gl["gate_bias"][...])) * affine(
        eta, gl["value_kernel"][...], gl["value_bias"][...]
    )
    z = affine(X, p["skip"]["kernel"][...], p["skip"]["bias"][...]) + gated
    mean, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    ref = (z - mean) / jnp.sqrt(var + 1e-6)
    np.testing.assert_allclose(grn(X, c), ref, rtol=1e-4, atol=1e-4)
    same = hn.GatedResidual(4, 8, rngs=nnx.Rngs(0))
    assert same.skip is None and same(X).shape == (3, 4)
    with pytest.raises(ValueError, match="context_features is None"):
        same(X, c)


# (name, nnx constructor, linen constructor or None, exception, message)
BAD = [
    (
        "highway 0",
        lambda: hn.Highway(0, rngs=nnx_rngs()),
        lambda: hl.Highway(0),
        ValueError,
        "feat",
    ),
    (
        "highway activation",
        lambda: hn.Highway(4, activation="relu", rngs=nnx_rngs()),
        lambda: hl.Highway(4, activation="relu"),
        TypeError,
        "activation must be callable",
    ),
    (
        "grn hidden -1",
        lambda: hn.GatedResidual(4, -1, rngs=nnx_rngs()),
        lambda: hl.GatedResidual(-1),
        ValueError,
        "hidden_features",
    ),
    (
        "grn context 0",
        lambda: hn.GatedResidual(4, 8, context_features=0, rngs=nnx_rngs()),
        lambda: hl.GatedResidual(8, context_features=0),
        ValueError,
        "context_features",
    ),
    (
        "grn dropout",
        lambda: hn.GatedResidual(4, 8, dropout_rate=-0.1, rngs=nnx_rngs()),
        lambda: hl.GatedResidual(8, dropout_rate=-0.1),
        ValueError,
        "dropout_rate",
    ),
    (
        "grn epsilon",
        lambda: hn.GatedResidual(4, 8, epsilon=0.0, rngs=nnx_rngs()),
        lambda: hl.GatedResidual(8, epsilon=0.0),
        ValueError,
        "epsilon",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_at_construction(case):
    raises_in_both_front_ends(*case[1:])
