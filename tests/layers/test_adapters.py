"""Adapter layers (NNX and Linen): zero update at init, merge, adapter-only training, parity."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from hadamard_jax._layers import adapters as A
from tests.utils import check_grads, normal, saved_residuals

N_IN, N_OUT = 6, 5
X = np.random.default_rng(0).standard_normal((3, N_IN)).astype(np.float32)

# name -> (NNX constructor kwargs for a random (non-zero) update, Linen class)
RANDOM = {
    "LoHaLinear": dict(rank=2, rank2=3, alpha=4.0, init_weights=False),
    "HiRALinear": dict(rank=2, alpha=3.0, init_hira_weights=False),
    "DoRALinear": dict(rank=2, alpha=4.0, init_lora_weights=False),
    "IA3Linear": dict(feedforward=False),
}


def _nnx(name, seed=0, **kw):
    return getattr(hn, name)(N_IN, N_OUT, rngs=nnx.Rngs(seed), **kw)


def _perturb_ia3(layer):
    if isinstance(layer, hn.IA3Linear):
        layer.ia3_l[...] = normal(3, layer.ia3_l.shape, loc=1.0, scale=0.3)
    return layer


@pytest.mark.parametrize("name", list(RANDOM))
def test_zero_update_at_init(name):
    layer = _nnx(name)
    base = layer.base_module(X)
    np.testing.assert_allclose(layer(X), base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(RANDOM))
def test_merge_gives_a_plain_linear_with_equal_outputs(name):
    layer = _perturb_ia3(_nnx(name, **RANDOM[name]))
    assert not np.allclose(layer(X), layer.base_module(X), atol=1e-3)
    merged = layer.merge()
    assert type(merged) is nnx.Linear
    np.testing.assert_allclose(merged(X), layer(X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["LoHaLinear", "HiRALinear", "DoRALinear"])
def test_masked_base_sparse_base_dense_adapter(name):
    base = hn.MaskedLinear(N_IN, N_OUT, rngs=nnx.Rngs(1))
    hn.prune(base, 0.5)
    layer = getattr(hn, name)(base_module=base, rngs=nnx.Rngs(2), **RANDOM[name])
    w = base.masked_kernel()
    assert layer.in_features == N_IN and int((w == 0).sum()) == 15
    np.testing.assert_allclose(layer.merge()(X), layer(X), rtol=1e-5, atol=1e-5)
    if name == "HiRALinear":  # W0 * (A B) keeps the base's sparsity
        assert bool(jnp.all(jnp.where(w == 0, layer.merge().kernel[...], 0) == 0))


@pytest.mark.parametrize("name", list(RANDOM))
def test_optimizer_over_adapter_params_trains_only_them(name):
    layer = _nnx(name)
    kernel = np.asarray(layer.base_module.kernel[...])
    before = jax.tree.map(np.asarray, nnx.state(layer, hn.AdapterParam))
    opt = nnx.Optimizer(layer, optax.sgd(0.1), wrt=hn.AdapterParam)
    y = normal(5, (3, N_OUT))

    def loss(model):
        return jnp.mean((model(X) - y) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, hn.AdapterParam))(layer)
    opt.update(layer, grads)
    np.testing.assert_array_equal(layer.base_module.kernel[...], kernel)
    after = nnx.state(layer, hn.AdapterParam)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
    assert any(jax.tree.leaves(changed))
    assert loss(layer) < float(jnp.mean((layer.base_module(X) - y) ** 2))


@pytest.mark.parametrize("name", list(RANDOM))
def test_linen_merge(name):
    # NNX-vs-Linen outputs: tests/test_parity.py. Here: the merged kernel gives the same output.
    module = getattr(hl, name)(N_OUT, **RANDOM[name])
    variables = module.init(jax.random.key(0), X)
    adapters = jax.tree.map(lambda a: a + normal(5, a.shape, scale=0.3), variables["adapters"])
    variables = {**variables, "adapters": adapters}
    out = module.apply(variables, X)
    dense = nn.Dense(N_OUT).apply(hl.merge_adapter(module, variables), X)
    np.testing.assert_allclose(dense, out, rtol=1e-5, atol=1e-5)


def test_linen_zero_update_at_init_and_adapter_only_grads():
    module = hl.DoRALinear(N_OUT, rank=2)
    v = module.init(jax.random.key(0), X)
    base = X @ v["params"]["kernel"] + v["params"]["bias"][None, :]
    np.testing.assert_allclose(module.apply(v, X), base, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda ad: jnp.sum(module.apply({**v, "adapters": ad}, X) ** 2))(v["adapters"])
    assert set(grads) == {"lora_a", "lora_b", "magnitude"}


def test_ia3_module_scales_the_features():
    l = normal(7, (N_IN,), loc=1.0)
    mod = hn.IA3(N_IN, rngs=nnx.Rngs(0))
    mod.ia3_l[...] = l
    np.testing.assert_allclose(mod(X), X * np.asarray(l), rtol=1e-6)


def test_ia3_feedforward_scales_the_input_and_merges():
    layer = hn.IA3Linear(N_IN, N_OUT, feedforward=True, rngs=nnx.Rngs(0))
    layer.ia3_l[...] = normal(8, (N_IN,), loc=1.0)
    w, b = layer.base_module.kernel[...], layer.base_module.bias[...]
    np.testing.assert_allclose(
        layer(X), (X * np.asarray(layer.ia3_l[...])[None, :]) @ w + b[None, :], rtol=1e-5
    )
    np.testing.assert_allclose(layer.merge()(X), layer(X), rtol=1e-5, atol=1e-5)


def test_peft_initialisers_and_scales():
    layer = hn.LoHaLinear(N_IN, N_OUT, rank=2, alpha=4.0, rngs=nnx.Rngs(0))
    assert layer.scale == 2.0 and not np.any(layer.a2[...])
    assert np.abs(layer.a1[...]).max() <= 1 / math.sqrt(N_IN)  # kaiming_uniform(a=sqrt(5))
    assert np.abs(layer.b1[...]).max() <= 1 / math.sqrt(2)
    hira = hn.HiRALinear(N_IN, N_OUT, rank=4, init_hira_weights="gaussian", rngs=nnx.Rngs(0))
    assert hira.scale == 1.0 and not np.any(hira.b[...])
    dora = hn.DoRALinear(N_IN, N_OUT, rank=4, alpha=8.0, use_rslora=True, rngs=nnx.Rngs(0))
    assert dora.scale == 4.0
    np.testing.assert_allclose(
        dora.magnitude[...], jnp.linalg.norm(dora.base_module.kernel[...], axis=0), rtol=1e-6
    )


def test_abba_init_is_peft_svd_split_with_abba_scale():
    layer = hn.LoHaLinear(N_IN, N_OUT, rank=2, rank2=1, alpha=2.0, init_weights="abba",
                          rngs=nnx.Rngs(0))  # fmt: skip
    w = np.asarray(layer.base_module.kernel[...], np.float64)
    # peft: SVD of the torch weight [out, in] = w.T; w1a = U S^1/4, w1b = S^1/4 Vh.
    u, s, vh = np.linalg.svd(w.T, full_matrices=False)
    w1a, w1b = u[:, :2] * s[None, :2] ** 0.25, s[:2, None] ** 0.25 * vh[:2]
    w2a, w2b = u[:, 2:3] * s[None, 2:3] ** 0.25, s[2:3, None] ** 0.25 * vh[2:3]
    peft_delta = (w1a @ w1b) * (w2a @ w2b) * (2.0 / math.sqrt(2)) * (2.0 / math.sqrt(1))
    assert layer.scale == pytest.approx(2.0 / math.sqrt(2) * 2.0)
    np.testing.assert_allclose(layer.delta(), peft_delta.T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: hn.LoHaLinear(4, 3, rank=0, rngs=nnx.Rngs(0)), ValueError, "rank"),
        (
            lambda: hn.LoHaLinear(4, 3, init_weights="pissa", rngs=nnx.Rngs(0)),
            ValueError,
            "init_weights",
        ),
        (lambda: hn.HiRALinear(4, 3, alpha="1", rngs=nnx.Rngs(0)), TypeError, "alpha"),
        (lambda: hn.DoRALinear(rngs=nnx.Rngs(0)), ValueError, "in_features"),
        (
            lambda: hn.IA3Linear(base_module=nnx.Dropout(0.1), rngs=nnx.Rngs(0)),
            TypeError,
            "base_module",
        ),
        (
            lambda: hn.LoHaLinear(4, 3, rank=2, rngs=nnx.Rngs(0))(jnp.ones((2, 5))),
            ValueError,
            "in_features=4",
        ),
        (lambda: hl.LoHaLinear(3, rank=-1), ValueError, "rank"),
        (lambda: hl.DoRALinear(3, init_lora_weights="olora"), ValueError, "init_lora_weights"),
        (lambda: hl.merge_adapter(hl.IA3(3), {"params": {}, "adapters": {}}), TypeError, "module"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_num_adapter_params():
    assert A.count({"a": np.ones((2, 3))}) == 6
    assert _nnx("LoHaLinear", rank=2).num_adapter_params() == 2 * 2 * (N_IN + N_OUT)
    assert _nnx("DoRALinear", rank=2).num_adapter_params() == 2 * (N_IN + N_OUT) + N_OUT


# --- (IA)^3 in GatedMLP ---------------------------------------------------------------------------

D, H = 4, 6
XM = np.random.default_rng(1).standard_normal((2, 3, D)).astype(np.float32)


def _mlp_params(seed=0):
    names = ("gate_kernel", "up_kernel", "down_kernel", "gate_bias", "up_bias", "down_bias")
    shapes = ((D, H), (D, H), (H, D), (H,), (H,), (D,))
    params = {k: normal(seed + i, s, scale=0.5) for i, (k, s) in enumerate(zip(names, shapes))}
    params["ia3_l"] = normal(seed + 9, (H,), loc=1.0, scale=0.5)
    return params


def _plain_mlp(x, p, keep=None, rate=0.0):
    """The block as plain jax.numpy: ``((silu(x Wg + bg) * (x Wu + bu)) * keep / (1 - rate) * l)
    Wd + bd``."""

    def row(v):
        return jnp.reshape(v, (1,) * (x.ndim - 1) + (-1,))

    g = x @ p["gate_kernel"] + row(p["gate_bias"])
    h = jax.nn.silu(g) * (x @ p["up_kernel"] + row(p["up_bias"]))
    if keep is not None:
        h = h * keep / (1.0 - rate)
    return (h * row(p["ia3_l"])) @ p["down_kernel"] + row(p["down_bias"])


def test_gated_mlp_ia3_is_identity_at_init():
    plain = hn.GatedMLP(D, H, rngs=nnx.Rngs(0))
    ia3 = hn.GatedMLP(D, H, ia3=True, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ia3.ia3_l[...], np.ones(H, np.float32))
    assert isinstance(ia3.ia3_l, hn.AdapterParam) and plain.ia3_l is None
    np.testing.assert_array_equal(ia3(XM), plain(XM))
    module = hl.GatedMLP(H, ia3=True)
    v = module.init(jax.random.key(0), XM)
    np.testing.assert_array_equal(v["adapters"]["ia3_l"], np.ones(H, np.float32))
    np.testing.assert_array_equal(module.apply(v, XM), hl.GatedMLP(H).apply(v, XM))


def test_gated_mlp_ia3_nnx_equals_linen_and_plain():
    mlp = hn.GatedMLP(D, H, ia3=True, rngs=nnx.Rngs(0))
    p = _mlp_params()
    for k, value in p.items():
        getattr(mlp, k)[...] = value
    variables = {"params": {k: v for k, v in p.items() if k != "ia3_l"}}
    variables["adapters"] = {"ia3_l": p["ia3_l"]}
    out = hl.GatedMLP(H, ia3=True).apply(variables, XM)
    np.testing.assert_allclose(out, mlp(XM), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, _plain_mlp(XM, p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dropout", [False, True])
def test_gated_mlp_ia3_grads_equal_the_plain_composition(dropout):
    """Both paths: ``l`` as the fused op's hidden mask, and ``l`` folded into the down kernel
    (with dropout's keep-mask in the mask slot)."""
    from hadamard_jax._layers import glu as F

    p, key, rate = _mlp_params(), jax.random.key(3), 0.25
    kw = dict(activation="swiglu", approximate=False, dtype=None, precision=None)
    drop = dict(dropout_rate=rate, dropout_key=key) if dropout else {}
    keep = jax.random.bernoulli(key, 1.0 - rate, XM.shape[:-1] + (H,)) if dropout else None

    def ours(x, p):
        return jnp.sum(jnp.sin(F.gated_mlp(x, p, **kw, **drop)))

    def plain(x, p):
        return jnp.sum(jnp.sin(_plain_mlp(x, p, keep, rate)))

    np.testing.assert_allclose(ours(XM, p), plain(XM, p), rtol=1e-5)
    got, want = jax.grad(ours, (0, 1))(XM, p), jax.grad(plain, (0, 1))(XM, p)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    check_grads(
        lambda l: F.gated_mlp(XM, {**p, "ia3_l": l}, **kw, **drop),
        (p["ia3_l"],),
        order=2,
        modes=("fwd", "rev"),
        atol=1e-2,
        rtol=1e-2,
    )


def test_gated_mlp_ia3_keeps_the_rule_residuals(capsys):
    """``l`` adds only itself (the fused op's ``[1, 1, H]`` mask) or, with dropout, weight-sized
    arrays (``l`` and the scaled down kernel): never a ``[..., H]`` activation."""
    from hadamard_jax._layers import glu as F

    p, kw = _mlp_params(), dict(activation="swiglu", approximate=False, dtype=None, precision=None)
    without = {k: v for k, v in p.items() if k != "ia3_l"}
    drop = dict(dropout_rate=0.25, dropout_key=jax.random.key(0))

    def new_lines(**more):
        def run(p):
            return saved_residuals(capsys, lambda x, p: F.gated_mlp(x, p, **kw, **more), XM, p)

        base = run(without)
        return [line.split(" ")[0] for line in run(p) if line not in base]

    assert new_lines() == [f"f32[1,1,{H}]"]
    assert sorted(new_lines(**drop)) == [f"f32[{H},1]", f"f32[{H},{D}]"]


def test_gated_mlp_ia3_optimizer_trains_only_the_vector():
    mlp = hn.GatedMLP(D, H, ia3=True, rngs=nnx.Rngs(0))
    before = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(mlp, nnx.Param))}
    opt = nnx.Optimizer(mlp, optax.sgd(0.5), wrt=hn.AdapterParam)
    y = normal(5, XM.shape)

    def loss(model):
        return jnp.mean((model(XM) - y) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, hn.AdapterParam))(mlp)
    assert [k for k, _ in nnx.to_flat_state(grads)] == [("ia3_l",)]
    opt.update(mlp, grads)
    after = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(mlp, nnx.Param))}
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved == {("ia3_l",)}


def test_gated_mlp_ia3_bad_argument():
    with pytest.raises(TypeError, match="ia3"):
        hn.GatedMLP(D, H, ia3=1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="ia3"):
        hl.GatedMLP(H, ia3="yes")


# --- Linen adapters wrapping a base layer (base_module=) --------------------------------------


@pytest.mark.parametrize("name", list(RANDOM))
def test_linen_wraps_a_pruned_masked_linear_and_trains_only_the_adapter(name):
    """A sparse base (a pruned Linen ``MaskedLinear``), a dense adapter: training the
    ``"adapters"`` collection keeps the base's zeros; NNX with the same weights agrees."""
    module = getattr(hl, name)(base_module=hl.MaskedLinear(N_OUT), **RANDOM[name])
    v = module.init(jax.random.key(0), X)
    assert module.features == N_OUT and set(v["params"]) == {"base_module"}
    v = {**v, **hl.prune({"params": v["params"], "masks": v["masks"]}, 0.5)}
    kernel, mask = v["params"]["base_module"]["kernel"], v["masks"]["base_module"]["mask"]
    assert int((kernel == 0).sum()) == N_IN * N_OUT // 2 and not bool(mask.all())
    # the NNX layer over an NNX MaskedLinear with the same weights and mask
    base = hn.MaskedLinear(N_IN, N_OUT, rngs=nnx.Rngs(0))
    base.kernel[...], base.bias[...] = kernel, v["params"]["base_module"]["bias"]
    base.mask[...] = mask
    layer = getattr(hn, name)(base_module=base, rngs=nnx.Rngs(1), **RANDOM[name])
    for k, value in v["adapters"].items():
        getattr(layer, k)[...] = value
    np.testing.assert_allclose(module.apply(v, X), layer(X), rtol=1e-5, atol=1e-5)

    y = normal(5, (3, N_OUT))

    def loss(adapters):
        return jnp.mean((module.apply({**v, "adapters": adapters}, X) - y) ** 2)

    adapters = v["adapters"]
    for _ in range(3):
        adapters = jax.tree.map(lambda p, g: p - 0.2 * g, adapters, jax.grad(loss)(adapters))
    assert loss(adapters) < loss(v["adapters"])
    assert all(not np.array_equal(adapters[k], v["adapters"][k]) for k in adapters)
    trained = {**v, "adapters": adapters}
    merged = hl.merge_adapter(module, trained)
    np.testing.assert_allclose(
        nn.Dense(N_OUT).apply(merged, X), module.apply(trained, X), rtol=1e-5, atol=1e-5
    )
    if name in ("LoHaLinear", "DoRALinear"):  # the update is dense where the base is zero
        assert bool(jnp.all(merged["params"]["kernel"][~mask] != 0))


def test_linen_wraps_dense_and_ste_bases():
    x = jnp.asarray(X)
    dense = hl.HiRALinear(base_module=nn.Dense(N_OUT), rank=2, init_hira_weights=False)
    v = dense.init(jax.random.key(0), x)
    w, b = v["params"]["base_module"]["kernel"], v["params"]["base_module"]["bias"]
    p = v["adapters"]
    np.testing.assert_allclose(
        dense.apply(v, x), x @ w + b[None, :] + x @ (w * (p["a"] @ p["b"])), rtol=1e-5, atol=1e-5
    )
    ste = hl.LoHaLinear(base_module=hl.MaskedLinear(N_OUT, mask_type="ste", sparsity=0.5),
                        rank=2, init_weights=False)  # fmt: skip
    v = ste.init(jax.random.key(0), x)
    merged = hl.merge_adapter(ste, v)
    np.testing.assert_allclose(
        nn.Dense(N_OUT).apply(merged, x), ste.apply(v, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: hl.LoHaLinear(rank=2), ValueError, "out_features"),
        (lambda: hl.IA3Linear(3, base_module=nn.Dense(4)), ValueError, "out_features=3"),
        (
            lambda: hl.DoRALinear(base_module=hl.MaskedLinear(3, mask_type="hard_concrete")),
            TypeError,
            "hard_concrete",
        ),
        (lambda: hl.HiRALinear(base_module=nn.Dropout(0.1)), TypeError, "base_module"),
    ],
)
def test_linen_base_module_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- adapters with hadamard_jax.sparse.sparsify -------------------------------------------------


def _adapter_paths(model) -> set[str]:
    """The ``sparsify`` filter paths (``"a/b/kernel"``) of a model's adapter parameters."""
    flat = nnx.to_flat_state(nnx.state(model, hn.AdapterParam))
    return {"/".join(map(str, path)) for path, _ in flat}


def _flat_masks(masks) -> dict:
    """``sparse.masks_of``'s masks by ``sparsify`` path (``None``: not pruned)."""
    return {"/".join(map(str, p)): m.get_value() for p, m in nnx.to_flat_state(masks)}


def _train(model, tx, wrt, steps=3):
    opt = nnx.Optimizer(model, tx, wrt=wrt)
    y = normal(5, (3, N_OUT))
    for _ in range(steps):
        grads = nnx.grad(lambda m: jnp.mean((m(X) - y) ** 2), argnums=nnx.DiffState(0, wrt))(model)
        opt.update(model, grads)
    return opt


def _assert_dense_adapter(layer, base_zeros):
    for path, value in nnx.to_flat_state(nnx.state(layer, hn.AdapterParam)):
        assert bool(jnp.all(value[...] != 0)), path  # every adapter entry trained, none pruned
    merged = layer.merge()
    assert bool(jnp.all(merged.kernel[...][base_zeros] != 0))  # the update is dense
    np.testing.assert_allclose(merged(X), layer(X), rtol=1e-5, atol=1e-5)


ADAPTER_KW = {"LoHaLinear": dict(rank=2), "DoRALinear": dict(rank=2)}


@pytest.mark.parametrize("name", list(ADAPTER_KW))
def test_sparsify_pruned_base_then_dense_adapter(name):
    """The base pruned by ``sparsify`` (pretraining), then frozen under a dense adapter trained
    with a plain optimizer over ``AdapterParam``: the base's zeros stay, the adapter is dense."""
    from hadamard_jax import sparse

    base = nnx.Linear(N_IN, N_OUT, rngs=nnx.Rngs(0))
    _train(base, sparse.sparsify(optax.sgd(0.1), schedule=sparse.one_shot(0.5)), nnx.Param, 2)
    kernel = np.asarray(base.kernel[...])
    zeros = kernel == 0
    assert int(zeros.sum()) == round(0.5 * N_IN * N_OUT)
    layer = getattr(hn, name)(base_module=base, rngs=nnx.Rngs(1), **ADAPTER_KW[name])
    _train(layer, optax.adam(1e-2), hn.AdapterParam)
    np.testing.assert_array_equal(layer.base_module.kernel[...], kernel)
    _assert_dense_adapter(layer, zeros)


@pytest.mark.parametrize("name", list(ADAPTER_KW))
def test_sparsify_base_kernel_only_trains_sparse_base_and_dense_adapter(name):
    """One optimizer over all ``nnx.Param`` (adapters included: ``AdapterParam`` is a
    ``Param``): ``sparsify``'s default filter would prune the rank-2 adapter matrices too, so
    the filter leaves the adapter paths out; the base kernel trains sparse, the adapter dense."""
    from hadamard_jax import sparse

    layer = getattr(hn, name)(N_IN, N_OUT, rngs=nnx.Rngs(0), **ADAPTER_KW[name])
    adapters = _adapter_paths(layer)
    params = nnx.state(layer, nnx.Param)
    masks = sparse.masks_of(sparse.sparsify(optax.sgd(0.1), schedule=0.5).init(params), params)
    pruned = {p for p, m in _flat_masks(masks).items() if m is not None}
    assert adapters & pruned  # the default filter prunes adapter matrices

    def base_only(path, shape):
        return sparse.default_filter(path, shape) and path not in adapters

    tx = sparse.sparsify(optax.adam(1e-2), schedule=sparse.one_shot(0.5), filter=base_only)
    before = np.asarray(layer.base_module.kernel[...])
    opt = _train(layer, tx, nnx.Param)
    kernel = np.asarray(layer.base_module.kernel[...])
    zeros = kernel == 0
    assert int(zeros.sum()) == round(0.5 * N_IN * N_OUT)
    assert not np.array_equal(kernel[~zeros], before[~zeros])  # the base trained, sparse
    masks = sparse.masks_of(opt.opt_state, nnx.state(layer, nnx.Param))
    flat = _flat_masks(masks)
    assert {p for p, m in flat.items() if m is not None} == {"base_module/kernel"}
    np.testing.assert_array_equal(flat["base_module/kernel"], ~zeros)
    _assert_dense_adapter(layer, zeros)
