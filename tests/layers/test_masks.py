"""Mask, MaskedLinear and HardConcreteGate (NNX and Linen): fixed, straight-through and hard
concrete masks, the L0 penalty (Linen: sown per gate, scanned layers), dtype promotion, the ops'
defaults, argument checks at construction. Pruning: ``test_pruning.py``; NNX == Linen: the rows
of ``tests/test_parity.py``."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import hadamard_jax as hj
from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import affine, nnx_rngs, normal

X = normal(42, (3, 4))


def test_mask_module_and_mask_variables():
    m = jnp.array([True, False, True, True])
    layer = hn.Mask((4,), mask_init=nnx.initializers.constant(m), fill=-1.0)
    np.testing.assert_array_equal(layer(X), jnp.where(m, X, -1.0))
    assert isinstance(layer.mask, hn.MaskVar) and layer.mask[...].dtype == jnp.bool_
    assert not nnx.state(layer, nnx.Param)  # not trainable
    g = nnx.grad(lambda mod, x: mod(x).sum(), argnums=1)(layer, X)
    np.testing.assert_array_equal(g, jnp.broadcast_to(m, X.shape).astype(jnp.float32))


def test_ste_masked_linear():
    layer = hn.MaskedLinear(8, 4, mask_type="ste", sparsity=0.75, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.scores[...], jnp.abs(layer.kernel[...]))
    mask = layer.current_mask()
    assert int(mask.sum()) == 8
    np.testing.assert_array_equal(mask, hj.magnitude_mask(layer.kernel[...], 0.75))
    grads = nnx.grad(lambda m: m(X @ jnp.ones((4, 8))).sum())(layer)
    # Straight-through: d/ds = d/d(w*m) * w, non-zero also where the mask is 0.
    gk = grads["kernel"][...]
    gs = grads["scores"][...]
    np.testing.assert_array_equal(np.asarray(gk)[~np.asarray(mask, bool)], 0)
    expected = (jnp.ones((3, 8)) * X.sum(-1, keepdims=True)).T @ jnp.ones((3, 4))
    np.testing.assert_allclose(gs, expected * layer.kernel[...], rtol=1e-5)
    thr = hn.MaskedLinear(8, 4, mask_type="ste", threshold=0.5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(thr.current_mask(), (jnp.abs(thr.kernel[...]) > 0.5))


def test_hard_concrete():
    layer = hn.MaskedLinear(8, 4, mask_type="hard_concrete", rngs=nnx.Rngs(0))
    x = jnp.ones((2, 8))
    dense = affine(x, layer.kernel[...], layer.bias[...])
    np.testing.assert_allclose(layer(x, deterministic=True), dense, rtol=1e-6)  # all gates open
    a, b = layer(x), layer(x)
    assert not np.allclose(a, b)  # sampled gates
    pen = layer.l0_penalty()
    np.testing.assert_allclose(pen, hj.l0_penalty(layer.gate.log_alpha[...]), rtol=1e-6)
    np.testing.assert_allclose(hn.l0_penalty(layer), pen, rtol=1e-6)
    g = nnx.grad(lambda m: m.l0_penalty())(layer)
    assert float(jnp.abs(g["gate"]["log_alpha"][...]).sum()) > 0
    gate = hn.HardConcreteGate(
        (4,), log_alpha_init=nnx.initializers.constant(-10.0), rngs=nnx.Rngs(0)
    )
    gate.eval()
    np.testing.assert_array_equal(gate(X), 0.0)


def test_hard_concrete_l0_and_sampling():
    module = hl.MaskedLinear(6, mask_type="hard_concrete")
    variables = module.init(jax.random.key(0), X, deterministic=True)
    log_alpha = variables["params"]["gate"]["log_alpha"]

    def penalty(params):  # each gate sows its own penalty during apply
        _, state = module.apply({"params": params}, X, deterministic=True, mutable="intermediates")
        return hl.l0_penalty(state)

    np.testing.assert_allclose(penalty(variables["params"]), hj.l0_penalty(log_alpha), rtol=1e-6)
    g = jax.grad(penalty)(variables["params"])
    assert float(jnp.abs(g["gate"]["log_alpha"]).sum()) > 0
    a = module.apply(variables, X, rngs={"hard_concrete": jax.random.key(1)})
    b = module.apply(variables, X, rngs={"hard_concrete": jax.random.key(2)})
    assert not np.allclose(a, b)


# (name, nnx constructor, linen constructor or None, exception, message)
BAD = [
    ("mask shape", lambda: hn.Mask((3, -1)), lambda: hl.Mask((3, -1)), ValueError, "shape\\[1\\]"),
    (
        "mask fill",
        lambda: hn.Mask((3,), fill="0"),
        lambda: hl.Mask((3,), fill="0"),
        TypeError,
        "fill",
    ),
    (
        "gate beta",
        lambda: hn.HardConcreteGate((4,), beta=-1.0, rngs=nnx_rngs()),
        lambda: hl.HardConcreteGate((4,), beta=-1.0),
        ValueError,
        "HardConcreteGate: beta must be",
    ),
    (
        "gate zeta",
        lambda: hn.HardConcreteGate((4,), zeta=0.5, rngs=nnx_rngs()),
        lambda: hl.HardConcreteGate((4,), zeta=0.5),
        ValueError,
        "zeta",
    ),
    (
        "gate shape",
        lambda: hn.HardConcreteGate((-4,), rngs=nnx_rngs()),
        lambda: hl.HardConcreteGate((-4,)),
        ValueError,
        "shape\\[0\\]",
    ),
    (
        "masked in -1",
        lambda: hn.MaskedLinear(-1, 4, rngs=nnx_rngs()),
        None,
        ValueError,
        "in_features must be >= 1",
    ),
    (
        "masked out 0",
        lambda: hn.MaskedLinear(4, 0, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(0),
        ValueError,
        "out_features",
    ),
    (
        "mask_type",
        lambda: hn.MaskedLinear(4, 4, mask_type="soft", rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="soft"),
        ValueError,
        "unknown mask_type 'soft'",
    ),
    (
        "mask_type type",
        lambda: hn.MaskedLinear(4, 4, mask_type=None, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type=None),
        TypeError,
        "mask_type must be a string",
    ),
    (
        "ste sparsity str",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity="0.5", rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity="0.5"),
        TypeError,
        "sparsity",
    ),
    (
        "ste sparsity bool",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity=True, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity=True),
        TypeError,
        "sparsity",
    ),
    (
        "ste sparsity 2",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity=2.0, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity=2.0),
        ValueError,
        "sparsity must be in \\[0, 1\\]",
    ),
    (
        "ste threshold str",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", threshold="0.5", rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", threshold="0.5"),
        TypeError,
        "threshold",
    ),
    (
        "ste needs one",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste"),
        ValueError,
        "needs exactly one",
    ),
    (
        "masked beta",
        lambda: hn.MaskedLinear(4, 4, mask_type="hard_concrete", beta=0.0, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="hard_concrete", beta=0.0),
        ValueError,
        "MaskedLinear: beta must be",
    ),
    (
        "masked deterministic",
        lambda: hn.MaskedLinear(4, 4, deterministic="no", rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, deterministic="no"),
        TypeError,
        "deterministic",
    ),
    (
        "use_bias",
        lambda: hn.MaskedLinear(4, 4, use_bias=None, rngs=nnx_rngs()),
        lambda: hl.MaskedLinear(4, use_bias=None),
        TypeError,
        "use_bias",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_at_construction(case):
    _, make_nnx, make_linen, error, match = case
    with pytest.raises(error, match=match):
        make_nnx()
    if make_linen is not None:  # Linen: when the module is constructed, before init
        with pytest.raises(error, match=match):
            make_linen()


@pytest.mark.parametrize("rule", [{"sparsity": 0.5}, {"threshold": 0.2}])
def test_ste_masked_linear_is_the_public_ste_mask(rule):
    # Once a private ste_mask(scores, sparsity, threshold) shadowed hj.ste_mask in the Flax
    # code: both front ends' "ste" mask, and its straight-through gradient, are the public op's.
    x, kernel, scores = normal(1, (2, 4)), normal(2, (4, 3)), normal(3, (4, 3))

    def want(scores):
        return x @ (kernel * hj.ste_mask(scores, **rule))

    layer = hn.MaskedLinear(4, 3, mask_type="ste", use_bias=False, **rule, rngs=nnx_rngs())
    layer.kernel[...], layer.scores[...] = kernel, scores
    module = hl.MaskedLinear(3, mask_type="ste", use_bias=False, **rule)
    params = {"kernel": kernel, "scores": scores}
    np.testing.assert_array_equal(layer.current_mask(), hj.ste_mask(scores, **rule))
    grad_want = jax.grad(lambda s: jnp.sum(want(s) ** 2))(scores)
    grad_nnx = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)["scores"][...]
    grad_linen = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) ** 2))(params)
    for out in (layer(x), module.apply({"params": params}, x)):
        np.testing.assert_allclose(out, want(scores), rtol=1e-6)
    for grad in (grad_nnx, grad_linen["scores"]):
        np.testing.assert_allclose(grad, grad_want, rtol=1e-6)


def test_hard_concrete_defaults_are_the_ops_defaults():
    # Once the defaults (beta 2/3, gamma -0.1, zeta 1.1) were copied into each module: every
    # entry point with the defaults gives the ops' gate and L0 penalty (the penalty depends on
    # all three), and every signature shows the same default values.
    log_alpha = normal(4, (4, 3), scale=2.0)
    gate, penalty = hj.hard_concrete(None, log_alpha, deterministic=True), hj.l0_penalty(log_alpha)
    x = normal(5, (2, 4))
    hcg = hn.HardConcreteGate((4, 3), rngs=nnx_rngs())
    masked = hn.MaskedLinear(4, 3, mask_type="hard_concrete", use_bias=False, rngs=nnx_rngs())
    hcg.log_alpha[...] = masked.gate.log_alpha[...] = log_alpha
    masked.kernel[...] = kernel = normal(6, (4, 3))
    np.testing.assert_allclose(hcg(jnp.ones((4, 3)), deterministic=True), gate, rtol=1e-6)
    np.testing.assert_allclose(masked.current_mask(deterministic=True), gate, rtol=1e-6)
    for model in (hcg, masked):
        np.testing.assert_allclose(model.l0_penalty(), penalty, rtol=1e-6)
    linen = [
        (hl.HardConcreteGate((4, 3)), {"log_alpha": log_alpha}, jnp.ones((4, 3)), gate),
        (
            hl.MaskedLinear(3, mask_type="hard_concrete", use_bias=False),
            {"kernel": kernel, "gate": {"log_alpha": log_alpha}},
            x,
            x @ (kernel * gate),
        ),
    ]
    for module, params, inputs, want in linen:
        out, state = module.apply(
            {"params": params}, inputs, deterministic=True, mutable="intermediates"
        )
        np.testing.assert_allclose(out, want, rtol=1e-6)
        np.testing.assert_allclose(hl.l0_penalty(state), penalty, rtol=1e-6)
    entry_points = [hj.hard_concrete, hj.l0_penalty, hn.HardConcreteGate.__init__]
    entry_points += [hn.MaskedLinear.__init__, hl.HardConcreteGate, hl.MaskedLinear]
    for fn in entry_points:
        params = inspect.signature(fn).parameters
        defaults = {k: params[k].default for k in ("beta", "gamma", "zeta")}
        assert defaults == {"beta": 2.0 / 3.0, "gamma": -0.1, "zeta": 1.1}, fn


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_, jnp.bfloat16, jnp.float32])
def test_hard_concrete_gate_promotes_like_a_product(dtype):
    half = jax.nn.initializers.constant(0.0)  # deterministic gate sigmoid(0)*1.2 - 0.1 = 0.5
    x = jnp.array([10, 10, 3, 1]).astype(dtype)
    gate = hn.HardConcreteGate((4,), log_alpha_init=half, deterministic=True, rngs=nnx_rngs())
    z = gate.gate()
    np.testing.assert_allclose(z, 0.5, rtol=1e-6)
    expected = x * z
    out = gate(x)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))
    module = hl.HardConcreteGate((4,), log_alpha_init=half, deterministic=True)
    variables = module.init(jax.random.key(0), x)
    out = module.apply(variables, x)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))


class _TwoGates(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = hl.HardConcreteGate((4,), beta=0.3, gamma=-0.2, name="a")(x, deterministic=True)
        b = hl.MaskedLinear(4, mask_type="hard_concrete", beta=0.9, zeta=1.5, name="b")
        return b(a, deterministic=True)


def test_linen_l0_penalty_uses_each_gates_own_parameters():
    model = _TwoGates()
    variables = model.init(jax.random.key(0), X)
    p = variables["params"]
    expected = hj.l0_penalty(p["a"]["log_alpha"], beta=0.3, gamma=-0.2) + hj.l0_penalty(
        p["b"]["gate"]["log_alpha"], beta=0.9, zeta=1.5
    )
    _, state = model.apply(variables, X, mutable="intermediates")
    np.testing.assert_allclose(hl.l0_penalty(state), expected, rtol=1e-6)
    np.testing.assert_allclose(hl.l0_penalty({**variables, **state}), expected, rtol=1e-6)
    # The NNX equivalent agrees, and so does each gate's own method.
    nnx_a = hn.HardConcreteGate((4,), beta=0.3, gamma=-0.2, rngs=nnx_rngs())
    nnx_b = hn.MaskedLinear(4, 4, mask_type="hard_concrete", beta=0.9, zeta=1.5, rngs=nnx_rngs())
    np.testing.assert_allclose(hn.l0_penalty(nnx_a) + hn.l0_penalty(nnx_b), expected, rtol=1e-6)
    gate = hl.HardConcreteGate((4,), beta=0.3, gamma=-0.2)
    np.testing.assert_allclose(
        gate.apply({"params": p["a"]}, method="l0_penalty"),
        hj.l0_penalty(p["a"]["log_alpha"], beta=0.3, gamma=-0.2),
        rtol=1e-6,
    )
    # Differentiable through apply; a call twice in one apply still counts each gate once.
    grads = jax.grad(
        lambda params: hl.l0_penalty(model.apply({"params": params}, X, mutable="intermediates")[1])
    )(p)
    assert float(jnp.abs(grads["a"]["log_alpha"]).sum()) > 0
    # Params alone cannot say which beta each gate has: a clear error, not a wrong number.
    with pytest.raises(ValueError, match="mutable='intermediates'"):
        hl.l0_penalty(variables)


def test_linen_l0_penalty_of_scanned_layers():
    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return hl.HardConcreteGate((4,), beta=0.5)(x, deterministic=True), None

    stack = nn.scan(
        Layer,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True},
        length=3,
    )()
    init = jax.nn.initializers.normal(1.0)
    variables = stack.init(jax.random.key(0), X, None)
    log_alpha = init(jax.random.key(1), (3, 4))
    params = {"HardConcreteGate_0": {"log_alpha": log_alpha}}
    _, state = stack.apply({"params": params}, X, None, mutable="intermediates")
    np.testing.assert_allclose(hl.l0_penalty(state), hj.l0_penalty(log_alpha, beta=0.5), rtol=1e-6)
    assert set(variables) == {"params"}


def test_masked_linear_argument_errors():
    with pytest.raises(ValueError, match="mask_type='ste' needs exactly one"):
        hn.MaskedLinear(4, 4, mask_type="ste", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown mask_type"):
        hn.MaskedLinear(4, 4, mask_type="soft", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="l0_penalty\\(\\) needs mask_type='hard_concrete'"):
        hn.MaskedLinear(4, 4, rngs=nnx.Rngs(0)).l0_penalty()
