"""Property tests of the core products against NumPy (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hadamard_jax import hadamard, hadamard_n

# 0-d and 0-size shapes included.
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
DTYPES = st.sampled_from([np.float32, np.int32, np.bool_, np.complex64, np.float16])


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
    dtype = draw(DTYPES)
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
