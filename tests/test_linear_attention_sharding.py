"""Sequence sharding of gated_linear_attention and gated_delta_rule (8 CPU devices).

With the time axis split over a mesh axis (Explicit axes detected from the arrays' types, or
``mesh_axis=`` under Auto axes) each shard runs its chunks and only ``[B, H, K, V]`` states and
the shards' transitions move between devices: the values and gradients equal the one-device
op, and the compiled program's only collectives are all-reduces of ``n`` state-sized items.
The layers' ``mesh_axis=``: ``tests/layers/test_linear_attention.py``.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hadamard_jax as hj
from tests.utils import run_on_8_cpu_devices

_SETUP = textwrap.dedent(
    """
    import contextlib, io, re
    import numpy as np, jax, jax.numpy as jnp
    import jax.ad_checkpoint
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj

    # 4 shards of 11 tokens, chunks of 8: each shard pads its own last chunk.
    B, T, H, K, V, C, N = 2, 44, 2, 4, 6, 8, 4
    TIME_DIMS = {T, T // N, 16, C}  # a time length: the whole, a shard, a shard padded, a chunk
    BOUND = N * B * H * K * V  # n states [B, H, K, V]
    OP = re.compile(r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all"
                    r"|collective-permute)(-start)?\\(")
    rng = np.random.default_rng(0)

    def collectives(fn, *args):
        # [(kind, [shape, ...])] of the compiled program's collectives.
        found = []
        for line in fn.lower(*args).compile().as_text().splitlines():
            m = OP.search(line)
            if m:
                dims = re.findall(r"\\[([\\d,]*)\\]", m.group(1))
                found.append((m.group(2), [[int(s) for s in d.split(",") if s] for d in dims]))
        return found

    def assert_small(found, what):
        assert found, what  # the carries do move
        for kind, shapes in found:
            assert kind == "all-reduce", (what, kind, shapes)
            for shape in shapes:
                assert int(np.prod(shape)) <= BOUND, (what, shape)
                assert not set(shape) & TIME_DIMS, (what, shape)

    def assert_close(got, want, what):
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-5,
                                       err_msg=str(what))

    def grad_fn(op, n_args, **kw):
        def loss(*args):
            *xs, h0 = args
            o, s = op(*xs, initial_state=h0, chunk_size=C, **kw)
            return jnp.sum(jnp.sin(o)) + jnp.sum(s * s)
        return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(n_args))))

    def explicit_mesh():
        return jax.make_mesh((N, 2), ("seq", "model"), axis_types=(AxisType.Explicit,) * 2)

    def auto_mesh():
        # Auto axes leave every dimension but time to the compiler: a time-only mesh.
        return jax.make_mesh((N,), ("seq",), axis_types=(AxisType.Auto,),
                             devices=jax.devices()[:N])

    def put(mesh, x, *spec):
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    def placed(mesh, args):
        # [B, T, H, ...] split along time (and heads on a "model" axis), the state along heads.
        *xs, h0 = args
        heads = "model" if "model" in mesh.axis_names else None
        return [put(mesh, x, None, "seq", heads) for x in xs] + [put(mesh, h0, None, heads)]

    def assert_residuals(fn, *args):
        # The backward pass keeps the inputs, the n exchanged pairs and the chunk-boundary
        # states [T/C, B, H, K, V] (2 chunks per shard): no [B, T, H, V] array (2 * 44 * 2 * 6
        # elements), no [C, C] matrix per chunk (8 * 2 * 2 * 8 * 8).
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            jax.ad_checkpoint.print_saved_residuals(fn, *args)
        lines = [l for l in out.getvalue().splitlines() if "from the argument" not in l]
        assert lines, out.getvalue()
        for line in lines:
            text = re.sub(r"@(\\([^)]*\\)|\\w+)", "", line.split()[0])  # shardings off
            shape = [int(d) for d in re.search(r"\\[([\\d,]*)\\]", text)[1].split(",") if d]
            # (shard_map stacks its per-device residuals: count elements, not shapes)
            assert int(np.prod(shape)) <= 2 * N * B * H * K * V, line

    def assert_not_a_multiple(call):
        # T = 42 over 4 shards: a ValueError naming the time axis and the mesh axes.
        with jax.set_mesh(auto_mesh()):
            try:
                call(42)
            except ValueError as e:
                assert "length 42) is split over mesh axes ('seq',)" in str(e), e
            else:
                raise AssertionError("no error for T = 42 over 4 shards")

    def check(op, args, what, **kw):
        # Values and gradients of every argument equal the one-device op; small collectives.
        f = grad_fn(op, len(args), **kw)
        ref = f(*args)
        assert collectives(f, *args) == [], what  # one device: nothing moves
        for kind in ("explicit", "auto"):
            mesh = explicit_mesh() if kind == "explicit" else auto_mesh()
            with jax.set_mesh(mesh):
                sharded = placed(mesh, args)
                g = grad_fn(op, len(args), **({} if kind == "explicit" else {"mesh_axis": "seq"}),
                            **kw)
                assert_close(g(*sharded), ref, (what, kind))
                assert_small(collectives(g, *sharded), (what, kind))
        return ref
    """
)

_GLA = textwrap.dedent(
    """
    q, k = (rng.standard_normal((B, T, H, K)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((B, T, H, V)).astype(np.float32)
    h0 = rng.standard_normal((B, H, K, V)).astype(np.float32)
    g = -rng.uniform(0, 1, (B, T, H, K)).astype(np.float32)
    g[0, 11, 0, :] = -np.inf  # a full reset on the first token of shard 1
    g[1, 26, 1, 2] = -np.inf  # one key dimension reset inside shard 2
    g[:, 30] = 0.0
    gla = hj.gated_linear_attention
    check(gla, [q, k, v, g, h0], "per-key gates")
    check(gla, [q, k, v, g[..., 0], h0], "scalar gates")

    # No initial state, mixed shardings (v replicated along heads: resharded), the outputs'
    # shardings, and forward mode on the sharded path.
    ref = jax.jit(lambda *a: gla(*a, chunk_size=C))(q, k, v, g)
    mesh = explicit_mesh()
    with jax.set_mesh(mesh):
        xs = [put(mesh, x, None, "seq", "model") for x in (q, k, g)]
        out = jax.jit(lambda q, k, v, g: gla(q, k, v, g, chunk_size=C))(
            xs[0], xs[1], put(mesh, v, None, "seq"), xs[2])
        assert_close(out, ref, "no state")
        assert out[0].sharding.spec == P(None, "seq", "model", None), out[0].sharding
        assert out[1].sharding.spec == P(None, "model", None, None), out[1].sharding
        dq = put(mesh, v[..., :K], None, "seq", "model")
        jvp = jax.jit(lambda q, dq: jax.jvp(
            lambda q: gla(q, xs[1], xs[1], xs[2], chunk_size=C)[0], (q,), (dq,)))
        _, t = jvp(xs[0], dq)
        assert_residuals(lambda q, k, v, g: jnp.sum(gla(q, k, v, g, chunk_size=C)[0]),
                         xs[0], xs[1], put(mesh, v, None, "seq", "model"), xs[2])
    _, t_ref = jax.jvp(lambda q: gla(q, k, k, g, chunk_size=C)[0], (q,), (v[..., :K],))
    assert_close(t, t_ref, "jvp")
    assert_not_a_multiple(lambda n: gla(q[:, :n], k[:, :n], v[:, :n], g[:, :n],
                                        mesh_axis="seq"))
    print("GLA OK")
    """
)

_DELTA = textwrap.dedent(
    """
    q, k = (rng.standard_normal((B, T, H, K)).astype(np.float32) for _ in range(2))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((B, T, H, V)).astype(np.float32)
    h0 = rng.standard_normal((B, H, K, V)).astype(np.float32)
    log_alpha = -rng.uniform(0, 1, (B, T, H)).astype(np.float32)
    beta = rng.uniform(0, 1, (B, T, H)).astype(np.float32)
    log_alpha[0, 11, 0] = -np.inf  # a reset on the first token of shard 1
    log_alpha[1, 26, :] = -np.inf  # inside shard 2
    beta[:, 5], beta[:, 33] = 0.0, 1.0
    dr = hj.gated_delta_rule
    check(dr, [q, k, v, log_alpha, beta, h0], "delta rule")
    assert_not_a_multiple(lambda n: dr(q[:, :n], k[:, :n], v[:, :n], log_alpha[:, :n],
                                       beta[:, :n], mesh_axis="seq"))
    print("DELTA OK")
    """
)


def test_gated_linear_attention_sharded_over_time():
    run_on_8_cpu_devices(_SETUP + _GLA, "GLA OK")


def test_gated_delta_rule_sharded_over_time():
    run_on_8_cpu_devices(_SETUP + _DELTA, "DELTA OK")


def _args(op):
    b, t, h, kd = 1, 6, 1, 2
    q = jnp.ones((b, t, h, kd))
    gates = [jnp.zeros((b, t, h))] * (1 if op is hj.gated_linear_attention else 2)
    return (q, q, q, *gates)


_OPS = [hj.gated_linear_attention, hj.gated_delta_rule]


@pytest.mark.parametrize("op", _OPS, ids=lambda f: f.__name__)
def test_bad_mesh_axis(op):
    args = _args(op)
    with pytest.raises(ValueError, match=r"mesh_axis='seq' needs a mesh"):
        op(*args, mesh_axis="seq")
    with pytest.raises(TypeError, match=r"mesh_axis must be None, a mesh axis name"):
        op(*args, mesh_axis=3)
    with jax.set_mesh(jax.make_mesh((1,), ("seq",))):
        with pytest.raises(ValueError, match=r"mesh_axis='time' names \['time'\], not axes"):
            op(*args, mesh_axis="time")
        # A one-device axis: the one-device algorithm.
        np.testing.assert_array_equal(op(*args, mesh_axis="seq")[0], op(*args)[0])
