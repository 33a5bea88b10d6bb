"""The mask makers (``hadamard_jax._src.sparsity.masks``): magnitude, global magnitude, random,
N:M, top-k, block, channel and saliency masks, and leading stack axes (``batch_dims``) on every
maker: exact counts, the tie rule, group structure, NumPy references, errors naming arguments,
jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hadamard_jax as hj
from hadamard_jax import (
    block_mask,
    channel_mask,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
    random_mask,
    saliency_mask,
    topk_mask,
)
from tests.utils import normal

KEY = jax.random.key(0)


def _keep_largest_ref(score: np.ndarray, k: int) -> np.ndarray:
    """NumPy reference: keep the k largest of a 1-D score, smaller index first among ties,
    NaN above everything."""
    score = np.asarray(score, np.float64)
    order = sorted(
        range(score.size),
        key=lambda i: (not np.isnan(score[i]), -np.nan_to_num(score[i], nan=0.0), i),
    )
    keep = np.zeros(score.size, bool)
    keep[order[:k]] = True
    return keep


def _magnitude_ref(x, sparsity):
    x = np.asarray(x)
    n_prune = round(sparsity * x.size)
    keep = _keep_largest_ref(np.abs(x.astype(np.float64)).ravel(), x.size - n_prune)
    return keep.reshape(x.shape)


# Small integers make many ties.
_values = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-10, 10, allow_nan=False, width=32),
)


@st.composite
def _arrays(draw, max_dims=3, max_side=5):
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=1, max_size=max_dims)))
    size = int(np.prod(shape))
    flat = draw(st.lists(_values, min_size=size, max_size=size))
    return np.asarray(flat, np.float32).reshape(shape)


@settings(max_examples=20)
@given(x=_arrays(), sparsity=st.floats(0, 1))
def test_magnitude_mask_exact_count_and_tie_rule(x, sparsity):
    out = magnitude_mask(jnp.asarray(x), sparsity)
    assert out.dtype == jnp.bool_ and out.shape == x.shape
    assert int(out.sum()) == x.size - round(sparsity * x.size)
    np.testing.assert_array_equal(out, _magnitude_ref(x, sparsity))


def test_magnitude_mask_ties_keep_earlier_and_special_values():
    x = jnp.array([1.0, -1.0, 1.0, 0.0, -0.0, 1.0])
    # Prune 3: both zeros, then the last of the tied ones.
    np.testing.assert_array_equal(magnitude_mask(x, 0.5), [True, True, True, False, False, False])
    x = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 5.0])
    np.testing.assert_array_equal(magnitude_mask(x, 0.5), [True, True, False, False])
    np.testing.assert_array_equal(magnitude_mask(x, 0.75), [True, False, False, False])


@pytest.mark.parametrize(
    "dtype",
    [jnp.int8, jnp.uint8, jnp.int32, jnp.bool_, jnp.bfloat16, jnp.float16, jnp.complex64],
    ids=str,
)
def test_magnitude_mask_dtypes(dtype):
    rng = np.random.default_rng(0)
    if dtype == jnp.int8:
        x = np.array([-128, 127, 3, -3, 0, 1, -1, 100], np.int8)  # |-128| must rank first
    elif dtype == jnp.complex64:
        x = (rng.normal(size=8) + 1j * rng.normal(size=8)).astype(np.complex64)
    else:
        x = np.asarray(jnp.asarray(rng.integers(-4, 5, size=8)).astype(dtype))
    out = magnitude_mask(jnp.asarray(x), 0.5)
    assert int(out.sum()) == 4
    np.testing.assert_array_equal(out, _magnitude_ref(np.abs(x.astype(np.complex128)), 0.5))


def test_magnitude_mask_jit_and_vmap():
    x = normal(0, (4, 3, 5))
    batched = jax.jit(jax.vmap(lambda x: magnitude_mask(x, 0.4)))(x)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], _magnitude_ref(x[i], 0.4))
    assert (batched.sum(axis=(1, 2)) == 9).all()


@settings(max_examples=10)
@given(
    xs=st.lists(_arrays(max_dims=2, max_side=4), min_size=1, max_size=3),
    sparsity=st.floats(0, 1),
)
def test_global_magnitude_masks_equal_magnitude_of_concatenation(xs, sparsity):
    tree = {"a": [jnp.asarray(x) for x in xs], "none": None}
    masks = global_magnitude_masks(tree, sparsity)
    assert masks["none"] is None
    assert jax.tree.structure(masks) == jax.tree.structure(tree)
    flat = np.concatenate([x.ravel() for x in xs])
    expected = _magnitude_ref(flat, sparsity)
    got = np.concatenate([np.asarray(m).ravel() for m in masks["a"]])
    np.testing.assert_array_equal(got, expected)
    for m, x in zip(masks["a"], xs):
        assert m.shape == x.shape and m.dtype == jnp.bool_


def test_global_magnitude_masks_mixed_dtypes_jit_and_empty():
    tree = (jnp.array([3, -1], jnp.int32), None, jnp.array([[0.5, 2.5]], jnp.bfloat16))
    masks = jax.jit(lambda t: global_magnitude_masks(t, 0.5))(tree)
    np.testing.assert_array_equal(masks[0], [True, False])
    assert masks[1] is None
    np.testing.assert_array_equal(masks[2], [[False, True]])
    batch = {"w": normal(0, (3, 4, 2)), "b": normal(0, (3, 2))}
    per_example = jax.vmap(lambda t: global_magnitude_masks(t, 0.5))(batch)
    for i in range(3):
        one = global_magnitude_masks({"w": batch["w"][i], "b": batch["b"][i]}, 0.5)
        np.testing.assert_array_equal(per_example["w"][i], one["w"])
        np.testing.assert_array_equal(per_example["b"][i], one["b"])
        assert int(per_example["w"][i].sum() + per_example["b"][i].sum()) == 5
    assert global_magnitude_masks({}, 0.3) == {}
    assert global_magnitude_masks({"x": None}, 0.3) == {"x": None}


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 1.0])
def test_random_mask_exact_count_deterministic_jit_vmap(sparsity):
    shape = (5, 7)
    out = random_mask(KEY, shape, sparsity)
    assert out.shape == shape and out.dtype == jnp.bool_
    assert int(out.sum()) == 35 - round(sparsity * 35)
    np.testing.assert_array_equal(out, random_mask(KEY, shape, sparsity))
    np.testing.assert_array_equal(out, jax.jit(lambda k: random_mask(k, shape, sparsity))(KEY))
    keys = jax.random.split(jax.random.key(1), 300)
    batch = jax.jit(jax.vmap(lambda k: random_mask(k, shape, sparsity)))(keys)
    assert (batch.sum(axis=(1, 2)) == 35 - round(sparsity * 35)).all()
    if 0 < sparsity < 1:
        assert len({np.asarray(b).tobytes() for b in batch}) > 250  # keys matter
        # Every position is kept with probability 1 - n_prune / size (uniform subsets).
        freq = np.asarray(batch.mean(axis=0))
        p = 1 - round(sparsity * 35) / 35
        assert np.abs(freq - p).max() < 5 * np.sqrt(p * (1 - p) / 300)
    legacy = random_mask(jax.random.PRNGKey(0), 6, sparsity)
    assert legacy.shape == (6,) and int(legacy.sum()) == 6 - round(sparsity * 6)


def _nm_ref(x, n, m, axis):
    moved = np.moveaxis(np.asarray(x), axis, -1)
    groups = moved.reshape(-1, m)
    keep = np.stack([_keep_largest_ref(np.abs(g.astype(np.float64)), n) for g in groups])
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


@st.composite
def _nm_case(draw):
    m = draw(st.integers(1, 5))
    n = draw(st.integers(0, m))
    ndim = draw(st.integers(1, 3))
    axis = draw(st.integers(-ndim, ndim - 1))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[axis] = m * draw(st.integers(1, 3))
    size = int(np.prod(shape))
    flat = draw(st.lists(_values, min_size=size, max_size=size))
    return np.asarray(flat, np.float32).reshape(shape), n, m, axis


@settings(max_examples=20)
@given(case=_nm_case())
def test_nm_mask_group_structure(case):
    x, n, m, axis = case
    out = nm_mask(jnp.asarray(x), n, m, axis=axis)
    assert out.shape == x.shape and out.dtype == jnp.bool_
    groups = np.moveaxis(np.asarray(out), axis, -1).reshape(-1, m)
    assert (groups.sum(axis=1) == n).all()
    np.testing.assert_array_equal(out, _nm_ref(x, n, m, axis))


def test_nm_mask_2_4_jit_vmap():
    w = normal(0, (3, 8, 16))
    out = jax.jit(jax.vmap(lambda w: nm_mask(w, 2, 4)))(w)
    np.testing.assert_array_equal(out, nm_mask(w, 2, 4))
    np.testing.assert_array_equal(out, _nm_ref(w, 2, 4, -2))  # the input axis (the default)
    kept = np.where(out, np.abs(np.asarray(w)), np.inf)
    kept = np.moveaxis(kept, -2, -1).reshape(-1, 4).min(axis=1)
    dropped = np.where(out, -np.inf, np.abs(np.asarray(w)))
    dropped = np.moveaxis(dropped, -2, -1).reshape(-1, 4).max(axis=1)
    assert (kept >= dropped).all()  # the kept pair dominates in every group
    out1 = nm_mask(w, 1, 2, axis=1)
    assert (np.asarray(out1).reshape(3, 4, 2, 16).sum(axis=2) == 1).all()


@settings(max_examples=15)
@given(x=_arrays(), data=st.data())
def test_topk_mask_matches_reference_and_lax_top_k(x, data):
    k = data.draw(st.integers(0, x.size))
    out = topk_mask(jnp.asarray(x), k)
    assert out.shape == x.shape and int(out.sum()) == k
    np.testing.assert_array_equal(out.ravel(), _keep_largest_ref(x.ravel(), k))
    if k > 0:
        # lax.top_k: lower index first on ties (it orders -0.0 below 0.0; we treat them equal).
        _, idx = jax.lax.top_k(jnp.asarray(x + np.float32(0.0)).ravel(), k)
        expected = np.zeros(x.size, bool)
        expected[np.asarray(idx)] = True
        np.testing.assert_array_equal(out.ravel(), expected)


def test_topk_mask_axis_ints_jit_vmap():
    s = jnp.array([[1, 5, 5, 2], [0, 0, 0, 0], [-1, -2, 7, 7]], jnp.int32)
    np.testing.assert_array_equal(
        topk_mask(s, 2, axis=1),
        [[False, True, True, False], [True, True, False, False], [False, False, True, True]],
    )
    np.testing.assert_array_equal(
        topk_mask(s, 1, axis=0), [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]
    )
    x = normal(0, (5, 6))
    batched = jax.jit(jax.vmap(lambda r: topk_mask(r, 3)))(x)
    np.testing.assert_array_equal(batched, topk_mask(x, 3, axis=-1))
    np.testing.assert_array_equal(topk_mask(jnp.array([1.0, jnp.nan, jnp.inf]), 1), [0, 1, 0])


def test_errors_name_argument_and_value():
    x = jnp.ones((2, 4))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"magnitude_mask: sparsity must be in \[0, 1\]"):
            magnitude_mask(x, bad)
        with pytest.raises(ValueError, match=r"random_mask: sparsity"):
            random_mask(KEY, (3,), bad)
        with pytest.raises(ValueError, match=r"global_magnitude_masks: sparsity"):
            global_magnitude_masks([x], bad)
    with pytest.raises(ValueError, match=r"sparsity=1.5"):
        magnitude_mask(x, 1.5)
    with pytest.raises(TypeError, match="sparsity must be a static"):
        jax.jit(lambda s: magnitude_mask(x, s))(0.5)
    with pytest.raises(ValueError, match=r"nm_mask: n must be <= m, got n=3 and m=2"):
        nm_mask(x, 3, 2)
    with pytest.raises(ValueError, match=r"m=3 must divide.*x\.shape=\(2, 4\)"):
        nm_mask(x, 1, 3)
    with pytest.raises(ValueError, match=r"nm_mask: m must be >= 1, got m=0"):
        nm_mask(x, 0, 0)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        nm_mask(x, 1, 2, axis=2)
    with pytest.raises(ValueError, match=r"topk_mask: k must be in \[0, 8\], got k=9"):
        topk_mask(x, 9)
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\], got k=-1"):
        topk_mask(x, -1, axis=1)
    with pytest.raises(TypeError, match="k must be a static Python int"):
        topk_mask(x, 2.0)
    with pytest.raises(TypeError, match="must be real"):
        topk_mask(jnp.ones(3, jnp.complex64), 1)
    with pytest.raises(ValueError, match=r"shape\[0\]"):
        random_mask(KEY, (-1, 2), 0.5)


@pytest.mark.parametrize("jit", [False, True])
def test_negative_zero_ties_with_zero_in_index_order(jit):
    # Was: under jit XLA folded the ``x + 0.0`` that turned -0.0 into 0.0, so -0.0 ranked
    # below 0.0 and topk_mask kept index 3 before index 2 (found by hypothesis).
    x = jnp.array([0.0, 0.0, -0.0, 0.0, -1.0, -0.0], jnp.float32)
    fn = jax.jit(topk_mask, static_argnums=1) if jit else topk_mask
    np.testing.assert_array_equal(fn(x, 3), [True, True, True, False, False, False])
    np.testing.assert_array_equal(fn(x, 5), [True, True, True, True, False, True])


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_subnormals_rank_above_zero(jit, dtype):
    # Was: -0.0 was canonicalised by ``where(x == 0, 0, x)``, and XLA's CPU compare treats
    # subnormals as zero, so 1e-45 tied with 0.0 and the first index won (found by hypothesis).
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    x = jnp.array([0.0, tiny, -0.0, -tiny, 2 * tiny], dtype)
    wrap = (lambda f, *s: jax.jit(f, static_argnums=s)) if jit else (lambda f, *s: f)
    np.testing.assert_array_equal(wrap(topk_mask, 1)(x, 2), [False, True, False, False, True])
    np.testing.assert_array_equal(wrap(topk_mask, 1)(x, 4), [True, True, True, False, True])
    # |x| ranks: 2*tiny, then tiny and -tiny (index order), then the zeros.
    np.testing.assert_array_equal(wrap(magnitude_mask, 1)(x, 0.4), [False, True, False, True, True])
    pairs = jnp.array([0.0, tiny, -tiny, -0.0], dtype)
    np.testing.assert_array_equal(wrap(nm_mask, 1, 2)(pairs, 1, 2), [False, True, True, False])


def _keep_ref(score, k):
    """Keep the k largest of a 1-D score, smaller index first among ties."""
    order = sorted(range(score.size), key=lambda i: (-score[i], i))
    keep = np.zeros(score.size, bool)
    keep[order[:k]] = True
    return keep


def _block_ref(x, s, bs, pool):
    r, c = x.shape
    tiles = np.abs(x).reshape(r // bs[0], bs[0], c // bs[1], bs[1])
    score = (tiles.mean((1, 3)) if pool == "mean" else tiles.max((1, 3))).ravel()
    nb = score.size
    keep = _keep_ref(score, nb - round(s * nb)).reshape(r // bs[0], c // bs[1])
    return np.repeat(np.repeat(keep, bs[0], 0), bs[1], 1)


@pytest.mark.parametrize("pool", ["mean", "max"])
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.6, 1.0])
def test_block_mask_matches_reference_exact_count(pool, sparsity):
    x = np.round(np.random.default_rng(0).normal(size=(8, 12)), 1).astype(np.float32)
    x[:2, :3] = 0.0  # a tied all-zero block pair
    x[2:4, :3] = 0.0
    out = np.asarray(block_mask(jnp.asarray(x), sparsity, (2, 3), pool=pool))
    np.testing.assert_array_equal(out, _block_ref(x, sparsity, (2, 3), pool))
    n_blocks = 16
    assert out.sum() == (n_blocks - round(sparsity * n_blocks)) * 6


def test_block_mask_errors_name_both_shapes():
    x = jnp.ones((6, 8))
    with pytest.raises(
        ValueError, match=r"x.shape=\(6, 8\) is not divisible by block_shape=\(4, 4\)"
    ):
        block_mask(x, 0.5, (4, 4))
    with pytest.raises(ValueError, match="one entry per layer axis"):
        block_mask(x, 0.5, (2,))
    with pytest.raises(ValueError, match="unknown pool"):
        block_mask(x, 0.5, (2, 2), pool="min")
    with pytest.raises(ValueError, match="block_mask: sparsity"):
        block_mask(x, 1.5, (2, 2))
    with pytest.raises(TypeError, match="block_shape"):
        block_mask(x, 0.5, "2x2")


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_channel_mask_reference(norm, axis):
    x = np.random.default_rng(1).normal(size=(6, 10)).astype(np.float32)
    out = np.asarray(channel_mask(jnp.asarray(x), 0.3, axis=axis, norm=norm))
    moved = np.moveaxis(x, axis, 0)
    score = np.abs(moved).sum(1) if norm == 1 else np.sqrt((moved**2).sum(1))
    c = moved.shape[0]
    keep = _keep_ref(score, c - round(0.3 * c))
    np.testing.assert_array_equal(
        np.moveaxis(out, axis, 0), np.broadcast_to(keep[:, None], moved.shape)
    )


def test_channel_mask_ties_and_errors():
    x = jnp.ones((3, 4))  # all columns tie: the last round(0.5 * 4) = 2 are pruned
    np.testing.assert_array_equal(channel_mask(x, 0.5)[0], [True, True, False, False])
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        channel_mask(x, 0.5, norm=3)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        channel_mask(x, 0.5, axis=2)
    with pytest.raises(ValueError, match="batch_dims"):
        channel_mask(x, 0.5, axis=0, batch_dims=1)


def test_saliency_mask_reference_and_errors():
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    g[0] = 0.0  # ties at zero saliency
    out = np.asarray(saliency_mask(jnp.asarray(x), jnp.asarray(g), 0.4))
    keep = _keep_ref(np.abs(x * g).ravel(), 35 - 14).reshape(5, 7)
    np.testing.assert_array_equal(out, keep)
    with pytest.raises(ValueError, match=r"x.shape=\(5, 7\) and grad.shape=\(7, 5\)"):
        saliency_mask(x, g.T, 0.4)
    jitted = jax.jit(lambda a, b: saliency_mask(a, b, 0.4))(x, g)
    np.testing.assert_array_equal(jitted, out)


def test_batch_dims_rank_each_layer_separately():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 8, 4)).astype(np.float32)  # [stack..., in, out]
    g = rng.normal(size=x.shape).astype(np.float32)
    key = jax.random.key(0)
    cases = {
        "magnitude": (lambda a, **k: magnitude_mask(a, 0.7, **k), lambda a: magnitude_mask(a, 0.7)),
        "block": (
            lambda a, **k: block_mask(a, 0.5, (2, 2), **k),
            lambda a: block_mask(a, 0.5, (2, 2)),
        ),
        "channel": (
            lambda a, **k: channel_mask(a, 0.5, axis=-2, **k),
            lambda a: channel_mask(a, 0.5, axis=-2),
        ),
        "nm": (lambda a, **k: nm_mask(a, 2, 4, axis=-2, **k), lambda a: nm_mask(a, 2, 4, axis=-2)),
    }
    for name, (stacked, single) in cases.items():
        out = np.asarray(stacked(jnp.asarray(x), batch_dims=2))
        for i in range(2):
            for j in range(3):
                np.testing.assert_array_equal(out[i, j], single(jnp.asarray(x[i, j])), err_msg=name)
    sal = np.asarray(saliency_mask(x, g, 0.3, batch_dims=2))
    assert (sal.reshape(6, -1).sum(1) == 32 - round(0.3 * 32)).all()
    rnd = np.asarray(random_mask(key, x.shape, 0.3, batch_dims=2))
    assert (rnd.reshape(6, -1).sum(1) == 32 - round(0.3 * 32)).all()
    assert len({rnd[i, j].tobytes() for i in range(2) for j in range(3)}) > 1  # own permutations
    tree = {"a": x, "b": x[..., :2]}
    masks = global_magnitude_masks(tree, 0.5, batch_dims=2)
    for i in range(2):
        one = global_magnitude_masks({"a": x[i, 0], "b": x[i, 0, :, :2]}, 0.5)
        np.testing.assert_array_equal(masks["a"][i, 0], one["a"])
        np.testing.assert_array_equal(masks["b"][i, 0], one["b"])


def test_batch_dims_errors():
    x = jnp.ones((2, 4, 4))
    with pytest.raises(ValueError, match=r"magnitude_mask: batch_dims must be in \[0, 3\]"):
        magnitude_mask(x, 0.5, batch_dims=4)
    with pytest.raises(TypeError, match="batch_dims must be a static Python int"):
        magnitude_mask(x, 0.5, batch_dims=1.0)
    with pytest.raises(ValueError, match="nm_mask: axis=0 is one of the batch_dims=1"):
        nm_mask(x, 2, 2, axis=0, batch_dims=1)
    with pytest.raises(ValueError, match="same leading shape"):
        global_magnitude_masks([x, jnp.ones((3, 4))], 0.5, batch_dims=1)


def test_sparsity_rounding_is_one_rule():
    # 5 entries at sparsity 0.5: round(2.5) = 2 pruned, 3 kept, in every maker.
    x = jnp.arange(1.0, 6.0)
    assert int(hj.magnitude_mask(x, 0.5).sum()) == 3
    assert int(hj.random_mask(jax.random.key(0), (5,), 0.5).sum()) == 3
    assert int(hj.ste_mask(x, sparsity=0.5).sum()) == 3
    masks = hj.global_magnitude_masks({"a": x}, 0.5)
    assert int(masks["a"].sum()) == 3
