"""Tests of the core products (``hadamard``, ``hadamard_n``): values, dtypes, errors, every
transform, and properties against NumPy (hypothesis)."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hadamard_jax import hadamard, hadamard_n
from tests.utils import (
    assert_tree_allclose,
    bernoulli,
    check_grads,
    integers,
    normal,
    only_arguments_saved,
    run_on_8_cpu_devices,
    saved_residuals,
)


def _rand(shape, dtype=jnp.float32, seed=0):
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return normal(seed, shape, dtype)
    if dtype == jnp.bool_:
        return bernoulli(seed, 0.5, shape)
    return integers(seed, shape, -5, 5, dtype)


def _pair(shape_a, shape_b=None, dtype=jnp.float32):
    return _rand(shape_a, dtype, 1), _rand(shape_b or shape_a, dtype, 2)


# --- values and dtypes -----------------------------------------------------------------------

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.complex64, jnp.int32, jnp.int8, jnp.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_matches_multiply(dtype):
    a, b = _pair((3, 5), dtype=dtype)
    out = jax.jit(hadamard)(a, b)
    expected = jnp.multiply(a, b)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


@pytest.mark.parametrize(
    "da,db",
    [
        (jnp.float16, jnp.float32),
        (jnp.bfloat16, jnp.float16),
        (jnp.int32, jnp.float32),
        (jnp.bool_, jnp.float32),
        (jnp.int8, jnp.uint8),
        (jnp.float32, jnp.complex64),
    ],
)
def test_dtype_promotion(da, db):
    a, b = _rand((4,), da), _rand((4,), db, 1)
    assert hadamard(a, b).dtype == jnp.multiply(a, b).dtype
    assert hadamard_n(a, b, a).dtype == jnp.multiply(jnp.multiply(a, b), a).dtype
    np.testing.assert_array_equal(np.asarray(hadamard(a, b)), np.asarray(jnp.multiply(a, b)))


def test_python_scalars_and_lists():
    x = jnp.ones((2,), jnp.bfloat16)
    # A Python scalar is weakly typed, as in jnp.multiply; it has shape () so it needs broadcast.
    assert hadamard(x, 2.0, broadcast=True).dtype == jnp.bfloat16
    assert hadamard(3, 4.0) == 12.0
    np.testing.assert_array_equal(hadamard([1, 2], [3, 4]), np.array([3, 8]))
    np.testing.assert_array_equal(hadamard(np.arange(3.0), np.arange(3.0)), np.arange(3.0) ** 2)


def test_hadamard_n_values():
    xs = [_rand((2, 3), seed=i) for i in range(5)]
    np.testing.assert_allclose(hadamard_n(*xs), np.prod(np.stack(xs), axis=0), rtol=1e-6)
    np.testing.assert_array_equal(hadamard_n(xs[0]), xs[0])


def test_hadamard_n_compute_dtype_avoids_overflow():
    big = jnp.full((3,), 300.0, jnp.float16)
    small = jnp.full((3,), 1e-3, jnp.float16)
    assert np.isinf(np.asarray(hadamard_n(big, big, small), np.float32)).all()  # 9e4 > fp16 max
    out = hadamard_n(big, big, small, compute_dtype=jnp.float32)
    assert out.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(out, np.float32), 90.0, rtol=1e-2)
    g = jax.grad(lambda a: hadamard_n(a, big, small, compute_dtype=jnp.float32).sum())(big)
    assert g.dtype == jnp.float16 and np.isfinite(np.asarray(g, np.float32)).all()


# --- errors ------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"a\.shape=\(2, 3\).*b\.shape=\(3,\).*broadcast=True"):
        hadamard(jnp.ones((2, 3)), jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"arrays\[0\]\.shape=\(2,\).*arrays\[2\]\.shape=\(3,\)"):
        hadamard_n(jnp.ones(2), jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"do not broadcast.*\(2, 3\).*\(4,\)"):
        hadamard(jnp.ones((2, 3)), jnp.ones((4,)), broadcast=True)


def test_shape_mismatch_raises_at_trace_time():
    with pytest.raises(ValueError, match="equal shapes"):
        jax.jit(hadamard).lower(jnp.ones(2), jnp.ones(3))


@pytest.mark.parametrize(
    "bad", [None, "abc", object(), {"a": 1}], ids=["None", "str", "object", "dict"]
)
def test_bad_argument_type(bad):
    with pytest.raises(TypeError, match="argument 'b'"):
        hadamard(jnp.ones(2), bad)
    with pytest.raises(TypeError, match=r"argument 'arrays\[1\]'"):
        hadamard_n(jnp.ones(2), bad)


def test_other_errors():
    with pytest.raises(ValueError, match="at least one array"):
        hadamard_n()
    with pytest.raises(TypeError, match="compute_dtype='nope'"):
        hadamard_n(jnp.ones(2), compute_dtype="nope")
    with pytest.raises(ValueError, match="complex"):
        hadamard_n(jnp.ones(2, jnp.complex64), compute_dtype=jnp.float32)
    with pytest.raises(ValueError, match="compute_dtype"):
        hadamard_n(jnp.ones(2, jnp.int32), compute_dtype=jnp.float32)
    with pytest.raises(TypeError, match="ragged|rectangular"):
        hadamard([1, [2, 3]], [1, 2])
    with pytest.raises(TypeError, match="broadcast must be a static bool"):
        hadamard(jnp.ones(2), jnp.ones(2), broadcast="yes")


# --- derivatives -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.complex128])
def test_check_grads_hadamard(x64, dtype):
    a, b = _pair((3, 4), dtype=dtype)
    check_grads(hadamard, (a, b), order=2, modes=["fwd", "rev"])
    c, d = _pair((3, 1), (4,), dtype=dtype)
    check_grads(lambda c, d: hadamard(c, d, broadcast=True), (c, d), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.complex128])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_check_grads_hadamard_n(x64, dtype, n):
    xs = [_rand((2, 3), dtype, i) for i in range(n)]
    check_grads(hadamard_n, tuple(xs), order=2, modes=["fwd", "rev"])


def test_check_grads_float32_small_values():
    a, b = _pair((8,))
    check_grads(hadamard, (a, b), order=2, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2)


def _plain_n(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


TRANSFORMS = {
    "grad": lambda f: jax.grad(lambda *xs: jnp.sum(jnp.sin(f(*xs))), argnums=(0, 1, 2)),
    "value_and_grad": lambda f: jax.value_and_grad(lambda *xs: jnp.sum(f(*xs) ** 2), argnums=1),
    "jvp": lambda f: lambda *xs: jax.jvp(f, xs, tuple(jnp.cos(x) for x in xs)),
    "jacfwd": lambda f: jax.jacfwd(f, argnums=(0, 2)),
    "jacrev": lambda f: jax.jacrev(f, argnums=(0, 1)),
    "hessian": lambda f: jax.hessian(lambda *xs: jnp.sum(f(*xs) ** 2), argnums=(0, 1)),
    "hvp_fwd_over_rev": lambda f: (
        lambda *xs: jax.jvp(
            jax.grad(lambda *ys: jnp.sum(jnp.tanh(f(*ys)))), xs, tuple(jnp.ones_like(x) for x in xs)
        )
    ),
    "checkpoint": lambda f: jax.grad(lambda *xs: jnp.sum(jax.checkpoint(f)(*xs) ** 2)),
    "vmap": lambda f: jax.vmap(f),
    "vmap_in_axes_single": lambda f: (
        lambda a, b, c: jax.vmap(f, in_axes=(0, None, None))(a, b[0], c[0])
    ),
    "vmap_of_grad": lambda f: jax.vmap(jax.grad(lambda *xs: jnp.sum(f(*xs)), argnums=(0, 1))),
    "scan": lambda f: (
        lambda *xs: jax.grad(
            lambda c: jnp.sum(
                jax.lax.scan(lambda c, _: (jnp.tanh(f(c, *xs[1:])), None), c, None, length=3)[0]
            )
        )(xs[0])
    ),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transforms_agree_with_plain_composition(name):
    xs = tuple(_rand((3, 4), seed=i) for i in range(3))
    transform = TRANSFORMS[name]
    ours = jax.jit(transform(lambda *xs: hadamard_n(*xs)))(*xs)
    plain = jax.jit(transform(_plain_n))(*xs)
    assert_tree_allclose(ours, plain, rtol=2e-6, atol=2e-6)
    ours2 = jax.jit(transform(lambda a, b, c: hadamard(hadamard(a, b), c)))(*xs)
    assert_tree_allclose(ours2, plain, rtol=2e-6, atol=2e-6)


def test_integer_inputs_get_float0_cotangents():
    x = _rand((3,), jnp.float32)
    i = jnp.array([1, 2, 3], jnp.int32)
    out, vjp = jax.vjp(hadamard, x, i)
    out_ref, vjp_ref = jax.vjp(jnp.multiply, x, i)
    ct = jnp.ones_like(out)
    assert_tree_allclose(vjp(ct), vjp_ref(ct))
    assert vjp(ct)[1].dtype == jax.dtypes.float0
    # All-integer products carry no tangent, as jnp.multiply.
    _, t = jax.jvp(hadamard, (i, i), (np.zeros(3, jax.dtypes.float0),) * 2)
    assert t.dtype == jax.dtypes.float0
    # bool masks too.
    m = jnp.array([True, False, True])
    g = jax.grad(lambda x: hadamard(x, m).sum())(x)
    np.testing.assert_array_equal(g, np.array([1.0, 0.0, 1.0]))


def test_complex_vjp_is_a_transpose():
    a, b = _pair((4,), dtype=jnp.complex64)
    ct = _rand((4,), jnp.complex64, 7)
    ours = jax.vjp(hadamard, a, b)[1](ct)
    ref = jax.vjp(jnp.multiply, a, b)[1](ct)
    assert_tree_allclose(ours, ref)
    np.testing.assert_allclose(ours[0], ct * b, rtol=1e-6)  # no conjugate


def test_broadcast_gradients_come_back_in_input_shapes():
    a, b = _rand((4, 1, 3)), _rand((5, 1), seed=3)
    ga, gb = jax.grad(lambda a, b: jnp.sum(hadamard(a, b, broadcast=True) ** 2), argnums=(0, 1))(
        a, b
    )
    with jax.numpy_rank_promotion("allow"):  # the reference broadcasts implicitly
        ra, rb = jax.grad(lambda a, b: jnp.sum(jnp.multiply(a, b) ** 2), argnums=(0, 1))(a, b)
    assert ga.shape == a.shape and gb.shape == b.shape
    assert_tree_allclose((ga, gb), (ra, rb), rtol=1e-5, atol=1e-5)


def test_bf16_gradients_in_input_dtype_inside_scan():
    x = _rand((4,), jnp.bfloat16)

    def loss(x):
        def body(c, _):
            return hadamard(c, x).astype(jnp.bfloat16), None

        return jax.lax.scan(body, x, None, length=2)[0].astype(jnp.float32).sum()

    g = jax.jit(jax.grad(loss))(x)
    assert g.dtype == jnp.bfloat16


def test_hadamard_n_exact_gradients_with_zeros(x64):
    # Zeros in the inputs: a rule dividing by the product would give NaN or 0/0 here.
    xs = [
        jnp.array([0.0, 2.0, 0.0, 1.5]),
        jnp.array([3.0, 0.0, 0.0, -2.0]),
        jnp.array([5.0, 7.0, 4.0, 0.5]),
        jnp.array([0.0, 1.0, 2.0, 3.0]),
    ]
    grads = jax.grad(lambda *xs: hadamard_n(*xs).sum(), argnums=(0, 1, 2, 3))(*xs)
    stacked = np.stack([np.asarray(x) for x in xs])
    for i, g in enumerate(grads):
        expected = np.prod(np.delete(stacked, i, axis=0), axis=0)
        np.testing.assert_array_equal(np.asarray(g), expected)
    # Forward mode too.
    tangents = tuple(jnp.ones(4) for _ in xs)
    _, t = jax.jvp(hadamard_n, tuple(xs), tangents)
    expected = sum(np.prod(np.delete(stacked, i, axis=0), axis=0) for i in range(4))
    np.testing.assert_array_equal(np.asarray(t), expected)


def test_hadamard_n_costs_linear_multiplies():
    # The backward pass of an n-way product must be O(n) multiplies, not O(n^2).
    def count_muls(n):
        xs = [jnp.ones((8,)) for _ in range(n)]
        jaxpr = jax.make_jaxpr(
            jax.grad(lambda *xs: hadamard_n(*xs).sum(), argnums=tuple(range(n)))
        )(*xs)
        return str(jaxpr).count(" mul ")

    m8, m16, m32 = count_muls(8), count_muls(16), count_muls(32)
    assert m32 - m16 == 2 * (m16 - m8), (m8, m16, m32)  # linear growth
    assert m32 <= 6 * 32


# --- saved residuals ---------------------------------------------------------------------------


def test_saved_residuals_are_the_inputs(capsys):
    xs = [_rand((16,), seed=i) for i in range(5)]
    lines = saved_residuals(capsys, lambda *xs: hadamard_n(*xs).sum(), *xs)
    assert only_arguments_saved(lines) and len(lines) == 5, lines
    plain = saved_residuals(capsys, lambda *xs: _plain_n(*xs).sum(), *xs)
    assert len(plain) == 5 + 3, plain  # the plain chain also keeps n - 2 partial products
    lines = saved_residuals(
        capsys, lambda a, b: hadamard(a, b, broadcast=True).sum(), xs[0], xs[1][:1]
    )
    assert only_arguments_saved(lines) and len(lines) == 2, lines
    lines = saved_residuals(
        capsys,
        lambda a, b: hadamard_n(a, b, compute_dtype=jnp.float32).sum(),
        xs[0].astype(jnp.bfloat16),
        xs[1].astype(jnp.bfloat16),
    )
    assert only_arguments_saved(lines) and all("bf16" in line for line in lines), lines


# --- sharding ----------------------------------------------------------------------------------

_MESH_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from hadamard_jax import hadamard, hadamard_n

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, P("data", "model"))
    a = jax.device_put(jnp.arange(64.0).reshape(8, 8), sharding)
    b = jax.device_put(jnp.ones((8, 8)) * 2, sharding)
    COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
    for name, fn in [
        ("hadamard", jax.jit(hadamard)),
        ("hadamard_n", jax.jit(lambda a, b: hadamard_n(a, b, a))),
        ("vjp", jax.jit(lambda a, b: jax.vjp(hadamard, a, b)[1](a))),
        ("jvp", jax.jit(lambda a, b: jax.jvp(hadamard, (a, b), (b, a))[1])),
    ]:
        out = fn(a, b)
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            assert o.sharding.is_equivalent_to(sharding, 2), (name, o.sharding)
        hlo = fn.lower(a, b).compile().as_text()
        found = [c for c in COLLECTIVES if c in hlo]
        assert not found, (name, found)
    np.testing.assert_allclose(jax.jit(hadamard)(a, b), np.arange(64.0).reshape(8, 8) * 2)
    print("MESH OK")
    """
)


def test_jit_over_8_device_mesh():
    run_on_8_cpu_devices(_MESH_SCRIPT, "MESH OK")


# --- cost ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("broadcast", [False, True])
def test_compiled_cost_equals_multiply(broadcast):
    # Deterministic half of the performance claim (time is measured in the benchmarks): the
    # compiled program reads and writes no more bytes, and does no more flops, than jnp.multiply.
    a, b = _pair((256, 512))
    ours = jax.jit(lambda a, b: hadamard(a, b, broadcast=broadcast)).lower(a, b).compile()
    ref = jax.jit(jnp.multiply).lower(a, b).compile()
    ours_cost, ref_cost = ours.cost_analysis(), ref.cost_analysis()
    assert ours_cost["bytes accessed"] <= ref_cost["bytes accessed"], (ours_cost, ref_cost)
    assert ours_cost["flops"] <= ref_cost["flops"], (ours_cost, ref_cost)
    # The same for a training step's gradient.
    loss = lambda f: jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), argnums=(0, 1)))
    g_ours = loss(hadamard).lower(a, b).compile().cost_analysis()
    g_ref = loss(jnp.multiply).lower(a, b).compile().cost_analysis()
    assert g_ours["bytes accessed"] <= g_ref["bytes accessed"], (g_ours, g_ref)


# 0-d and 0-size shapes included.
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


# --- properties against NumPy (hypothesis) ---------------------------------------------------

DTYPE_DRAWS = st.sampled_from([np.float32, np.int32, np.bool_, np.complex64, np.float16])


def _values(dtype, shape):
    if dtype == np.bool_:
        return hnp.arrays(dtype, shape)
    if np.issubdtype(dtype, np.integer):
        return hnp.arrays(dtype, shape, elements=st.integers(-100, 100))
    if np.issubdtype(dtype, np.complexfloating):
        return hnp.arrays(dtype, shape, elements=st.complex_numbers(max_magnitude=10, width=64))
    return hnp.arrays(dtype, shape, elements=st.floats(-10, 10, width=16))


def _flush_atol(dtype, n):
    """Absolute error XLA's CPU flush of subnormals (FTZ/DAZ) can add to an ``n``-term product.

    NumPy keeps subnormals; XLA on CPU reads subnormal inputs and writes subnormal results as
    zero (``jnp.multiply`` does the same). With factors bounded by 10, that moves a product by at
    most ``tiny * 10**(n - 1)``. float16 products are computed in float32, where its subnormals
    are normal, so none are flushed.
    """
    if dtype in (np.float32, np.complex64):
        return float(np.finfo(dtype).tiny) * 10.0 ** (n - 1)
    return 0.0


@st.composite
def equal_shape_arrays(draw, n_min=2, n_max=4):
    shape = draw(SHAPES)
    dtype = draw(DTYPE_DRAWS)
    n = draw(st.integers(n_min, n_max))
    return [draw(_values(dtype, shape)) for _ in range(n)]


@given(equal_shape_arrays(n_min=2, n_max=2))
def test_hadamard_equals_numpy(arrays):
    a, b = arrays
    out = hadamard(a, b)
    expected = np.multiply(a, b)
    assert out.shape == expected.shape
    assert out.dtype == jnp.multiply(a, b).dtype
    # Bit-exact against XLA's multiply; within an ulp of NumPy (complex products may use FMA).
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.multiply(a, b)))
    atol = _flush_atol(a.dtype.type, 2)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=atol)


@given(equal_shape_arrays(n_min=1, n_max=4))
def test_hadamard_n_equals_numpy(arrays):
    out = hadamard_n(*arrays)
    expected = arrays[0]
    for x in arrays[1:]:
        expected = np.multiply(expected, x)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(
        np.asarray(out),
        expected,
        rtol=2e-3 if out.dtype == jnp.float16 else 1e-6,
        atol=_flush_atol(arrays[0].dtype.type, len(arrays)),
    )
    # Bit-exact against the same product in jax.numpy (the same flush included).
    reference = arrays[0]
    for x in arrays[1:]:
        reference = jnp.multiply(reference, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(reference))


@given(
    hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3), st.data()
)
def test_broadcast_equals_numpy_with_gradients_in_input_shapes(shapes, data):
    sa, sb = shapes.input_shapes
    a = data.draw(_values(np.float32, sa))
    b = data.draw(_values(np.float32, sb))
    out = hadamard(a, b, broadcast=True)
    np.testing.assert_array_equal(np.asarray(out), np.multiply(a, b))
    ga, gb = jax.grad(lambda a, b: hadamard(a, b, broadcast=True).sum(), argnums=(0, 1))(a, b)
    assert ga.shape == a.shape and gb.shape == b.shape
    # d/da sum(a * b) = b, summed back over the axes a was broadcast along.
    full = shapes.result_shape
    np.testing.assert_allclose(ga, _unbroadcast(np.broadcast_to(b, full), sa), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, _unbroadcast(np.broadcast_to(a, full), sb), rtol=1e-5, atol=1e-5)


def _unbroadcast(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, g.shape)) if s == 1 and t != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


@given(
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4),
)
def test_unequal_shapes_raise_without_broadcast(sa, sb):
    if sa == sb:
        return
    try:
        hadamard(np.ones(sa, np.float32), np.ones(sb, np.float32))
    except ValueError as e:
        assert str(sa) in str(e) and str(sb) in str(e) and "broadcast=True" in str(e)
    else:
        raise AssertionError("unequal shapes did not raise")


@given(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=6), st.data())
def test_hadamard_n_gradient_is_product_of_others(values, data):
    # One entry per array: the gradient wrt array i is the product of all other entries, computed
    # here in float64 NumPy without any division (zeros included via the draw).
    n = len(values)
    xs = [np.array([v], np.float32) for v in values]
    if data.draw(st.booleans()):
        xs[data.draw(st.integers(0, n - 1))] = np.zeros(1, np.float32)
    grads = jax.grad(lambda *xs: hadamard_n(*xs).sum(), argnums=tuple(range(n)))(*xs)
    stacked = np.stack([x.astype(np.float64) for x in xs])
    for i, g in enumerate(grads):
        expected = np.prod(np.delete(stacked, i, axis=0), axis=0)
        np.testing.assert_allclose(np.asarray(g, np.float64), expected, rtol=1e-5, atol=1e-30)
