"""Both front ends as a whole, on models mixing the families: Flax transforms (jit, grad, vmap,
remat, scan), an NNX state round trip through bytes (Linen's pruned variables:
``test_pruning.py``), an 8-device mesh. Each family's own tests are in its module here; NNX ==
Linen in ``tests/test_parity.py``."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx, serialization

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import assert_tree_allclose, normal, run_on_8_cpu_devices

X = normal(42, (3, 4))


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


_NNX_MESH_SCRIPT = textwrap.dedent(
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


def test_nnx_sharded_jit_over_8_device_mesh():
    run_on_8_cpu_devices(_NNX_MESH_SCRIPT, "MESH OK")


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


_LINEN_MESH_SCRIPT = textwrap.dedent(
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


def test_linen_sharded_jit_over_8_device_mesh():
    run_on_8_cpu_devices(_LINEN_MESH_SCRIPT, "MESH OK")
