"""Pruning of the masked layers (``hadamard_jax.nnx.prune``, ``hadamard_jax.linen.prune``): every
method, training keeps the pruned weights zero, stacked (scanned) layers pruned per layer, one
rounding rule with the straight-through mask, pruned Linen variables through bytes, argument
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx, serialization

import hadamard_jax as hj
from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import nnx_rngs, normal

X = normal(42, (3, 4))


def _masked_model(rngs):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = hn.MaskedLinear(8, 16, rngs=rngs)
            self.b = hn.MaskedLinear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.b(jax.nn.relu(self.a(x)))

    return Net(rngs)


@pytest.mark.parametrize("method", ["magnitude", "global_magnitude", "random", "nm"])
def test_prune_and_train_keeps_zeros(method):
    model = _masked_model(nnx.Rngs(0))
    kw = {"key": jax.random.key(1)} if method == "random" else {}
    if method == "nm":
        hn.prune(model, None, method="nm", n=1, m=4)
        groups = np.asarray(model.a.mask[...]).reshape(2, 4, 16)  # along axis 0 (inputs)
        assert (groups.sum(axis=1) == 1).all()
    else:
        hn.prune(model, 0.75, method=method, **kw)
    assert hn.mask_sparsity(model) == 0.75
    if method == "magnitude":  # per layer: exact count in each
        assert int(model.a.mask[...].sum()) == 32 and int(model.b.mask[...].sum()) == 16
    x = normal(2, (5, 8))
    opt = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - 1.0) ** 2))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(5)]
    assert losses[-1] < losses[0]
    for layer in (model.a, model.b):
        mask = np.asarray(layer.mask[...])
        assert (np.asarray(layer.kernel[...])[~mask] == 0).all()
        assert (np.asarray(layer.masked_kernel())[~mask] == 0).all()
        assert (np.asarray(layer.kernel[...])[mask] != 0).all()
    # Pruning again only removes more.
    before = np.asarray(model.a.mask[...])
    hn.prune(model, 0.9)
    assert not (np.asarray(model.a.mask[...]) & ~before).any()


def test_masked_gated_mlp_is_pruned():
    mlp = hn.GatedMLP(4, 8, masked=True, rngs=nnx.Rngs(0))
    assert set(nnx.state(mlp, hn.MaskVar).keys()) == {"gate_mask", "up_mask", "down_mask"}
    hn.prune(mlp, 0.5)
    assert hn.mask_sparsity(mlp) == 0.5 and int(mlp.down_mask[...].sum()) == 16
    p = {k: v[...] for k, v in nnx.state(mlp, nnx.Param).items()}
    for name in ("gate", "up", "down"):
        mask = np.asarray(getattr(mlp, f"{name}_mask")[...])
        assert (np.asarray(p[f"{name}_kernel"])[~mask] == 0).all()
    ref = hj.gated_mlp(
        X,
        p["gate_kernel"],
        p["up_kernel"],
        p["down_kernel"],
        b_gate=p["gate_bias"],
        b_up=p["up_bias"],
        b_down=p["down_bias"],
    )
    np.testing.assert_allclose(mlp(X), ref, rtol=1e-6)
    g = nnx.grad(lambda m: jnp.sum(m(X) ** 2))(mlp)
    assert (np.asarray(g["up_kernel"][...])[~np.asarray(mlp.up_mask[...])] == 0).all()


def test_prune_errors():
    model = _masked_model(nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown method 'l1'"):
        hn.prune(model, 0.5, method="l1")
    with pytest.raises(ValueError, match="sparsity must be in \\[0, 1\\]"):
        hn.prune(model, 1.5)
    with pytest.raises(ValueError, match="needs key="):
        hn.prune(model, 0.5, method="random")
    with pytest.raises(ValueError, match="contradicts n=2, m=4"):
        hn.prune(model, 0.75, method="nm", n=2, m=4)
    with pytest.raises(ValueError, match="no masked kernel"):
        hn.prune(hn.GatedMLP(4, 8, rngs=nnx.Rngs(0)), 0.5)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(hl.MaskedLinear(16)(x))
        x = hl.GatedMLP(32)(x)
        return hl.MaskedLinear(4)(x)


def test_prune_variables_and_train_keeps_zeros():
    model = Net()
    x = normal(2, (5, 8))
    variables = model.init(jax.random.key(0), x)
    assert set(variables) == {"params", "masks"}
    assert "mask" not in str(jax.tree_util.tree_structure(variables["params"]))
    pruned = hl.prune(variables, 0.75, method="global_magnitude")
    assert hl.mask_sparsity(pruned) == 0.75 and hl.mask_sparsity(variables) == 0.0
    masks = pruned["masks"]
    params = pruned["params"]
    opt = optax.adamw(1e-2, weight_decay=1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((model.apply({"params": p, "masks": masks}, x) - 1) ** 2)
        )(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(5):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for name in ("MaskedLinear_0", "MaskedLinear_1"):
        mask = np.asarray(masks[name]["mask"])
        kernel = np.asarray(params[name]["kernel"])
        assert (kernel[~mask] == 0).all() and (kernel[mask] != 0).all()
    again = hl.prune({"params": params, "masks": masks}, 0.5, method="nm", n=1, m=2)
    for name in ("MaskedLinear_0", "MaskedLinear_1"):
        revived = np.asarray(again["masks"][name]["mask"]) & ~np.asarray(masks[name]["mask"])
        assert not revived.any()
    with pytest.raises(ValueError, match="no masked kernel"):
        hl.prune({"params": params}, 0.5)


def _pruneable():
    return hn.MaskedLinear(8, 4, rngs=nnx_rngs())


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


@pytest.mark.parametrize("n_in, sparsity", [(5, 0.5), (7, 0.5), (6, 0.25), (3, 0.5)])
def test_ste_sparsity_and_prune_keep_the_same_count(n_in, sparsity):
    kept_by_prune = n_in - round(sparsity * n_in)
    pruned = hn.prune(hn.MaskedLinear(n_in, 1, rngs=nnx_rngs()), sparsity)
    assert int(pruned.mask[...].sum()) == kept_by_prune
    ste = hn.MaskedLinear(n_in, 1, mask_type="ste", sparsity=sparsity, rngs=nnx_rngs())
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


def test_variables_round_trip_through_bytes():
    x = jnp.ones((2, 8))
    variables = hl.prune(
        Net().init(jax.random.key(0), x), 0.6, method="random", key=jax.random.key(5)
    )
    data = serialization.to_bytes(variables)
    target = Net().init(jax.random.key(1), x)
    restored = serialization.from_bytes(target, data)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert restored["masks"]["MaskedLinear_0"]["mask"].dtype == jnp.bool_
    np.testing.assert_array_equal(Net().apply(restored, x), Net().apply(variables, x))
