"""Tests of the Linen modules: masks, pruning, transforms, sharding, state (parity: test_parity)."""

import textwrap

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
from tests.utils import assert_tree_allclose, normal, run_on_8_cpu_devices

X = normal(42, (3, 4))
NORMAL = nnx.initializers.normal(1.0)


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


# --- pruning and training ----------------------------------------------------------------------


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


# --- transforms --------------------------------------------------------------------------------


class Layer(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        y = hl.GatedMLP(8, name="mlp")(x) + hl.GLU(4, name="glu")(x)
        return x + hl.MaskedLinear(4, name="lin")(y), None


def test_scan_remat_vmap():
    Stack = nn.scan(
        nn.remat(Layer),
        variable_axes={"params": 0, "masks": 0},
        split_rngs={"params": True},
        length=3,
    )
    stack = Stack()
    variables = stack.init(jax.random.key(0), X, None)
    assert variables["masks"]["lin"]["mask"].shape == (3, 4, 4)
    variables = hl.prune(dict(variables), 0.5)

    def unrolled(params, x):
        for i in range(3):
            v = jax.tree.map(lambda a: a[i], {"params": params, "masks": variables["masks"]})  # noqa: B023
            x, _ = Layer().apply(v, x, None)
        return x

    out, _ = jax.jit(stack.apply)(variables, X, None)
    np.testing.assert_allclose(out, unrolled(variables["params"], X), rtol=1e-5, atol=1e-6)

    def loss(p):
        return jnp.sum(stack.apply({"params": p, "masks": variables["masks"]}, X, None)[0] ** 2)

    g = jax.jit(jax.grad(loss))(variables["params"])
    g_ref = jax.grad(lambda p: jnp.sum(unrolled(p, X) ** 2))(variables["params"])
    assert_tree_allclose(g, g_ref, rtol=1e-4, atol=1e-5)

    batched = nn.vmap(
        Layer,
        variable_axes={"params": None, "masks": None},
        split_rngs={"params": False},
        in_axes=(0, None),
    )()
    single = {k: jax.tree.map(lambda a: a[0], v) for k, v in variables.items()}
    xs = jnp.stack([X, 2 * X])
    out, _ = batched.apply(single, xs, None)
    np.testing.assert_allclose(out[1], Layer().apply(single, 2 * X, None)[0], rtol=1e-5, atol=1e-6)


# --- state -------------------------------------------------------------------------------------


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


# --- sharding ----------------------------------------------------------------------------------

_MESH_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import hadamard_jax.linen as hl

    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    init = nn.initializers.lecun_normal()

    class Net(nn.Module):
        sharded: bool

        @nn.compact
        def __call__(self, x):
            c = nn.with_partitioning(init, (None, "model")) if self.sharded else init
            r = nn.with_partitioning(init, ("model", None)) if self.sharded else init
            x = x + hl.GatedMLP(16, kernel_init=c, down_kernel_init=r)(x)
            x = hl.GLU(8, kernel_init=c)(x)
            x = hl.Highway(8, kernel_init=c)(x)
            return hl.MaskedLinear(4, kernel_init=r)(x)

    x = jax.random.normal(jax.random.key(1), (16, 8))
    ref_vars = hl.prune(Net(False).init(jax.random.key(0), x), 0.5)
    loss = lambda model: lambda p, m, x: jnp.sum(model.apply({"params": p, "masks": m}, x) ** 2)
    ref_out = jax.jit(Net(False).apply)(ref_vars, x)
    ref_grad = jax.jit(jax.grad(loss(Net(False))))(ref_vars["params"], ref_vars["masks"], x)

    model = Net(True)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    specs = nn.get_partition_spec(abstract)
    assert specs["masks"]["MaskedLinear_0"]["mask"] == P("model", None), specs["masks"]
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    variables = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), x)
    variables = hl.prune(variables, 0.5)
    k = variables["params"]["GatedMLP_0"]["gate_kernel"].value
    assert k.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "model")), 2), k.sharding
    params = nn.meta.unbox(variables["params"])
    masks = nn.meta.unbox(variables["masks"])
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    out = jax.jit(model.apply)({"params": params, "masks": masks}, xs)
    grad = jax.jit(jax.grad(loss(model)))(params, masks, xs)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))

    # Explicit axes (jax.make_mesh's default): every mask type of MaskedLinear with a kernel
    # sharded over "model"; outputs and gradients keep their shardings and match unsharded runs.
    emesh = jax.make_mesh((4, 2), ("data", "model"))
    assert emesh.axis_types == (jax.sharding.AxisType.Explicit,) * 2
    row = nn.with_partitioning(init, ("model", None))
    kinds = {
        "fixed": {},
        "ste sparsity": dict(mask_type="ste", sparsity=0.5),
        "ste threshold": dict(mask_type="ste", threshold=0.3),
        "hard concrete": dict(mask_type="hard_concrete", deterministic=True),
    }
    for name, kw in kinds.items():
        ref_layer, layer = hl.MaskedLinear(4, **kw), hl.MaskedLinear(4, kernel_init=row, **kw)
        def loss_of(module):
            return lambda p, v, x: jnp.sum(module.apply({**v, "params": p}, x) ** 2)
        ref = ref_layer.init(jax.random.key(0), x)
        ref = hl.prune(ref, 0.5) if not kw else ref
        ref_out = jax.jit(ref_layer.apply)(ref, x)
        ref_grad = jax.jit(jax.grad(loss_of(ref_layer)))(ref["params"], ref, x)
        # Linen's Partitioned boxes constrain (an assert under Explicit axes) when unboxed in a
        # mesh context: initialise outside it, straight into the shardings, then unbox.
        specs = nn.get_partition_spec(jax.eval_shape(layer.init, jax.random.key(0), x))
        out_shardings = jax.tree.map(lambda s: NamedSharding(emesh, s), specs)
        variables = jax.jit(layer.init, out_shardings=out_shardings)(jax.random.key(0), x)
        variables = nn.meta.unbox(hl.prune(variables, 0.5) if not kw else variables)
        assert variables["params"]["kernel"].sharding.spec == P("model", None), name
        with jax.set_mesh(emesh):
            xs = jax.device_put(x, NamedSharding(emesh, P("data", None)))
            out = jax.jit(layer.apply)(variables, xs)
            grad = jax.jit(jax.grad(loss_of(layer)))(variables["params"], variables, xs)
        kernel_grad = grad["kernel"]
        assert out.sharding.spec == P("data", None), (name, out.sharding)
        assert kernel_grad.sharding.spec == P("model", None), (name, kernel_grad.sharding)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(np.abs(b).max())))
        print(name, "EXPLICIT OK")
    print("MESH OK")
    """
)


def test_sharded_jit_over_8_device_mesh():
    run_on_8_cpu_devices(_MESH_SCRIPT, "MESH OK")
