"""``linear_scan``/``log_linear_scan`` sequence sharding (``mesh_axis=``) on 8 CPU devices, in
subprocesses: the split over a mesh axis, and mixed shardings of the inputs under Explicit and
Auto axes. (Apart from ``test_linear_scan.py``, whose numerics CI runs a second time with XLA's
default compiler: shardings do not depend on the compiler.)"""

import textwrap

from tests.utils import run_on_8_cpu_devices

# --- sequence sharding: one subprocess, 8 CPU devices -------------------------------------------

_MESH_SCRIPT = textwrap.dedent(
    """
    import re
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj

    T, D, N_SEQ, N_MODEL = 64, 16, 4, 2
    k = jax.random.split(jax.random.key(0), 4)
    a = jax.random.uniform(k[0], (T, D), minval=-1.2, maxval=1.2)
    b = jax.random.normal(k[1], (T, D))
    h0 = jax.random.normal(k[2], (D,))
    w = jax.random.normal(k[3], (T, D))
    la, lb = jnp.log(jnp.abs(a) + 0.1), b

    def run(h0_arg=True, axis=0, **kw):
        def f(a, b, h0, w):
            if axis:
                a, b, w = a.T, b.T, w.T
            h = hj.linear_scan(a, b, h0=h0 if h0_arg else None, axis=axis, **kw)
            lh = hj.log_linear_scan(jnp.log(jnp.abs(a) + 0.1), b, axis=axis, **kw)
            return jnp.sum(h * w) + jnp.sum(jnp.sin(lh) * w)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    def fwd(**kw):
        return jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, **kw))

    refs = {}
    for rev in (False, True):  # one device
        refs[rev] = fwd(reverse=rev)(a, b, h0), run(reverse=rev)(a, b, h0, w)
    ref_axis1 = run(axis=1)(a, b, h0, w)

    local_block = (T // N_SEQ) * (D // N_MODEL)
    carries = N_SEQ * (D // N_MODEL)

    def compiled(fn, *args, what):
        # fn compiled for args, after checking its collectives.
        exe = fn.lower(*args).compile()
        text = exe.as_text()
        found = 0
        for line in text.splitlines():
            m = re.search(r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all"
                          r"|collective-permute)(-start)?\\(", line)
            if not m:
                continue
            found += 1
            assert m.group(2) == "all-reduce", (what, line)
            for dims in re.findall(r"\\[([\\d,]*)\\]", m.group(1)):
                size = int(np.prod([int(s) for s in dims.split(",") if s]))
                assert size <= carries < local_block, (what, size, line)
        assert found, what  # the carries do move
        return exe

    for kind in ("explicit", "auto"):
        types = (AxisType.Explicit if kind == "explicit" else AxisType.Auto,) * 2
        mesh = jax.make_mesh((N_SEQ, N_MODEL), ("seq", "model"), axis_types=types)
        kw = {} if kind == "explicit" else {"mesh_axis": "seq"}
        with jax.set_mesh(mesh):
            s2 = NamedSharding(mesh, P("seq", "model"))
            A, B, W = (jax.device_put(x, s2) for x in (a, b, w))
            H0 = jax.device_put(h0, NamedSharding(mesh, P("model")))
            for rev in (False, True) if kind == "explicit" else (False,):
                f = compiled(fwd(reverse=rev, **kw), A, B, H0, what=(kind, rev, "fwd"))
                g = compiled(run(reverse=rev, **kw), A, B, H0, W, what=(kind, rev, "grad"))
                h = f(A, B, H0)
                np.testing.assert_allclose(h, refs[rev][0], rtol=2e-5, atol=2e-5)
                assert h.sharding.spec == P("seq", "model"), h.sharding
                value, grads = g(A, B, H0, W)
                np.testing.assert_allclose(value, refs[rev][1][0], rtol=2e-5)
                for x, y in zip(grads, refs[rev][1][1]):
                    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)
            if kind == "auto":  # the rest once, under Explicit axes
                print(kind, "OK")
                continue
            # The time axis second (a transposed layout), and no h0.
            g1 = run(axis=1, **kw)
            value, grads = g1(A, B, H0, W)
            np.testing.assert_allclose(value, ref_axis1[0], rtol=2e-5)
            for x, y in zip(grads, ref_axis1[1]):
                np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)
            out = fwd(**kw)(A, B, None)
            np.testing.assert_allclose(out, fwd()(a, b, None), rtol=2e-5, atol=2e-5)
            # Forward mode on the sharded path.
            jvp = lambda a, b, h0: jax.jvp(
                lambda a: hj.linear_scan(a, b, h0=h0, **kw), (a,), (b,))
            _, t = jax.jit(jvp)(A, B, H0)
            _, t_ref = jax.jvp(lambda a: hj.linear_scan(a, b, h0=h0), (a,), (b,))
            np.testing.assert_allclose(t, t_ref, rtol=2e-5, atol=2e-5)
            # A time-invariant decay (not sharded along time) on the sharded path.
            dec = jax.device_put(a[0], NamedSharding(mesh, P("model")))
            f = jax.jit(lambda d, b: hj.linear_scan(d, b, broadcast=True))
            np.testing.assert_allclose(f(dec, B), f(a[0], b), rtol=2e-5, atol=2e-5)
            # Only the state axis sharded: the one-device algorithm, no carries to move.
            s_state = NamedSharding(mesh, P(None, "model"))
            A2, B2 = jax.device_put(a, s_state), jax.device_put(b, s_state)
            value, grads = run()(A2, B2, H0, jax.device_put(w, s_state))
            np.testing.assert_allclose(value, refs[False][1][0], rtol=2e-5)
            print(kind, "OK")
    print("MESH OK")
    """
)


def test_sequence_sharded_mesh():
    run_on_8_cpu_devices(_MESH_SCRIPT, "MESH OK")


# --- mixed shardings under Explicit axes (a regression) -----------------------------------------

MIXED_SHARDINGS_SCRIPT = r"""
import functools
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import hadamard_jax as hj
from hadamard_jax import linen as hl, nnx as hn

mesh = jax.make_mesh((2, 4), ("data", "seq"), axis_types=(AxisType.Explicit,) * 2)
B, T, D = 4, 8, 3
rng = np.random.default_rng(0)
a = jnp.asarray(rng.uniform(0.5, 1.0, (B, T, D)), jnp.float32)
b = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
h0 = jnp.asarray(rng.standard_normal((B, D)), jnp.float32)
ct = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)


def put(x, *spec):
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


def spec_of(x):
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def lin(a, b, h0):
    return hj.linear_scan(a, b, h0=h0, axis=1, broadcast=True)


def log(a, b, h0):
    return hj.log_linear_scan(jnp.log(a), b, log_h0=h0, axis=1, broadcast=True)


@functools.partial(jax.jit, static_argnums=3)
def everything(a, b, h0, fn):
    out, vjp = jax.vjp(lambda a, b, h0: fn(a, b, h0), a, b, h0)
    tangent = jax.jvp(lambda b, h0: fn(a, b, h0), (b, h0), (b, h0))[1]
    return out, vjp(ct), tangent

# (a, b, h0) placements: each mixes shardings that crashed inside JAX before. The start is the
# usual zeros((B, D)) (one unsharded reference per op and shape of a: fewer compiles).
zeros = jnp.zeros((B, D))
cases = {
    "replicated zeros h0": (("data", "seq"), ("data", "seq"), ()),
    "only a along time": (("data", "seq"), (), ()),
    "only b along time, h0 batch": ((None, "seq"), ("data", "seq"), ("data",)),
    "time-invariant a replicated": ("invariant", ("data", "seq"), ()),
}
with jax.set_mesh(mesh):
    for fn, names in ((lin, list(cases)), (log, list(cases)[:2])):
        for name in names:
            sa, sb, sh = cases[name]
            a_, h_ = a, zeros
            if sa == "invariant":
                a_, sa = a[:, :1], ()
            want = everything(a_, b, h_, fn)
            args = (put(a_, *sa), put(b, *sb), put(h_, *sh))
            got = everything(*args, fn)
            assert spec_of(got[0])[:2] == ("data", "seq"), (name, got[0].sharding.spec)
            for g, x in zip(got[1], args):  # each gradient has its argument's sharding
                assert spec_of(g) == spec_of(x), (name, g.sharding, x.sharding)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{fn} {name}")
            print(fn.__name__, name, "OK")

    # Time-major, reversed, a replicated h0 that conflicts with nothing; and mesh_axis named
    # for arrays whose types are not sharded along time (they are resharded to it).
    tm = lambda x: jnp.swapaxes(x, 0, 1)
    rev = jax.jit(
        jax.grad(
            lambda a, b, h0: jnp.sum(jnp.sin(hj.linear_scan(a, b, h0=h0, reverse=True))),
            argnums=(0, 1, 2),
        )
    )
    want = rev(tm(a), tm(b), h0)
    got = rev(put(tm(a), "seq"), put(tm(b), "seq", "data"), put(h0))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    named = jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, axis=1, mesh_axis="seq"))
    out = named(a, put(b, "data"), h0)
    assert spec_of(out) == ("data", "seq", None), out.sharding
    np.testing.assert_allclose(out, lin(a, b, h0), rtol=1e-5, atol=1e-6)

    # The layers (Linen; NNX runs the same functions), from the usual replicated zeros((B, n))
    # start with batch- and time-sharded inputs.
    @functools.partial(jax.jit, static_argnums=3)
    def layer_loss(params, x, h0, apply):
        def loss(params, x, h0):
            h, last = apply(params, x, h0)
            return jnp.sum(h * jnp.cos(h)) + jnp.sum(last), (h, last)

        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, h0)

    for module, n in ((hl.RGLRU(D, num_heads=1), D), (hl.MinGRU(5), 5)):
        params = jax.jit(module.init)(jax.random.key(0), b)
        apply = lambda p, x, h0, m=module: m.apply(p, x, h0)
        want = layer_loss(params, b, jnp.zeros((B, n)), apply)
        got = layer_loss(params, put(b, "data", "seq"), put(jnp.zeros((B, n))), apply)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        print(type(module).__name__, "OK")
    layer = hn.RGLRU(D, rngs=nnx.Rngs(0))
    h, last = nnx.jit(lambda m, x, h0: m(x, h0))(layer, put(b, "data", "seq"), jnp.zeros((B, D)))
    assert h.sharding.spec[:2] == ("data", "seq")
    np.testing.assert_allclose(h, layer(b)[0], rtol=1e-5, atol=1e-6)

# Auto axes: the compiler places the arguments; mesh_axis names the time's axis.
auto = jax.make_mesh((2, 4), ("data", "seq"), axis_types=(AxisType.Auto,) * 2)
with jax.set_mesh(auto):
    f = jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, axis=1, mesh_axis="seq"))
    bs = jax.device_put(b, NamedSharding(auto, P("data", "seq")))
    np.testing.assert_allclose(f(a, bs, h0), lin(a, b, h0), rtol=1e-5, atol=1e-6)
print("MIXED SHARDINGS OK")
"""


def test_mixed_shardings_under_explicit_mesh_axes():
    run_on_8_cpu_devices(MIXED_SHARDINGS_SCRIPT, "MIXED SHARDINGS OK")
