"""sparsify with Flax: nnx.Optimizer(wrt=nnx.Param), Linen's variables["params"] and a plain
pytree train to identical masks and weights; masks keep their parameter's sharding on 8 devices."""

import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hadamard_jax import sparse
from tests.utils import normal, run_on_8_cpu_devices

X = normal(1, (8, 12))
Y = normal(2, (8, 4))


def _tx():
    return sparse.sparsify(
        optax.adamw(1e-2, weight_decay=0.1),
        method="rigl",
        schedule=sparse.periodic(0.75, 3, end_step=12),
        distribution="erk",
    )


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(12, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(16, name="Dense_0")(x))
        return nn.Dense(4, name="Dense_1")(h)


def _plain(p, x):
    h = jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"][None])
    return h @ p["l2"]["kernel"] + p["l2"]["bias"][None]


def test_nnx_linen_and_pytree_give_identical_masks():
    model = NnxMLP(nnx.Rngs(0))
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    plain = jax.tree.map(jnp.array, pure)
    linen = {"params": {"Dense_0": pure["l1"], "Dense_1": pure["l2"]}}

    opt = nnx.Optimizer(model, _tx(), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, opt):
        grads = nnx.grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
        opt.update(model, grads)

    def make_step(apply, tx):
        @jax.jit
        def step(p, s):
            g = jax.grad(lambda p: jnp.mean((apply(p, X) - Y) ** 2))(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        return step

    tx_plain, tx_linen = _tx(), _tx()
    sp, sl = tx_plain.init(plain), tx_linen.init(linen["params"])
    step_plain = make_step(_plain, tx_plain)
    step_linen = make_step(lambda p, x: LinenMLP().apply({"params": p}, x), tx_linen)
    lp = linen["params"]
    for _ in range(10):
        nnx_step(model, opt)
        plain, sp = step_plain(plain, sp)
        lp, sl = step_linen(lp, sl)
    nnx_params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    nnx_state = nnx.as_pure(opt.opt_state)
    m_nnx = sparse.masks_of(nnx_state, nnx_params)
    m_plain = sparse.masks_of(sp, plain)
    m_linen = sparse.masks_of(sl, lp)
    for ours, theirs in (("l1", "Dense_0"), ("l2", "Dense_1")):
        assert m_nnx[ours]["kernel"] is not None and m_nnx[ours]["bias"] is None
        np.testing.assert_array_equal(m_nnx[ours]["kernel"], m_plain[ours]["kernel"])
        np.testing.assert_array_equal(m_nnx[ours]["kernel"], m_linen[theirs]["kernel"])
        np.testing.assert_allclose(nnx_params[ours]["kernel"], lp[theirs]["kernel"], atol=1e-6)
        kernel, mask = np.asarray(nnx_params[ours]["kernel"]), np.asarray(m_nnx[ours]["kernel"])
        assert (kernel[~mask] == 0).all()
    assert sparse.sparsity_of(nnx_state) == sparse.sparsity_of(sp) == sparse.sparsity_of(sl)


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from hadamard_jax import sparse

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    specs = {"stack": P("data", None, "model"), "w": P(None, "model"), "b": P("model")}
    k = jax.random.split(jax.random.key(0), 2)
    params = {"stack": jax.random.normal(k[0], (4, 16, 8)), "w": jax.random.normal(k[1], (16, 8)),
              "b": jnp.zeros(8)}
    c = {n: jax.random.normal(jax.random.key(3), v.shape) for n, v in params.items()}

    def loss(p):  # element-wise: gradients bit-identical however the arrays are sharded
        return sum(jnp.sum(jnp.sin(3 * p[n]) * c[n]) for n in p)

    def run(params):
        out = {}
        for method, sched in (("magnitude", sparse.polynomial(0.8, 0, 4, every=2)),
                              ("rigl", sparse.periodic(0.75, 2, end_step=8))):
            tx = sparse.sparsify(optax.adam(1e-2), method=method, schedule=sched)
            state = tx.init(params)
            step = jax.jit(lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(
                *tx.update(jax.grad(loss)(p), s, p)))
            p = params
            for _ in range(5):
                p, state = step(p, state)
            out[method] = (p, state, sparse.masks_of(state, p))
        return out

    single = run(params)
    put = lambda n, v: jax.device_put(v, NamedSharding(mesh, specs[n]))
    sharded_params = {n: put(n, v) for n, v in params.items()}
    with jax.set_mesh(mesh):
        sharded = run(sharded_params)
    for method in single:
        p1, _, m1 = single[method]
        p8, s8, m8 = sharded[method]
        for name in ("stack", "w"):
            np.testing.assert_array_equal(np.asarray(m1[name]), np.asarray(m8[name]))
            np.testing.assert_allclose(np.asarray(p1[name]), np.asarray(p8[name]), atol=1e-5)
            want = sharded_params[name].sharding
            assert m8[name].sharding.is_equivalent_to(want, m8[name].ndim), (
                method, name, m8[name].sharding, want)
        print(method, "OK")

    # Explicit axes (make_mesh's default): init and an update step (grads = params).
    explicit = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    with jax.set_mesh(explicit):
        ps = {n: jax.device_put(v, NamedSharding(explicit, specs[n])) for n, v in params.items()}
        tx = sparse.sparsify(optax.sgd(0.1), schedule=sparse.one_shot(0.5))
        state = tx.init(ps)
        u, state = jax.jit(tx.update)(ps, state, ps)
        m8 = sparse.masks_of(state, ps)
    tx = sparse.sparsify(optax.sgd(0.1), schedule=sparse.one_shot(0.5))
    m1 = sparse.masks_of(tx.update(params, tx.init(params), params)[1], params)
    for name in ("stack", "w"):
        np.testing.assert_array_equal(np.asarray(m1[name]), np.asarray(m8[name]))
        assert m8[name].sharding.spec == specs[name], (name, m8[name].sharding)
        assert u[name].sharding.spec == specs[name], (name, u[name].sharding)
    print("explicit OK")
    print("SHARDED OK")
    """
)


def test_masks_on_8_devices_equal_single_device_and_keep_sharding():
    run_on_8_cpu_devices(_SHARDED, "SHARDED OK")
