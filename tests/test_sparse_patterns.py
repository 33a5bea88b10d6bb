"""Structured masks (block, channel, saliency) and leading stack axes (batch_dims) on every maker:
exact counts, the tie rule, references in NumPy, errors naming arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hadamard_jax import (
    block_mask,
    channel_mask,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
    random_mask,
    saliency_mask,
)


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
