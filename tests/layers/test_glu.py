"""GLU and GatedMLP (NNX and Linen): values against the ops and the plain composition, dropout,
argument checks at construction. NNX == Linen: the rows of ``tests/test_parity.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax as hj
from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import affine, nnx_rngs, normal, raises_in_both_front_ends

X = normal(42, (3, 4))

ACTS = {
    "swiglu": jax.nn.silu,
    "geglu": lambda g: jax.nn.gelu(g, approximate=False),
    "reglu": jax.nn.relu,
    "glu": jax.nn.sigmoid,
    "bilinear": lambda g: g,
}


@pytest.mark.parametrize("activation", list(ACTS))
def test_glu_fused_and_two_kernels(activation):
    act = ACTS[activation]
    layer = hn.GLU(
        4, 5, activation=activation, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0)
    )
    y = affine(X, layer.kernel[...], layer.bias[...])
    value, gate = y[:, :5], y[:, 5:]  # jax.nn.glu layout: value half first, gate half second
    np.testing.assert_allclose(layer(X), act(gate) * value, rtol=1e-5, atol=1e-6)
    two = hn.GLU(4, 5, activation=activation, fused_kernel=False, use_bias=False, rngs=nnx.Rngs(0))
    assert {"gate_kernel", "value_kernel"} == set(nnx.state(two, nnx.Param).keys())
    ref = act(X @ two.gate_kernel[...]) * (X @ two.value_kernel[...])
    np.testing.assert_allclose(two(X), ref, rtol=1e-5, atol=1e-6)
    if activation == "glu":
        np.testing.assert_allclose(layer(X), jax.nn.glu(y, axis=-1), rtol=1e-6)


def test_glu_approximate_and_dtype():
    layer = hn.GLU(4, 5, activation="geglu", approximate=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = layer(X)
    assert out.dtype == jnp.bfloat16 and layer.kernel[...].dtype == jnp.float32
    y = affine(X, layer.kernel[...], layer.bias[...])
    ref = jax.nn.gelu(y[:, 5:], approximate=True) * y[:, :5]
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=5e-2, atol=5e-2)


def test_gated_mlp_matches_op_and_dropout():
    mlp = hn.GatedMLP(4, 8, 6, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    p = {k: v[...] for k, v in nnx.state(mlp, nnx.Param).items()}
    g = affine(X, p["gate_kernel"], p["gate_bias"])
    u = affine(X, p["up_kernel"], p["up_bias"])
    ref = affine(jax.nn.silu(g) * u, p["down_kernel"], p["down_bias"])
    np.testing.assert_allclose(mlp(X), ref, rtol=1e-5, atol=1e-5)
    assert mlp(X).shape == (3, 6)

    drop = hn.GatedMLP(4, 64, dropout_rate=0.5, rngs=nnx.Rngs(0))
    eval_out = drop(X, deterministic=True)
    a, b = drop(X), drop(X)  # the stream advances: two different masks
    assert not np.allclose(a, b) and not np.allclose(a, eval_out)
    drop.eval()
    np.testing.assert_array_equal(drop(X), eval_out)
    drop.train()
    # Against the op with the same key: a boolean keep-mask scaled by 1/keep.
    key = jax.random.key(7)
    mask = jax.random.bernoulli(key, 0.5, (3, 64))
    p = {k: v[...] for k, v in nnx.state(drop, nnx.Param).items()}
    ref = hj.gated_mlp(
        X,
        p["gate_kernel"],
        p["up_kernel"],
        p["down_kernel"],
        b_gate=p["gate_bias"],
        b_up=p["up_bias"],
        b_down=p["down_bias"],
        hidden_mask=mask,
        hidden_scale=2.0,
    )
    np.testing.assert_allclose(drop(X, rngs=key), ref, rtol=1e-6)
    no_rngs = hn.GatedMLP(4, 8, dropout_rate=0.1, rngs=nnx.Rngs(0))
    no_rngs.rngs = None
    with pytest.raises(ValueError, match="GatedMLP: deterministic is False but no rngs"):
        no_rngs(X)


def _variables_of(model):
    """An NNX model's params and masks as Linen variables."""
    out = {}
    for collection, kind in (("params", nnx.Param), ("masks", hn.MaskVar)):
        state = nnx.state(model, kind)
        if state:
            out[collection] = nnx.to_pure_dict(state)
    return out


def test_dropout():
    model = hn.GatedMLP(4, 16, dropout_rate=0.5, rngs=nnx.Rngs(0))
    module = hl.GatedMLP(16, dropout_rate=0.5)
    variables = _variables_of(model)
    a = module.apply(variables, X, rngs={"dropout": jax.random.key(9)})
    again = module.apply(variables, X, rngs={"dropout": jax.random.key(9)})
    b = module.apply(variables, X, rngs={"dropout": jax.random.key(10)})
    det = module.apply(variables, X, deterministic=True)
    np.testing.assert_array_equal(a, again)
    np.testing.assert_array_equal(det, model(X, deterministic=True))
    assert not np.allclose(a, b) and not np.allclose(a, det)
    assert hl.GatedMLP(16, dropout_rate=0.5, deterministic=True).apply(variables, X).shape == (3, 4)


# (name, nnx constructor, linen constructor or None, exception, message)
BAD = [
    (
        "glu in 0",
        lambda: hn.GLU(0, 3, rngs=nnx_rngs()),
        None,
        ValueError,
        "in_features must be >= 1",
    ),
    (
        "glu out 0",
        lambda: hn.GLU(3, 0, rngs=nnx_rngs()),
        lambda: hl.GLU(0),
        ValueError,
        "out_features",
    ),
    ("glu out -1", lambda: hn.GLU(3, -1, rngs=nnx_rngs()), lambda: hl.GLU(-1), ValueError, "out_f"),
    (
        "glu out 2.0",
        lambda: hn.GLU(3, 2.0, rngs=nnx_rngs()),
        lambda: hl.GLU(2.0),
        TypeError,
        "out_f",
    ),
    (
        "glu activation",
        lambda: hn.GLU(3, 3, activation="tanh", rngs=nnx_rngs()),
        lambda: hl.GLU(3, activation="tanh"),
        ValueError,
        "GLU: unknown activation 'tanh'",
    ),
    (
        "glu activation type",
        lambda: hn.GLU(3, 3, activation=jax.nn.silu, rngs=nnx_rngs()),
        lambda: hl.GLU(3, activation=jax.nn.silu),
        TypeError,
        "activation must be a string",
    ),
    (
        "glu approximate",
        lambda: hn.GLU(3, 3, activation="geglu", approximate="yes", rngs=nnx_rngs()),
        lambda: hl.GLU(3, activation="geglu", approximate="yes"),
        TypeError,
        "approximate must be a static bool",
    ),
    (
        "glu approximate swiglu",
        lambda: hn.GLU(3, 3, approximate=True, rngs=nnx_rngs()),
        lambda: hl.GLU(3, approximate=True),
        ValueError,
        "approximate=True",
    ),
    (
        "mlp hidden -2",
        lambda: hn.GatedMLP(4, -2, rngs=nnx_rngs()),
        lambda: hl.GatedMLP(-2),
        ValueError,
        "hidden_features must be >= 1",
    ),
    (
        "mlp out 0",
        lambda: hn.GatedMLP(4, 8, 0, rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, 0),
        ValueError,
        "out_features",
    ),
    (
        "mlp dropout 1",
        lambda: hn.GatedMLP(4, 8, dropout_rate=1.0, rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate=1.0),
        ValueError,
        "dropout_rate must be in \\[0, 1\\)",
    ),
    (
        "mlp dropout str",
        lambda: hn.GatedMLP(4, 8, dropout_rate="0.1", rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate="0.1"),
        TypeError,
        "dropout_rate",
    ),
    (
        "mlp dropout array",
        lambda: hn.GatedMLP(4, 8, dropout_rate=jnp.array(0.1), rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate=jnp.array(0.1)),
        TypeError,
        "dropout_rate",
    ),
    (
        "mlp deterministic",
        lambda: hn.GatedMLP(4, 8, deterministic=1, rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, deterministic=1),
        TypeError,
        "deterministic must be a static bool",
    ),
    (
        "mlp masked",
        lambda: hn.GatedMLP(4, 8, masked="yes", rngs=nnx_rngs()),
        lambda: hl.GatedMLP(8, masked="yes"),
        TypeError,
        "masked",
    ),
    (
        "param_dtype",
        lambda: hn.GLU(4, 4, param_dtype="float99", rngs=nnx_rngs()),
        lambda: hl.GLU(4, param_dtype="float99"),
        TypeError,
        "param_dtype",
    ),
    (
        "kernel_init",
        lambda: hn.GLU(4, 4, kernel_init=0.1, rngs=nnx_rngs()),
        lambda: hl.GLU(4, kernel_init=0.1),
        TypeError,
        "kernel_init must be callable",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_at_construction(case):
    raises_in_both_front_ends(*case[1:])


def test_argument_errors():
    with pytest.raises(ValueError, match="GLU: unknown activation 'tanh'"):
        hn.GLU(4, 4, activation="tanh", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GatedMLP: approximate=True"):
        hn.GatedMLP(4, 4, activation="swiglu", approximate=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        hn.GatedMLP(4, 4, dropout_rate=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"GatedMLP: expected inputs with last axis 4.*\(3, 5\)"):
        hn.GatedMLP(4, 8, rngs=nnx.Rngs(0))(jnp.ones((3, 5)))
