"""Mask, MaskedLinear and HardConcreteGate (NNX and Linen): fixed, straight-through and hard
concrete masks, the L0 penalty (Linen: sown per gate, scanned layers), dtype promotion, the ops'
defaults, argument checks at construction. Pruning: ``test_pruning.py``; NNX == Linen: the rows
of ``tests/test_parity.py``."""

import inspect
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import hadamard_jax as hj
from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import affine, nnx_rngs, normal, raises_in_both_front_ends, run_on_8_cpu_devices

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
    raises_in_both_front_ends(*case[1:])


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


# --- MaskedLinear(pattern=) (was test_masked_linear_pattern.py) --------------------------------
# ``MaskedLinear(pattern=)`` (NNX and Linen) and ``ste_mask(pattern=)``: the learned and the
# magnitude-initialised masks keep whole units of the same pattern objects as the mask makers,
# ``prune`` and ``sparsify``; the default (unstructured) is the mask of before.

N_IN, N_OUT = 8, 4
X_IN = jax.random.normal(jax.random.key(1), (2, N_IN))
#: Scores with large negative entries: a value ranking keeps them last, a magnitude one first.
SCORES = jax.random.normal(jax.random.key(2), (N_IN, N_OUT)) * jnp.array([[1.0, -3.0, 1.0, 2.0]])
SCORES_INIT = jax.nn.initializers.constant(SCORES)


def _nnx(**kw):
    return hn.MaskedLinear(N_IN, N_OUT, **kw, rngs=nnx.Rngs(0))


def _linen_mask(**kw):
    """The Linen layer's mask (its ``kernel * mask`` over its kernel) and its variables."""
    module = hl.MaskedLinear(N_OUT, use_bias=False, **kw)
    variables = module.init(jax.random.key(0), X_IN)
    kernel = variables["params"]["kernel"]
    eye = jnp.eye(N_IN)
    masked = module.apply(variables, eye)  # rows of kernel * mask
    return np.where(kernel != 0, np.asarray(masked) / np.asarray(kernel), np.nan), variables


# --- the default is today's mask ----------------------------------------------------------------


@pytest.mark.parametrize("pattern", [None, "unstructured", hj.Unstructured()])
def test_default_pattern_is_the_unstructured_ste_mask(pattern):
    kw = {} if pattern is None else {"pattern": pattern}
    layer = _nnx(mask_type="ste", sparsity=0.5, scores_init=SCORES_INIT, **kw)
    np.testing.assert_array_equal(layer.current_mask(), hj.ste_mask(SCORES, sparsity=0.5))
    assert layer.pattern == hj.Unstructured()
    fixed = _nnx(**kw)
    assert fixed.mask[...].all() and fixed.mask[...].dtype == jnp.bool_


# --- every pattern, NNX and Linen ---------------------------------------------------------------


def _assert_obeys(pattern, mask, scores, sparsity):
    """``mask`` keeps whole units of ``pattern``, the right count, the best by value."""
    mask = np.asarray(mask).astype(bool)
    s = np.asarray(scores)
    if isinstance(pattern, hj.NM):  # n of every m along the input axis, the n largest
        groups, values = mask.reshape(-1, pattern.m, N_OUT), s.reshape(-1, pattern.m, N_OUT)
        np.testing.assert_array_equal(groups.sum(axis=1), pattern.n)
        top = np.sort(values, axis=1)[:, -pattern.n :]
        kept = np.sort(np.where(groups, values, -np.inf), axis=1)[:, -pattern.n :]
        np.testing.assert_array_equal(kept, top)
        return
    if isinstance(pattern, hj.Block):
        bi, bo = pattern.shape
        blocks = mask.reshape(N_IN // bi, bi, N_OUT // bo, bo).transpose(0, 2, 1, 3)
        unit_kept = blocks.reshape(*blocks.shape[:2], -1)
        assert (unit_kept.all(-1) | ~unit_kept.any(-1)).all()  # whole blocks
        unit_kept = unit_kept[..., 0].ravel()
        unit_scores = s.reshape(N_IN // bi, bi, N_OUT // bo, bo).mean(axis=(1, 3)).ravel()
    else:  # Channel: whole slices along its axis, ranked by the sum of the scores
        moved = np.moveaxis(mask, pattern.axis, 0).reshape(mask.shape[pattern.axis], -1)
        assert (moved.all(-1) | ~moved.any(-1)).all()  # whole channels
        unit_kept = moved[:, 0]
        unit_scores = np.moveaxis(s, pattern.axis, 0).reshape(len(unit_kept), -1).sum(-1)
    units = unit_kept.size
    assert unit_kept.sum() == units - round(sparsity * units)
    assert unit_scores[unit_kept].min() >= unit_scores[~unit_kept].max()


PATTERNS = [
    (hj.NM(2, 4), None),
    (hj.Block((2, 2)), 0.5),
    (hj.Channel(), 0.25),
    (hj.Channel(axis=-2, norm=1), 0.5),
]


@pytest.mark.parametrize(("pattern", "sparsity"), PATTERNS, ids=str)
def test_ste_mask_obeys_the_pattern_nnx_and_linen(pattern, sparsity):
    kw = dict(mask_type="ste", sparsity=sparsity, pattern=pattern, scores_init=SCORES_INIT)
    mask = _nnx(**kw).current_mask()
    _assert_obeys(pattern, mask, SCORES, 0.5 if sparsity is None else sparsity)
    np.testing.assert_array_equal(mask, hj.ste_mask(SCORES, sparsity=sparsity, pattern=pattern))
    linen_mask, _ = _linen_mask(**kw)
    np.testing.assert_array_equal(linen_mask, mask)


@pytest.mark.parametrize(("pattern", "sparsity"), PATTERNS[:2], ids=str)
def test_fixed_mask_starts_magnitude_pruned_in_the_pattern(pattern, sparsity):
    layer = _nnx(pattern=pattern, sparsity=sparsity)
    kernel = layer.kernel[...]
    expected = pattern.mask(kernel, sparsity)
    np.testing.assert_array_equal(layer.mask[...], expected)
    _assert_obeys(pattern, layer.mask[...], jnp.abs(kernel), 0.5)
    linen_mask, variables = _linen_mask(pattern=pattern, sparsity=sparsity)
    stored = variables["masks"]["mask"]
    np.testing.assert_array_equal(stored, pattern.mask(variables["params"]["kernel"], sparsity))
    np.testing.assert_array_equal(np.nan_to_num(linen_mask, nan=0.0), stored)


def test_channel_l2_ranks_signed_scores_by_value():
    # A channel of large negative scores has the largest L2 norm but ranks last by value.
    scores = jnp.array([[1.0, -5.0, 0.5], [1.0, -5.0, 0.5]])
    mask = hj.ste_mask(scores, sparsity=1 / 3, pattern=hj.Channel(norm=2))
    np.testing.assert_array_equal(mask, [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    magnitude = hj.Channel(norm=2).mask(scores, 1 / 3)  # by norm: the smallest, 0.5, goes
    np.testing.assert_array_equal(magnitude, [[True, True, False], [True, True, False]])


# --- straight-through gradient ------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [hj.NM(2, 4), hj.Channel()], ids=str)
def test_scores_get_the_straight_through_gradient(pattern):
    sparsity = None if isinstance(pattern, hj.NM) else 0.5
    layer = _nnx(mask_type="ste", sparsity=sparsity, pattern=pattern, use_bias=False)
    g_out = jax.random.normal(jax.random.key(4), (2, N_OUT))

    def loss(layer):
        return jnp.sum(layer(X_IN) * g_out)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(layer)
    expected = (X_IN.T @ g_out) * layer.kernel[...]  # d loss / d mask, passed to the scores
    np.testing.assert_allclose(grads["scores"][...], expected, rtol=1e-5, atol=1e-6)
    pruned = np.asarray(layer.current_mask()) == 0
    assert pruned.any() and np.all(np.asarray(grads["scores"][...])[pruned] != 0)

    module = hl.MaskedLinear(N_OUT, mask_type="ste", sparsity=sparsity, pattern=pattern)
    params = module.init(jax.random.key(0), X_IN)["params"]
    g = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, X_IN) * g_out))(params)
    np.testing.assert_allclose(
        g["scores"], (X_IN.T @ g_out) * params["kernel"], rtol=1e-5, atol=1e-6
    )


# --- strings and errors -------------------------------------------------------------------------


def test_strings_are_the_default_objects():
    by_name = _nnx(mask_type="ste", pattern="nm", scores_init=SCORES_INIT)
    assert by_name.pattern == hj.NM(2, 4, 0)  # resolved for the kernel [in, out]
    np.testing.assert_array_equal(by_name.current_mask(), hj.ste_mask(SCORES, pattern=hj.NM(2, 4)))
    channel = hl.MaskedLinear(N_OUT, mask_type="ste", sparsity=0.5, pattern="channel")
    assert channel.options.pattern == hj.Channel()


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (dict(mask_type="hard_concrete", pattern=hj.NM(2, 4)), ValueError,
         r"pattern=NM\(.*mask_type='hard_concrete'"),
        (dict(mask_type="ste", threshold=0.1, pattern=hj.NM(2, 4)), ValueError,
         r"threshold= keeps single scores; pattern=NM"),
        (dict(mask_type="ste", pattern=hj.Block((2, 2))), ValueError,
         r"pattern=Block\(.*needs sparsity="),
        (dict(mask_type="ste", sparsity=0.25, pattern=hj.NM(2, 4)), ValueError,
         r"2:4 pattern has sparsity 0.5, but sparsity=0.25"),
        (dict(pattern="block"), ValueError, r"pattern='block' needs arguments"),
        (dict(pattern="diagonal"), ValueError, r"unknown pattern 'diagonal'"),
        (dict(pattern=2), TypeError, r"MaskedLinear: pattern must be"),
        (dict(pattern=hj.NM(2, 4), mask_init=jax.nn.initializers.zeros), ValueError,
         r"mask_init and sparsity=None/pattern=NM"),
        (dict(mask_type="hard_concrete", sparsity=0.5), ValueError,
         r"sparsity/threshold apply to mask_type='ste'"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(kw, error, match):
    with pytest.raises(error, match=match):
        _nnx(**kw)
    with pytest.raises(error, match=match):
        hl.MaskedLinear(N_OUT, **kw)


def test_a_pattern_that_does_not_fit_the_kernel():
    match = r"MaskedLinear: NM.m=3 must divide the length of axis 0, got kernel.shape=\(8, 4\)"
    with pytest.raises(ValueError, match=match):
        _nnx(mask_type="ste", pattern=hj.NM(1, 3))
    with pytest.raises(ValueError, match=match):
        hl.MaskedLinear(N_OUT, mask_type="ste", pattern=hj.NM(1, 3)).init(jax.random.key(0), X_IN)


def test_ste_mask_pattern_errors():
    s = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"ste_mask: pattern=NM\(.*by sparsity=, got k=2"):
        hj.ste_mask(s, k=2, pattern="nm")
    with pytest.raises(ValueError, match=r"ste_mask: pattern=Channel\(.*needs sparsity="):
        hj.ste_mask(s, pattern="channel")


_EXPLICIT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj
    from hadamard_jax._layers import masks

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    sharding = NamedSharding(mesh, P("data", "model"))
    scores = jax.device_put(jax.random.normal(jax.random.key(0), (8, 4)), sharding)
    with jax.set_mesh(mesh):
        for pattern, sparsity in [(hj.NM(2, 4), None), (hj.Channel(), 0.5)]:
            ste = lambda s: masks.ste_units(s, sparsity, pattern)
            out = jax.jit(ste)(scores)
            grad = jax.jit(jax.grad(lambda s: (ste(s) * s).sum()))(scores)
            expected = hj.ste_mask(jax.device_get(scores), sparsity=sparsity, pattern=pattern)
            assert (jax.device_get(out) == expected).all(), pattern
            assert out.sharding.spec == grad.sharding.spec == sharding.spec, out.sharding.spec
    print("PATTERN EXPLICIT OK")
    """
)


def test_pattern_ste_mask_under_explicit_mesh_axes():
    # The kernel-wide ranking gathers the scores; the mask and the gradient keep their sharding.
    run_on_8_cpu_devices(_EXPLICIT, "PATTERN EXPLICIT OK")
