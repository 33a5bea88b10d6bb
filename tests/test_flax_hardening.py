"""Regression tests of the Flax front ends (issue "Hardening"): argument checks at construction,
one rounding rule, stacked pruning, dtype promotion, Linen L0 penalties, and the layout."""

import dataclasses
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
from tests.utils import normal

X = normal(42, (3, 4))


def _rngs():
    return nnx.Rngs(0)


# --- bad arguments: a clear TypeError/ValueError naming the argument, at construction ----------

# (name, nnx constructor, linen constructor or None, exception, message)
BAD = [
    ("glu in 0", lambda: hn.GLU(0, 3, rngs=_rngs()), None, ValueError, "in_features must be >= 1"),
    (
        "glu out 0",
        lambda: hn.GLU(3, 0, rngs=_rngs()),
        lambda: hl.GLU(0),
        ValueError,
        "out_features",
    ),
    ("glu out -1", lambda: hn.GLU(3, -1, rngs=_rngs()), lambda: hl.GLU(-1), ValueError, "out_f"),
    ("glu out 2.0", lambda: hn.GLU(3, 2.0, rngs=_rngs()), lambda: hl.GLU(2.0), TypeError, "out_f"),
    (
        "glu activation",
        lambda: hn.GLU(3, 3, activation="tanh", rngs=_rngs()),
        lambda: hl.GLU(3, activation="tanh"),
        ValueError,
        "GLU: unknown activation 'tanh'",
    ),
    (
        "glu activation type",
        lambda: hn.GLU(3, 3, activation=jax.nn.silu, rngs=_rngs()),
        lambda: hl.GLU(3, activation=jax.nn.silu),
        TypeError,
        "activation must be a string",
    ),
    (
        "glu approximate",
        lambda: hn.GLU(3, 3, activation="geglu", approximate="yes", rngs=_rngs()),
        lambda: hl.GLU(3, activation="geglu", approximate="yes"),
        TypeError,
        "approximate must be a static bool",
    ),
    (
        "glu approximate swiglu",
        lambda: hn.GLU(3, 3, approximate=True, rngs=_rngs()),
        lambda: hl.GLU(3, approximate=True),
        ValueError,
        "approximate=True",
    ),
    (
        "mlp hidden -2",
        lambda: hn.GatedMLP(4, -2, rngs=_rngs()),
        lambda: hl.GatedMLP(-2),
        ValueError,
        "hidden_features must be >= 1",
    ),
    (
        "mlp out 0",
        lambda: hn.GatedMLP(4, 8, 0, rngs=_rngs()),
        lambda: hl.GatedMLP(8, 0),
        ValueError,
        "out_features",
    ),
    (
        "mlp dropout 1",
        lambda: hn.GatedMLP(4, 8, dropout_rate=1.0, rngs=_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate=1.0),
        ValueError,
        "dropout_rate must be in \\[0, 1\\)",
    ),
    (
        "mlp dropout str",
        lambda: hn.GatedMLP(4, 8, dropout_rate="0.1", rngs=_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate="0.1"),
        TypeError,
        "dropout_rate",
    ),
    (
        "mlp dropout array",
        lambda: hn.GatedMLP(4, 8, dropout_rate=jnp.array(0.1), rngs=_rngs()),
        lambda: hl.GatedMLP(8, dropout_rate=jnp.array(0.1)),
        TypeError,
        "dropout_rate",
    ),
    (
        "mlp deterministic",
        lambda: hn.GatedMLP(4, 8, deterministic=1, rngs=_rngs()),
        lambda: hl.GatedMLP(8, deterministic=1),
        TypeError,
        "deterministic must be a static bool",
    ),
    (
        "mlp masked",
        lambda: hn.GatedMLP(4, 8, masked="yes", rngs=_rngs()),
        lambda: hl.GatedMLP(8, masked="yes"),
        TypeError,
        "masked",
    ),
    ("highway 0", lambda: hn.Highway(0, rngs=_rngs()), lambda: hl.Highway(0), ValueError, "feat"),
    (
        "highway activation",
        lambda: hn.Highway(4, activation="relu", rngs=_rngs()),
        lambda: hl.Highway(4, activation="relu"),
        TypeError,
        "activation must be callable",
    ),
    (
        "grn hidden -1",
        lambda: hn.GatedResidual(4, -1, rngs=_rngs()),
        lambda: hl.GatedResidual(-1),
        ValueError,
        "hidden_features",
    ),
    (
        "grn context 0",
        lambda: hn.GatedResidual(4, 8, context_features=0, rngs=_rngs()),
        lambda: hl.GatedResidual(8, context_features=0),
        ValueError,
        "context_features",
    ),
    (
        "grn dropout",
        lambda: hn.GatedResidual(4, 8, dropout_rate=-0.1, rngs=_rngs()),
        lambda: hl.GatedResidual(8, dropout_rate=-0.1),
        ValueError,
        "dropout_rate",
    ),
    (
        "grn epsilon",
        lambda: hn.GatedResidual(4, 8, epsilon=0.0, rngs=_rngs()),
        lambda: hl.GatedResidual(8, epsilon=0.0),
        ValueError,
        "epsilon",
    ),
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
        lambda: hn.HardConcreteGate((4,), beta=-1.0, rngs=_rngs()),
        lambda: hl.HardConcreteGate((4,), beta=-1.0),
        ValueError,
        "HardConcreteGate: beta must be",
    ),
    (
        "gate zeta",
        lambda: hn.HardConcreteGate((4,), zeta=0.5, rngs=_rngs()),
        lambda: hl.HardConcreteGate((4,), zeta=0.5),
        ValueError,
        "zeta",
    ),
    (
        "gate shape",
        lambda: hn.HardConcreteGate((-4,), rngs=_rngs()),
        lambda: hl.HardConcreteGate((-4,)),
        ValueError,
        "shape\\[0\\]",
    ),
    (
        "masked in -1",
        lambda: hn.MaskedLinear(-1, 4, rngs=_rngs()),
        None,
        ValueError,
        "in_features must be >= 1",
    ),
    (
        "masked out 0",
        lambda: hn.MaskedLinear(4, 0, rngs=_rngs()),
        lambda: hl.MaskedLinear(0),
        ValueError,
        "out_features",
    ),
    (
        "mask_type",
        lambda: hn.MaskedLinear(4, 4, mask_type="soft", rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="soft"),
        ValueError,
        "unknown mask_type 'soft'",
    ),
    (
        "mask_type type",
        lambda: hn.MaskedLinear(4, 4, mask_type=None, rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type=None),
        TypeError,
        "mask_type must be a string",
    ),
    (
        "ste sparsity str",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity="0.5", rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity="0.5"),
        TypeError,
        "sparsity",
    ),
    (
        "ste sparsity bool",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity=True, rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity=True),
        TypeError,
        "sparsity",
    ),
    (
        "ste sparsity 2",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", sparsity=2.0, rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", sparsity=2.0),
        ValueError,
        "sparsity must be in \\[0, 1\\]",
    ),
    (
        "ste threshold str",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", threshold="0.5", rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste", threshold="0.5"),
        TypeError,
        "threshold",
    ),
    (
        "ste needs one",
        lambda: hn.MaskedLinear(4, 4, mask_type="ste", rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="ste"),
        ValueError,
        "needs exactly one",
    ),
    (
        "masked beta",
        lambda: hn.MaskedLinear(4, 4, mask_type="hard_concrete", beta=0.0, rngs=_rngs()),
        lambda: hl.MaskedLinear(4, mask_type="hard_concrete", beta=0.0),
        ValueError,
        "MaskedLinear: beta must be",
    ),
    (
        "masked deterministic",
        lambda: hn.MaskedLinear(4, 4, deterministic="no", rngs=_rngs()),
        lambda: hl.MaskedLinear(4, deterministic="no"),
        TypeError,
        "deterministic",
    ),
    (
        "use_bias",
        lambda: hn.MaskedLinear(4, 4, use_bias=None, rngs=_rngs()),
        lambda: hl.MaskedLinear(4, use_bias=None),
        TypeError,
        "use_bias",
    ),
    (
        "param_dtype",
        lambda: hn.GLU(4, 4, param_dtype="float99", rngs=_rngs()),
        lambda: hl.GLU(4, param_dtype="float99"),
        TypeError,
        "param_dtype",
    ),
    (
        "kernel_init",
        lambda: hn.GLU(4, 4, kernel_init=0.1, rngs=_rngs()),
        lambda: hl.GLU(4, kernel_init=0.1),
        TypeError,
        "kernel_init must be callable",
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


def _pruneable():
    return hn.MaskedLinear(8, 4, rngs=_rngs())


def _pruneable_variables():
    return hl.MaskedLinear(4).init(jax.random.key(0), jnp.ones((1, 8)))


PRUNE_BAD = [
    ({"sparsity": "0.5"}, TypeError, "prune: sparsity"),
    ({"sparsity": True}, TypeError, "prune: sparsity"),
    ({"sparsity": jnp.array(0.5)}, TypeError, "prune: sparsity"),
    ({"sparsity": float("nan")}, ValueError, "prune: sparsity"),
    ({"sparsity": None}, TypeError, "prune: sparsity is required"),
    ({"sparsity": 0.5, "method": "l1"}, ValueError, "unknown method 'l1'"),
    ({"sparsity": 0.5, "method": 1}, TypeError, "method must be a string"),
    ({"sparsity": None, "method": "nm", "n": 1, "m": 0}, ValueError, "m must be >= 1"),
    ({"sparsity": None, "method": "nm", "n": 5, "m": 4}, ValueError, "n must be in \\[0, 4\\]"),
    ({"sparsity": None, "method": "nm", "n": 1.0, "m": 4}, TypeError, "n must be a static"),
    ({"sparsity": None, "method": "nm", "n": 2, "m": 4, "axis": 2}, ValueError, "axis=2"),
    ({"sparsity": 0.75, "method": "nm", "n": 2, "m": 4}, ValueError, "contradicts n=2, m=4"),
    ({"sparsity": 0.5, "method": "random"}, ValueError, "needs key="),
]


@pytest.mark.parametrize("kwargs, error, match", PRUNE_BAD)
def test_bad_prune_arguments(kwargs, error, match):
    kwargs = dict(kwargs)
    sparsity = kwargs.pop("sparsity")
    with pytest.raises(error, match=match):
        hn.prune(_pruneable(), sparsity, **kwargs)
    with pytest.raises(error, match=match):
        hl.prune(_pruneable_variables(), sparsity, **kwargs)


def test_good_arguments_still_accepted():
    """NumPy scalars and bools are static values too; ``deterministic=None`` stays allowed."""
    hn.GatedMLP(np.int64(4), 8, dropout_rate=np.float32(0.25), deterministic=None, rngs=_rngs())
    hl.GatedMLP(np.int32(8), dropout_rate=0.0, deterministic=np.bool_(True))
    hn.Mask(3, fill=-np.inf)
    hn.MaskedLinear(4, 4, mask_type="ste", sparsity=np.float64(0.5), rngs=_rngs())
    hn.prune(_pruneable(), np.float32(0.5))


# --- layout: one place for each concept --------------------------------------------------------


@pytest.mark.parametrize("rule", [{"sparsity": 0.5}, {"threshold": 0.2}])
def test_ste_masked_linear_is_the_public_ste_mask(rule):
    # Once a private ste_mask(scores, sparsity, threshold) shadowed hj.ste_mask in the Flax
    # code: both front ends' "ste" mask, and its straight-through gradient, are the public op's.
    x, kernel, scores = normal(1, (2, 4)), normal(2, (4, 3)), normal(3, (4, 3))

    def want(scores):
        return x @ (kernel * hj.ste_mask(scores, **rule))

    layer = hn.MaskedLinear(4, 3, mask_type="ste", use_bias=False, **rule, rngs=_rngs())
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


@pytest.mark.parametrize(
    "cls",
    [
        hl.GLU,
        hl.GatedMLP,
        hl.Highway,
        hl.GatedResidual,
        hl.Mask,
        hl.MaskedLinear,
        hl.HardConcreteGate,
    ],
)
def test_linen_classes_document_their_attributes(cls):
    doc = cls.__doc__ or ""
    assert "Attributes:" in doc, cls.__name__
    for field in (f.name for f in dataclasses.fields(cls)):  # ClassVars (_options) left out
        if field not in ("parent", "name"):
            assert field in doc.split("Attributes:")[1], (cls.__name__, field)


def test_hard_concrete_defaults_are_the_ops_defaults():
    # Once the defaults (beta 2/3, gamma -0.1, zeta 1.1) were copied into each module: every
    # entry point with the defaults gives the ops' gate and L0 penalty (the penalty depends on
    # all three), and every signature shows the same default values.
    log_alpha = normal(4, (4, 3), scale=2.0)
    gate, penalty = hj.hard_concrete(None, log_alpha, deterministic=True), hj.l0_penalty(log_alpha)
    x = normal(5, (2, 4))
    hcg = hn.HardConcreteGate((4, 3), rngs=_rngs())
    masked = hn.MaskedLinear(4, 3, mask_type="hard_concrete", use_bias=False, rngs=_rngs())
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


# --- one rounding rule: a sparsity s prunes count_of(s, n) weights everywhere ------------------


@pytest.mark.parametrize("n_in, sparsity", [(5, 0.5), (7, 0.5), (6, 0.25), (3, 0.5)])
def test_ste_sparsity_and_prune_keep_the_same_count(n_in, sparsity):
    kept_by_prune = n_in - round(sparsity * n_in)
    pruned = hn.prune(hn.MaskedLinear(n_in, 1, rngs=_rngs()), sparsity)
    assert int(pruned.mask[...].sum()) == kept_by_prune
    ste = hn.MaskedLinear(n_in, 1, mask_type="ste", sparsity=sparsity, rngs=_rngs())
    assert int(ste.current_mask().sum()) == kept_by_prune
    x = jnp.ones((1, n_in))
    variables = hl.prune(hl.MaskedLinear(1).init(jax.random.key(0), x), sparsity)
    assert int(variables["masks"]["mask"].sum()) == kept_by_prune
    module = hl.MaskedLinear(1, mask_type="ste", sparsity=sparsity, use_bias=False)
    ste_vars = module.init(jax.random.key(0), x)
    # With unit inputs and no bias the output is the sum of the kept weights.
    kernel = ste_vars["params"]["kernel"][:, 0]
    kept = hj.magnitude_mask(kernel, sparsity)
    assert int(kept.sum()) == kept_by_prune
    np.testing.assert_allclose(module.apply(ste_vars, x)[0, 0], kernel[kept].sum(), rtol=1e-6)


# --- HardConcreteGate promotes as x * z --------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_, jnp.bfloat16, jnp.float32])
def test_hard_concrete_gate_promotes_like_a_product(dtype):
    half = jax.nn.initializers.constant(0.0)  # deterministic gate sigmoid(0)*1.2 - 0.1 = 0.5
    x = jnp.array([10, 10, 3, 1]).astype(dtype)
    gate = hn.HardConcreteGate((4,), log_alpha_init=half, deterministic=True, rngs=_rngs())
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


# --- prune on stacked layers: per-layer methods rank each layer on its own ---------------------

SCALES = jnp.array([1e-3, 1.0, 1e3])  # layers of very different scales


def _nnx_stack():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return hn.MaskedLinear(8, 4, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))
    stack.kernel[...] = stack.kernel[...] * SCALES[:, None, None]
    return stack


def _linen_stack():
    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return x, hl.MaskedLinear(4, name="lin")(x)

    stack = nn.scan(
        Layer, variable_axes={"params": 0, "masks": 0}, split_rngs={"params": True}, length=3
    )()
    variables = stack.init(jax.random.key(0), jnp.ones((2, 8)), None)
    params = jax.tree.map(lambda a: a, dict(variables["params"]))
    lin = dict(params["lin"])
    lin["kernel"] = lin["kernel"] * SCALES[:, None, None]
    return {"params": {"lin": lin}, "masks": variables["masks"]}


def _per_layer_kept(mask):
    return np.asarray(mask).reshape(mask.shape[0], -1).sum(axis=1).tolist()


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_prune_stacked_layers_per_layer(method):
    kw = {"key": jax.random.key(1)} if method == "random" else {}
    stack = hn.prune(_nnx_stack(), 0.5, method=method, **kw)
    assert stack.mask[...].shape == (3, 8, 4)
    assert _per_layer_kept(stack.mask[...]) == [16, 16, 16]  # was [0, 16, 32] by magnitude
    assert hn.mask_sparsity(stack) == 0.5
    variables = hl.prune(_linen_stack(), 0.5, method=method, **kw)
    assert _per_layer_kept(variables["masks"]["lin"]["mask"]) == [16, 16, 16]
    # 7 of 32 weights: round(0.3 * 32) = 10 pruned in every layer.
    assert _per_layer_kept(hn.prune(_nnx_stack(), 0.3, method=method, **kw).mask[...]) == [22] * 3
    if method == "magnitude":  # each layer keeps its own largest weights
        for i in range(3):
            expected = hj.magnitude_mask(stack.kernel[...][i], 0.5)
            np.testing.assert_array_equal(stack.mask[...][i], expected)


def test_prune_stacked_layers_nm_groups_along_each_layers_input_axis():
    stack = hn.prune(_nnx_stack(), None, method="nm", n=2, m=4)  # raised with 3 layers before
    groups = np.asarray(stack.mask[...]).reshape(3, 2, 4, 4)  # [layer, group, 4 inputs, out]
    assert (groups.sum(axis=2) == 2).all()
    out_axis = hn.prune(_nnx_stack(), None, method="nm", n=1, m=2, axis=1)
    assert (np.asarray(out_axis.mask[...]).reshape(3, 8, 2, 2).sum(axis=3) == 1).all()
    variables = hl.prune(_linen_stack(), 0.5, method="nm", n=2, m=4)
    groups = np.asarray(variables["masks"]["lin"]["mask"]).reshape(3, 2, 4, 4)
    assert (groups.sum(axis=2) == 2).all()


def test_prune_stacked_global_magnitude_stays_global():
    stack = hn.prune(_nnx_stack(), 0.5, method="global_magnitude")
    variables = hl.prune(_linen_stack(), 0.5, method="global_magnitude")
    for mask in (stack.mask[...], variables["masks"]["lin"]["mask"]):
        kept = _per_layer_kept(mask)  # one threshold over all layers: the small layer goes
        assert kept[0] == 0 and sum(kept) == 48 and kept[2] > 24, kept


def test_prune_stacked_gated_mlp_and_two_stack_axes():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return hn.GatedMLP(4, 8, masked=True, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))
    stack.up_kernel[...] = stack.up_kernel[...] * SCALES[:, None, None]
    hn.prune(stack, 0.25)
    for name, size in (("gate", 32), ("up", 32), ("down", 32)):
        assert _per_layer_kept(getattr(stack, f"{name}_mask")[...]) == [size - 8] * 3
    # Two leading stack axes (e.g. vmap inside scan): [2, 3, in, out], 6 layers.
    kernel = normal(3, (2, 3, 8, 4))
    kernel = kernel * jnp.arange(1.0, 7.0).reshape(2, 3, 1, 1) ** 6
    variables = {"params": {"kernel": kernel}, "masks": {"mask": jnp.ones(kernel.shape, bool)}}
    mask = hl.prune(variables, 0.5)["masks"]["mask"]
    assert (np.asarray(mask).reshape(6, -1).sum(axis=1) == 16).all()
    nm = hl.prune(variables, None, method="nm", n=1, m=4)["masks"]["mask"]
    assert (np.asarray(nm).reshape(2, 3, 2, 4, 4).sum(axis=3) == 1).all()


# --- Linen l0_penalty: each gate's own beta/gamma/zeta ----------------------------------------


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
    nnx_a = hn.HardConcreteGate((4,), beta=0.3, gamma=-0.2, rngs=_rngs())
    nnx_b = hn.MaskedLinear(4, 4, mask_type="hard_concrete", beta=0.9, zeta=1.5, rngs=_rngs())
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
