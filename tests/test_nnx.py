"""Tests of the Flax NNX modules: values, masks, pruning, transforms, sharding, state."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

import hadamard_jax as hj
from hadamard_jax import nnx as hn
from tests.utils import assert_tree_allclose, normal, run_on_8_cpu_devices

X = normal(42, (3, 4))
ACTS = {
    "swiglu": jax.nn.silu,
    "geglu": lambda g: jax.nn.gelu(g, approximate=False),
    "reglu": jax.nn.relu,
    "glu": jax.nn.sigmoid,
    "bilinear": lambda g: g,
}


def _affine(x, k, b=None):
    y = x @ k
    return y if b is None else y + b[None, :]


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", list(ACTS))
def test_glu_fused_and_two_kernels(activation):
    act = ACTS[activation]
    layer = hn.GLU(
        4, 5, activation=activation, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0)
    )
    y = _affine(X, layer.kernel[...], layer.bias[...])
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
    y = _affine(X, layer.kernel[...], layer.bias[...])
    ref = jax.nn.gelu(y[:, 5:], approximate=True) * y[:, :5]
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=5e-2, atol=5e-2)


def test_gated_mlp_matches_op_and_dropout():
    mlp = hn.GatedMLP(4, 8, 6, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    p = {k: v[...] for k, v in nnx.state(mlp, nnx.Param).items()}
    g = _affine(X, p["gate_kernel"], p["gate_bias"])
    u = _affine(X, p["up_kernel"], p["up_bias"])
    ref = _affine(jax.nn.silu(g) * u, p["down_kernel"], p["down_bias"])
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


def test_highway():
    layer = hn.Highway(4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.gate_bias[...], -2.0)
    p = {k: v[...] for k, v in nnx.state(layer, nnx.Param).items()}
    t = jax.nn.sigmoid(_affine(X, p["gate_kernel"], p["gate_bias"]))
    h = jax.nn.relu(_affine(X, p["kernel"], p["bias"]))
    np.testing.assert_allclose(layer(X), t * h + (1 - t) * X, rtol=1e-5, atol=1e-6)


def test_gated_residual():
    grn = hn.GatedResidual(4, 8, 6, context_features=2, rngs=nnx.Rngs(0))
    c = jnp.ones((3, 2))
    p = nnx.state(grn, nnx.Param)
    eta = jax.nn.elu(
        _affine(X, p["hidden"]["kernel"][...], p["hidden"]["bias"][...])
        + c @ p["context"]["kernel"][...]
    )
    eta = _affine(eta, p["output"]["kernel"][...], p["output"]["bias"][...])
    gl = p["glu"]
    gated = jax.nn.sigmoid(_affine(eta, gl["gate_kernel"][...], gl["gate_bias"][...])) * _affine(
        eta, gl["value_kernel"][...], gl["value_bias"][...]
    )
    z = _affine(X, p["skip"]["kernel"][...], p["skip"]["bias"][...]) + gated
    mean, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    ref = (z - mean) / jnp.sqrt(var + 1e-6)
    np.testing.assert_allclose(grn(X, c), ref, rtol=1e-4, atol=1e-4)
    same = hn.GatedResidual(4, 8, rngs=nnx.Rngs(0))
    assert same.skip is None and same(X).shape == (3, 4)
    with pytest.raises(ValueError, match="context_features is None"):
        same(X, c)


def test_argument_errors():
    with pytest.raises(ValueError, match="GLU: unknown activation 'tanh'"):
        hn.GLU(4, 4, activation="tanh", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GatedMLP: approximate=True"):
        hn.GatedMLP(4, 4, activation="swiglu", approximate=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        hn.GatedMLP(4, 4, dropout_rate=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"GatedMLP: expected inputs with last axis 4.*\(3, 5\)"):
        hn.GatedMLP(4, 8, rngs=nnx.Rngs(0))(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="mask_type='ste' needs exactly one"):
        hn.MaskedLinear(4, 4, mask_type="ste", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown mask_type"):
        hn.MaskedLinear(4, 4, mask_type="soft", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="l0_penalty\\(\\) needs mask_type='hard_concrete'"):
        hn.MaskedLinear(4, 4, rngs=nnx.Rngs(0)).l0_penalty()


# --- masks -------------------------------------------------------------------------------------


def test_mask_module_and_mask_variables():
    m = jnp.array([True, False, True, True])
    layer = hn.Mask((4,), mask_init=nnx.initializers.constant(m), fill=-1.0)
    np.testing.assert_array_equal(layer(X), jnp.where(m, X, -1.0))
    assert isinstance(layer.mask, hn.MaskVar) and layer.mask[...].dtype == jnp.bool_
    assert not nnx.state(layer, nnx.Param)  # not trainable
    g = nnx.grad(lambda mod, x: mod(x).sum(), argnums=1)(layer, X)
    np.testing.assert_array_equal(g, jnp.broadcast_to(m, X.shape).astype(jnp.float32))


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
    dense = _affine(x, layer.kernel[...], layer.bias[...])
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


# --- transforms --------------------------------------------------------------------------------


class Block(nnx.Module):
    def __init__(self, d, *, rngs):
        self.mlp = hn.GatedMLP(d, 2 * d, rngs=rngs)
        self.glu = hn.GLU(d, d, rngs=rngs)
        self.lin = hn.MaskedLinear(d, d, rngs=rngs)

    def __call__(self, x):
        return x + self.lin(self.glu(x) + self.mlp(x))


def test_transforms_jit_grad_vmap_remat_scan():
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return Block(4, rngs=nnx.Rngs(key))

    stack = make(jax.random.split(jax.random.key(0), 3))
    assert stack.lin.mask[...].shape == (3, 4, 4)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def forward(x, layer):
        return layer(x)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def forward_remat(x, layer):
        return nnx.remat(lambda m, x: m(x))(layer, x)

    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)

    def unrolled(params, x):
        for i in range(3):
            layer_i = jax.tree.map(lambda a: a[i], (params, rest))  # noqa: B023
            x = nnx.merge(graphdef, *layer_i)(x)
        return x

    np.testing.assert_allclose(
        nnx.jit(forward)(X, stack), unrolled(params, X), rtol=1e-5, atol=1e-6
    )
    loss = lambda f: lambda m, x: jnp.sum(f(x, m) ** 2)  # noqa: E731
    g_scan = nnx.jit(nnx.grad(loss(forward)))(stack, X)
    g_remat = nnx.jit(nnx.grad(loss(forward_remat)))(stack, X)
    g_ref = jax.grad(lambda p, x: jnp.sum(unrolled(p, x) ** 2))(params, X)
    assert_tree_allclose(nnx.to_pure_dict(g_scan), nnx.to_pure_dict(g_ref), rtol=1e-4, atol=1e-5)
    assert_tree_allclose(nnx.to_pure_dict(g_remat), nnx.to_pure_dict(g_ref), rtol=1e-4, atol=1e-5)
    assert "mask" not in g_scan["lin"]  # masks are not differentiated

    block = Block(4, rngs=nnx.Rngs(1))
    batched = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(block, jnp.stack([X, 2 * X]))
    np.testing.assert_allclose(batched[1], block(2 * X), rtol=1e-5, atol=1e-6)


# --- state -------------------------------------------------------------------------------------


def test_state_round_trip_through_bytes():
    def build(seed):
        class Net(nnx.Module):
            def __init__(self, rngs):
                self.block = Block(4, rngs=rngs)
                self.mask = hn.Mask((4,))
                self.gate = hn.HardConcreteGate((4,), rngs=rngs)

        return Net(nnx.Rngs(seed))

    model = build(0)
    hn.prune(model, 0.5, method="random", key=jax.random.key(3))
    model.mask.mask[...] = jnp.array([True, False, False, True])
    select = nnx.Any(nnx.Param, hn.MaskVar)
    data = serialization.to_bytes(nnx.to_pure_dict(nnx.state(model, select)))
    other = build(1)
    target = nnx.state(other, select)
    nnx.replace_by_pure_dict(target, serialization.from_bytes(nnx.to_pure_dict(target), data))
    nnx.update(other, target)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model, select)), jax.tree.leaves(nnx.state(other, select))
    ):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit
    assert other.block.lin.mask[...].dtype == jnp.bool_
    np.testing.assert_array_equal(other.block(X), model.block(X))


# --- sharding ----------------------------------------------------------------------------------

_MESH_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import hadamard_jax.nnx as hn

    assert len(jax.devices()) == 8
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    init = nnx.initializers.lecun_normal()
    col = nnx.with_partitioning(init, (None, "model"))
    row = nnx.with_partitioning(init, ("model", None))

    class Net(nnx.Module):
        def __init__(self, rngs, sharded):
            c, r = (col, row) if sharded else (init, init)
            self.mlp = hn.GatedMLP(8, 16, kernel_init=c, down_kernel_init=r, rngs=rngs)
            self.glu = hn.GLU(8, 8, kernel_init=c, rngs=rngs)
            self.hw = hn.Highway(8, kernel_init=c, rngs=rngs)
            self.lin = hn.MaskedLinear(8, 4, kernel_init=r, rngs=rngs)

        def __call__(self, x):
            return self.lin(self.hw(self.glu(x + self.mlp(x))))

    def loss(m, x):
        return jnp.sum(m(x) ** 2)

    x = jax.random.normal(jax.random.key(1), (16, 8))
    ref = Net(nnx.Rngs(0), sharded=False)
    hn.prune(ref, 0.5)
    ref_out = nnx.jit(lambda m, x: m(x))(ref, x)
    ref_grad = nnx.jit(nnx.grad(loss))(ref, x)

    @nnx.jit
    def create():
        m = Net(nnx.Rngs(0), sharded=True)
        hn.prune(m, 0.5)
        state = nnx.state(m)
        nnx.update(m, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return m

    with jax.set_mesh(mesh):
        model = create()
        def sharded_as(a, spec):
            return a.sharding.is_equivalent_to(NamedSharding(mesh, spec), a.ndim)

        assert sharded_as(model.mlp.gate_kernel[...], P(None, "model"))
        assert sharded_as(model.mlp.down_kernel[...], P("model", None))
        assert sharded_as(model.lin.mask[...], P("model", None))  # the kernel's
        xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
        out = nnx.jit(lambda m, x: m(x))(model, xs)
        grad = nnx.jit(nnx.grad(loss))(model, xs)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))

    # Explicit axes (jax.make_mesh's default): every mask type of MaskedLinear with a kernel
    # sharded over "model"; outputs and gradients keep their shardings and match unsharded runs.
    emesh = jax.make_mesh((4, 2), ("data", "model"))
    assert emesh.axis_types == (jax.sharding.AxisType.Explicit,) * 2
    kinds = {
        "fixed": {},
        "ste sparsity": dict(mask_type="ste", sparsity=0.5),
        "ste threshold": dict(mask_type="ste", threshold=0.3),
        "hard concrete": dict(mask_type="hard_concrete"),
    }
    call = lambda m, x: m(x, deterministic=True)
    grad_of = nnx.grad(lambda m, x: jnp.sum(call(m, x) ** 2))
    for name, kw in kinds.items():
        ref = hn.MaskedLinear(8, 4, rngs=nnx.Rngs(0), **kw)
        if not kw:
            hn.prune(ref, 0.5)
        ref_out, ref_grad = nnx.jit(call)(ref, x), nnx.to_pure_dict(nnx.jit(grad_of)(ref, x))
        with jax.set_mesh(emesh):
            layer = hn.MaskedLinear(8, 4, kernel_init=row, rngs=nnx.Rngs(0), **kw)
            if not kw:
                hn.prune(layer, 0.5)
            assert layer.kernel[...].sharding.spec == P("model", None), name
            xs = jax.device_put(x, NamedSharding(emesh, P("data", None)))
            out = nnx.jit(call)(layer, xs)
            grad = nnx.to_pure_dict(nnx.jit(grad_of)(layer, xs))
        assert out.sharding.spec == P("data", None), (name, out.sharding)
        assert grad["kernel"].sharding.spec == P("model", None), (name, grad["kernel"].sharding)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(np.abs(b).max())))
        print(name, "EXPLICIT OK")
    print("MESH OK")
    """
)


def test_sharded_jit_over_8_device_mesh():
    run_on_8_cpu_devices(_MESH_SCRIPT, "MESH OK")
