"""Tests of apply_mask, the attention-mask makers and combine_masks (bit-packing:
``test_mask_packing.py``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hadamard_jax as hj
from hadamard_jax import (
    apply_mask,
    attention_mask,
    causal_mask,
    combine_masks,
    padding_mask,
)
from tests.utils import (
    assert_tree_allclose,
    bernoulli,
    check_grads,
    normal,
    only_arguments_saved,
    saved_residuals,
)


def _bits(shape, seed=0, dtype=jnp.bool_):
    return bernoulli(seed, 0.5, shape, dtype)


def _plain(x, mask, fill=0.0):
    keep = jnp.broadcast_to(mask != 0, x.shape)
    return jnp.where(keep, x, jnp.asarray(fill, x.dtype))


# --- apply_mask: values ------------------------------------------------------------------------


_DTYPE_PAIRS = [
    (jnp.float32, jnp.bool_),
    (jnp.float32, jnp.int32),
    (jnp.float32, jnp.float32),
    (jnp.float32, jnp.bfloat16),
    (jnp.bfloat16, jnp.uint8),
    (jnp.float16, jnp.bool_),
    (jnp.complex64, jnp.float32),
    (jnp.int32, jnp.bool_),
    (jnp.bool_, jnp.int32),
]


@pytest.mark.parametrize("x_dtype,mask_dtype", _DTYPE_PAIRS, ids=str)
def test_apply_mask_values_and_dtypes(x_dtype, mask_dtype):
    x = normal(1, (3, 4), x_dtype, scale=4.0)
    mask = _bits((3, 4), 2, mask_dtype)
    out = jax.jit(apply_mask)(x, mask)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_plain(x, mask)))


def test_apply_mask_float_mask_nonzero_keeps():
    x = jnp.arange(1.0, 5.0)
    mask = jnp.array([0.5, 0.0, -2.0, jnp.nan])
    np.testing.assert_array_equal(apply_mask(x, mask, fill=-1.0), [1.0, -1.0, 3.0, 4.0])


def test_apply_mask_fill_is_exact_over_inf_and_nan():
    x = jnp.array([1.0, jnp.inf, -jnp.inf, jnp.nan, 5.0])
    mask = jnp.array([True, False, False, False, True])
    for fill in (0.0, -1e9, -jnp.inf, 3):
        out = np.asarray(apply_mask(x, mask, fill=fill))
        np.testing.assert_array_equal(out, [1.0, fill, fill, fill, 5.0])


@pytest.mark.parametrize("mask_shape", [(4,), (1, 4), (3, 1), (1, 1), (), (2, 1, 4)], ids=str)
def test_apply_mask_broadcasts_mask_only(mask_shape):
    x = normal(0, (2, 3, 4))
    mask = _bits(mask_shape, 3)
    out = apply_mask(x, mask, fill=7.0)
    np.testing.assert_array_equal(out, np.where(np.broadcast_to(mask, x.shape), x, 7.0))


def test_apply_mask_errors():
    with pytest.raises(ValueError, match=r"apply_mask: mask\.shape=\(2, 3\).*x\.shape=\(3,\)"):
        apply_mask(jnp.ones(3), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"mask\.shape=\(4,\)"):
        apply_mask(jnp.ones((2, 3)), jnp.ones(4))
    with pytest.raises(ValueError, match="fill must be a scalar"):
        apply_mask(jnp.ones(3), jnp.ones(3), fill=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"fill=-inf"):
        apply_mask(jnp.ones(3, jnp.int32), jnp.ones(3), fill=-jnp.inf)
    with pytest.raises(ValueError, match="complex fill"):
        apply_mask(jnp.ones(3), jnp.ones(3), fill=1j)
    with pytest.raises(TypeError, match="argument 'mask'"):
        apply_mask(jnp.ones(3), None)
    with pytest.raises(ValueError, match="must broadcast"):
        jax.jit(apply_mask).lower(jnp.ones(3), jnp.ones((2, 3)))


# --- apply_mask: derivatives ---------------------------------------------------------------------


def test_apply_mask_grad_exactly_zero_and_finite_at_masked_inf_nan():
    x = jnp.array([1.0, jnp.inf, -jnp.inf, jnp.nan, 5.0])
    mask = jnp.array([1, 0, 0, 0, 1])
    expected = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    loss = lambda x: jnp.sum(apply_mask(x, mask) ** 2 / 2)  # noqa: E731
    np.testing.assert_array_equal(jax.grad(loss)(x), expected * np.nan_to_num(np.asarray(x)))
    jac = jax.jacfwd(lambda x: apply_mask(x, mask))(x)
    np.testing.assert_array_equal(jac, np.diag(expected))
    np.testing.assert_array_equal(jax.jacrev(lambda x: apply_mask(x, mask))(x), np.diag(expected))
    # The x * mask composition gives NaN where ours gives exact zeros.
    assert np.isnan(np.asarray(jax.grad(lambda x: jnp.sum((x * mask) ** 2 / 2))(x))).any()


def test_apply_mask_no_gradient_into_mask_and_fill_gradient():
    x, mask = normal(0, (6,)), jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    ct = jnp.arange(1.0, 7.0)
    gx, gm, gf = jax.grad(lambda x, m, f: jnp.sum(ct * apply_mask(x, m, fill=f)), (0, 1, 2))(
        x, mask, 2.0
    )
    np.testing.assert_array_equal(gx, ct * mask)
    np.testing.assert_array_equal(gm, np.zeros(6))
    assert gf == ct[1] + ct[3] + ct[4]
    _, vjp = jax.vjp(apply_mask, x, mask > 0)
    assert vjp(ct)[1].dtype == jax.dtypes.float0


def test_apply_mask_check_grads(x64):
    x = normal(0, (3, 4), jnp.float64)
    mask = _bits((1, 4))
    check_grads(lambda x, f: apply_mask(x, mask, fill=f), (x, 0.5), order=2, modes=["fwd", "rev"])
    xc = (x + 1j * x[::-1]).astype(jnp.complex128)
    check_grads(lambda x: apply_mask(x, mask[0]), (xc,), order=2, modes=["fwd", "rev"])


def test_apply_mask_saves_only_the_mask(capsys):
    x, mask = normal(0, (8, 8)), _bits((8, 8))
    f = jax.jit(lambda x, m: jnp.sum(apply_mask(x, m, fill=1.0) * 3.0))
    lines = saved_residuals(capsys, f, x, mask.astype(jnp.float32))
    assert lines == ["f32[8,8] from the argument m"] and only_arguments_saved(lines), lines
    lines = saved_residuals(capsys, lambda x, m: jnp.sum(apply_mask(x, m)), x, mask)
    assert lines == ["bool[8,8] from the argument m"], lines


def test_apply_mask_bf16_cotangent_dtype():
    x = normal(0, (4,), jnp.bfloat16)
    g = jax.grad(lambda x: jnp.sum(apply_mask(x, jnp.array([1, 0, 1, 0]))).astype(jnp.float32))(x)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g, np.float32), [1, 0, 1, 0])


TRANSFORMS = {
    "grad": lambda f: jax.grad(lambda x, m: jnp.sum(jnp.sin(f(x, m)))),
    "jvp": lambda f: lambda x, m: jax.jvp(lambda x: f(x, m), (x,), (jnp.cos(x),)),
    "jacfwd": lambda f: jax.jacfwd(f),
    "jacrev": lambda f: jax.jacrev(f),
    "hessian": lambda f: jax.hessian(lambda x, m: jnp.sum(jnp.sin(f(x, m)))),
    "hvp_fwd_over_rev": lambda f: (
        lambda x, m: jax.jvp(
            jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, m)))), (x,), (jnp.ones_like(x),)
        )
    ),
    "checkpoint": lambda f: jax.grad(lambda x, m: jnp.sum(jax.checkpoint(f)(x, m) ** 2)),
    "vmap": lambda f: jax.vmap(f),
    "vmap_of_grad": lambda f: jax.vmap(jax.grad(lambda x, m: jnp.sum(f(x, m) ** 3))),
    "scan": lambda f: (
        lambda x, m: jax.grad(
            lambda c: jnp.sum(
                jax.lax.scan(lambda c, _: (jnp.tanh(f(c, m)) * 2, None), c, None, 3)[0]
            )
        )(x)
    ),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_apply_mask_transforms_agree_with_where(name):
    x, mask = normal(0, (3, 4)), _bits((3, 4), 5, jnp.int32)
    ours = jax.jit(TRANSFORMS[name](lambda x, m: apply_mask(x, m, fill=0.5)))(x, mask)
    plain = jax.jit(TRANSFORMS[name](lambda x, m: _plain(x, m, 0.5)))(x, mask)
    assert_tree_allclose(ours, plain, rtol=1e-6, atol=1e-6)


# --- combine_masks -----------------------------------------------------------------------------


@settings(max_examples=10)
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    present=st.lists(st.booleans(), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["bool", "int", "float01", "float"]),
    dtype=st.sampled_from([None, jnp.bool_, jnp.int32, jnp.bfloat16]),
)
def test_combine_masks_equals_flax(shape, present, seed, kind, dtype):
    rng = np.random.default_rng(seed)
    masks = []
    for _i, p in enumerate(present):
        s = [d if rng.random() < 0.7 else 1 for d in shape]  # same rank, broadcastable
        m = rng.random(s) < 0.6
        m = {
            "bool": m,
            "int": m.astype(np.int32),
            "float01": m.astype(np.float32),
            "float": m * rng.normal(size=s).astype(np.float32),
        }[kind]
        masks.append(jnp.asarray(m) if p else None)
    kwargs = {} if dtype is None else {"dtype": dtype}
    ours, theirs = combine_masks(*masks, **kwargs), nn.combine_masks(*masks, **kwargs)
    if theirs is None:
        assert ours is None
        return
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))


def test_combine_masks_none_and_errors():
    assert combine_masks() is None and combine_masks(None, None) is None
    m = jnp.array([1, 0, 1])
    assert combine_masks(None, m, None).dtype == jnp.float32
    match = r"same rank.*masks\[0\]\.shape=\(3,\).*masks\[2\]\.shape=\(1, 3\)"
    with pytest.raises(ValueError, match=match):
        combine_masks(m, None, m[None])
    with pytest.raises(ValueError, match=r"do not broadcast.*\(3,\).*\(2,\)"):
        combine_masks(m, jnp.ones(2))
    with pytest.raises(TypeError, match="dtype='nope'"):
        combine_masks(m, dtype="nope")


# --- causal / padding / attention masks --------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 5])
@pytest.mark.parametrize("extra", [0, 2])
@pytest.mark.parametrize("dtype", [None, jnp.bool_], ids=str)
def test_causal_mask_equals_flax(length, extra, dtype):
    kwargs = {} if dtype is None else {"dtype": dtype}
    ours = causal_mask(length, extra_batch_dims=extra, **kwargs)
    theirs = nn.make_causal_mask(jnp.ones((length,)), extra_batch_dims=extra, **kwargs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_padding_mask_values():
    lengths = jnp.array([[0, 3], [5, 7], [-1, 2]])
    out = padding_mask(lengths, 5)
    expected = np.arange(5) < np.asarray(lengths)[..., None]
    assert out.shape == (3, 2, 5) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(padding_mask(2, 3, dtype=jnp.bool_), [True, True, False])
    # Lengths are traced: one compilation serves every length.
    f = jax.jit(lambda n: padding_mask(n, 4))
    np.testing.assert_array_equal(f(jnp.array([1, 4])), [[1, 0, 0, 0], [1, 1, 1, 1]])


@settings(max_examples=6)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    q=st.integers(1, 4),
    k=st.integers(1, 4),
    extra=st.integers(0, 1),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from([np.bool_, np.int32, np.float32]),
)
def test_attention_mask_equals_flax(batch, q, k, extra, seed, kind):
    rng = np.random.default_rng(seed)
    qm = jnp.asarray((rng.random(batch + [q]) < 0.6).astype(kind))
    km = jnp.asarray((rng.random(batch + [k]) < 0.6).astype(kind))
    ours = attention_mask(qm, km, extra_batch_dims=extra)
    theirs = nn.make_attention_mask(qm, km, extra_batch_dims=extra)
    assert ours.shape == theirs.shape == tuple([1] * extra + batch + [1, q, k])
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_attention_mask_broadcasts_batch_and_combines_with_causal():
    lengths = jnp.array([2, 4])
    pad = padding_mask(lengths, 4)
    mask = combine_masks(attention_mask(pad, pad), causal_mask(4, extra_batch_dims=1))
    flax_mask = nn.combine_masks(
        nn.make_attention_mask(pad, pad), nn.make_causal_mask(jnp.ones((2, 4)))
    )
    np.testing.assert_array_equal(mask, flax_mask)
    out = attention_mask(jnp.ones((2, 1, 3)), jnp.ones((1, 5, 4)))
    assert out.shape == (2, 5, 1, 3, 4)
    with pytest.raises(ValueError, match=r"batch axes.*\(2, 3\).*\(4, 3\)"):
        attention_mask(jnp.ones((2, 3)), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="length axis"):
        attention_mask(jnp.ones(()), jnp.ones(3))


def test_mask_maker_errors():
    with pytest.raises(ValueError, match="length=-1"):
        causal_mask(-1)
    with pytest.raises(TypeError, match="length must be a static Python int"):
        causal_mask(jnp.array(3))
    with pytest.raises(ValueError, match="max_length=-2"):
        padding_mask(jnp.array([1]), -2)
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        padding_mask(jnp.array([1.0]), 3)
    with pytest.raises(ValueError, match="extra_batch_dims=-1"):
        attention_mask(jnp.ones(2), jnp.ones(2), extra_batch_dims=-1)


def test_mask_makers_under_jit_and_vmap():
    lengths = jnp.array([1, 3, 2])
    pads = jax.jit(jax.vmap(lambda n: padding_mask(n, 3)))(lengths)
    np.testing.assert_array_equal(pads, padding_mask(lengths, 3))
    att = jax.jit(jax.vmap(attention_mask))(pads, pads)
    np.testing.assert_array_equal(att, attention_mask(pads, pads))
    comb = jax.jit(jax.vmap(lambda a: combine_masks(a, causal_mask(3))))(att)
    np.testing.assert_array_equal(comb, combine_masks(att, causal_mask(3, extra_batch_dims=1)))
    np.testing.assert_array_equal(jax.jit(lambda: causal_mask(3))(), causal_mask(3))


@pytest.mark.parametrize(
    "dtype, lengths, max_length",
    [
        (jnp.uint8, [3, 200, 255], 300),
        (jnp.int8, [-3, 100, 127], 200),
        (jnp.int16, [0, 40000 - 2**16, 5], 70000),
        (jnp.uint32, [2**32 - 1, 0, 7], 9),
    ],
)
def test_padding_mask_narrow_integer_lengths(dtype, lengths, max_length):
    lengths = np.asarray(lengths).astype(dtype)
    mask = np.asarray(hj.padding_mask(jnp.asarray(lengths), max_length))
    expected = np.clip(lengths.astype(np.int64), 0, max_length)
    np.testing.assert_array_equal(mask.sum(-1), expected)
    np.testing.assert_array_equal(mask, np.arange(max_length) < lengths.astype(np.int64)[:, None])


@pytest.mark.parametrize(
    "dtype, fill",
    [
        (jnp.int8, 300),
        (jnp.int8, -129),
        (jnp.uint8, -1),
        (jnp.int32, 2.5),
        (jnp.int32, jnp.array(2.5)),
        (jnp.int32, np.float32(1e10)),
        (jnp.bool_, 2),
        (jnp.float16, 1e6),
        (jnp.bfloat16, -1e39),
        (jnp.float32, 1e39),
    ],
)
def test_apply_mask_unrepresentable_fill_is_an_error(dtype, fill):
    x = jnp.ones(3, dtype)
    with pytest.raises(ValueError, match="fill=.*dtype"):
        hj.apply_mask(x, jnp.array([1, 0, 1]), fill=fill)


@pytest.mark.parametrize(
    "dtype, fill, expected",
    [
        (jnp.int8, -128, -128),
        (jnp.uint8, 255.0, 255),
        (jnp.int32, jnp.array(2.0), 2),
        (jnp.bool_, True, True),
        (jnp.float16, -jnp.inf, -np.inf),
        (jnp.float32, jnp.nan, np.nan),
    ],
)
def test_apply_mask_representable_fill(dtype, fill, expected):
    out = hj.apply_mask(jnp.zeros(2, dtype), jnp.array([True, False]), fill=fill)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out)[1], np.asarray(expected, dtype))


def test_apply_mask_traced_fill():
    mask = jnp.array([True, False])
    out = jax.jit(lambda f: hj.apply_mask(jnp.ones(2, jnp.int8), mask, fill=f))(5)
    np.testing.assert_array_equal(out, [1, 5])
    with pytest.raises(TypeError, match="traced fill of dtype float32"):
        jax.jit(lambda f: hj.apply_mask(jnp.ones(2, jnp.int8), mask, fill=f))(2.0)
