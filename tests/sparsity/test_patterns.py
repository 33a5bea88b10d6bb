"""Mask patterns (``hadamard_jax._src.sparsity.patterns``): each pattern against a NumPy
reference, the same object accepted by every entry point with the same result as the string or
keyword form, and errors that name the argument."""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hadamard_jax as hj
import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from hadamard_jax import NM, Block, Channel, Pattern, Unstructured, nm_mask, sparse
from tests.utils import normal

_prune: Any = hn.prune  # returns the module, typed nnx.Module
W = normal(0, (8, 8))  # a layer [in, out], for the N:M convention
SHAPE = (2, 8, 4)  # [stack, in, out]: one batch axis, a layer [8, 4]
FLOATS = hnp.arrays(
    np.float32, SHAPE, elements=st.floats(-4, 4, width=32).map(lambda v: round(v, 1))
)


def _keep_ref(score, k):
    """Keep the k largest of a 1-D score, the smaller index first among ties."""
    order = sorted(range(score.size), key=lambda i: (-score[i], i))
    keep = np.zeros(score.size, bool)
    keep[order[:k]] = True
    return keep


def _ref(pattern, x, sparsity):
    """A NumPy reference per layer of ``x = [stack, in, out]`` (absolute values ranked)."""
    out = []
    for layer in np.abs(x):
        if isinstance(pattern, Unstructured):
            n = layer.size
            out.append(_keep_ref(layer.ravel(), n - round(sparsity * n)).reshape(layer.shape))
        elif isinstance(pattern, NM):  # groups of m along the input axis (-2)
            cols = [
                np.concatenate([_keep_ref(g, pattern.n) for g in np.split(col, 8 // pattern.m)])
                for col in layer.T
            ]
            out.append(np.stack(cols, axis=1))
        elif isinstance(pattern, Block):
            b0, b1 = pattern.shape
            tiles = layer.reshape(8 // b0, b0, 4 // b1, b1).mean((1, 3)).ravel()
            keep = _keep_ref(tiles, tiles.size - round(sparsity * tiles.size))
            grid = keep.reshape(8 // b0, 4 // b1)
            out.append(np.repeat(np.repeat(grid, b0, 0), b1, 1))
        else:  # Channel(axis=-1, norm=2): output units by their L2 norm
            norms = np.sqrt((layer.astype(np.float64) ** 2).sum(0))
            keep = _keep_ref(norms, 4 - round(sparsity * 4))
            out.append(np.broadcast_to(keep, layer.shape))
    return np.stack(out)


PATTERNS = [Unstructured(), NM(2, 4), Block((2, 2)), Channel(-1, norm=2)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: type(p).__name__)
@settings(max_examples=10)
@given(x=FLOATS)
def test_pattern_matches_numpy_reference(pattern, x):
    sparsity = None if isinstance(pattern, NM) else 0.5
    out = np.asarray(pattern.mask(jnp.asarray(x), sparsity, batch_dims=1))
    np.testing.assert_array_equal(out, _ref(pattern, x, sparsity))


def test_steps_compose_to_mask_and_units_count():
    x = jnp.asarray(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32))
    for pattern in PATTERNS:
        sparsity = None if isinstance(pattern, NM) else 0.5
        checked = pattern.check(x.shape, 1)
        units = checked.units(x.shape, 1)
        scores = checked.scores(x, 1)
        assert scores.shape == (2, units)
        mask = checked.expand(checked.keep(scores, checked.kept(sparsity, units)), x.shape, 1)
        np.testing.assert_array_equal(mask, pattern.mask(x, sparsity, batch_dims=1))
    assert Block((2, 2)).check(SHAPE, 1).units(SHAPE, 1) == 8
    assert Channel(-2).check(SHAPE, 1) == Channel(0, 1)
    assert NM(2, 4).check(SHAPE, 1) == NM(2, 4, 0)  # the input axis of the layer


def test_patterns_are_hashable_values():
    assert NM() == NM(2, 4, None) and hash(NM()) == hash(NM(2, 4))
    assert len({Unstructured(), Unstructured(), Block((2, 2)), Block((2, 2), "mean")}) == 2


def test_strings_map_to_the_same_objects():
    from hadamard_jax._src.sparsity.patterns import as_pattern

    assert as_pattern("unstructured") == Unstructured()
    assert as_pattern("nm") == NM()
    assert as_pattern("channel") == Channel()
    assert as_pattern(Block((2, 2))) == Block((2, 2))


def test_mask_makers_are_pattern_masks():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32))
    pairs = [
        (hj.magnitude_mask(x, 0.5), Unstructured().mask(x, 0.5)),
        (hj.nm_mask(x, 2, 4), NM(2, 4).mask(x)),
        (hj.nm_mask(x, 1, 2, axis=-1), NM(1, 2, axis=-1).mask(x)),
        (hj.block_mask(x, 0.5, (2, 2), pool="max"), Block((2, 2), "max").mask(x, 0.5)),
        (hj.channel_mask(x, 0.25, axis=0, norm=2), Channel(0, 2).mask(x, 0.25)),
    ]
    for maker, pattern in pairs:
        np.testing.assert_array_equal(maker, pattern)


def _kernel():
    return jnp.asarray(np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32))


def _nnx_layer():
    layer = hn.MaskedLinear(8, 4, rngs=nnx.Rngs(0))
    layer.kernel[...] = _kernel()
    return layer


def _linen_variables():
    variables = hl.MaskedLinear(4).init(jax.random.key(0), jnp.ones((1, 8)))
    variables = jax.tree.map(lambda v: v, variables)
    variables["params"]["kernel"] = _kernel()
    return variables


@pytest.mark.parametrize(
    ("pattern", "sparsity", "reference"),
    [
        (Block((2, 2)), 0.5, lambda w: hj.block_mask(w, 0.5, (2, 2))),
        (Channel(), 0.25, lambda w: hj.channel_mask(w, 0.25)),
        ("channel", 0.25, lambda w: hj.channel_mask(w, 0.25)),
        (NM(2, 4), None, lambda w: hj.nm_mask(w, 2, 4)),
        ("unstructured", 0.5, lambda w: hj.magnitude_mask(w, 0.5)),
    ],
    ids=["block", "channel", "channel-str", "nm", "unstructured-str"],
)
def test_prune_takes_the_pattern_objects(pattern, sparsity, reference):
    want = np.asarray(reference(_kernel()))
    layer = _prune(_nnx_layer(), sparsity, pattern=pattern)
    np.testing.assert_array_equal(layer.mask[...], want)
    variables = hl.prune(_linen_variables(), sparsity, pattern=pattern)
    np.testing.assert_array_equal(variables["masks"]["mask"], want)


def test_prune_nm_method_is_the_nm_pattern():
    by_method = _prune(_nnx_layer(), None, method="nm", n=1, m=2, axis=-1).mask[...]
    by_pattern = _prune(_nnx_layer(), None, pattern=NM(1, 2, axis=-1)).mask[...]
    np.testing.assert_array_equal(by_method, by_pattern)
    random = _prune(_nnx_layer(), 0.5, method="random", key=jax.random.key(0), pattern=Channel())
    assert int(random.mask[...].all(axis=0).sum()) == 2 and int(random.mask[...].sum()) == 16


def test_sparsify_takes_the_same_objects_and_strings():
    params = {"dense": {"kernel": _kernel()}}
    for pattern, ref in [
        (Channel(), hj.channel_mask(_kernel(), 0.5)),
        ("channel", hj.channel_mask(_kernel(), 0.5)),
        (NM(2, 4), hj.nm_mask(_kernel(), 2, 4)),
    ]:
        tx = sparse.sparsify(optax.sgd(0.1), schedule=0.5, pattern=pattern)
        mask = sparse.masks_of(tx.init(params), params)["dense"]["kernel"]
        np.testing.assert_array_equal(mask, ref)


def test_errors_name_the_argument_and_shape():
    x = jnp.ones((6, 8))
    with pytest.raises(ValueError, match=r"Block.mask: x.shape=\(6, 8\) is not divisible by "):
        Block((4, 4)).mask(x, 0.5)
    with pytest.raises(ValueError, match=r"Block.mask: Block.shape=\(2,\) needs one entry"):
        Block((2,)).mask(x, 0.5)
    with pytest.raises(ValueError, match="NM.n must be <= NM.m, got n=3 and m=2"):
        NM(3, 2).mask(x)
    with pytest.raises(ValueError, match=r"NM.m=5 must divide the length of axis 0"):
        NM(2, 5).mask(x)
    with pytest.raises(ValueError, match="Channel.norm must be 1 or 2"):
        Channel(norm=3).mask(x, 0.5)
    with pytest.raises(ValueError, match="Channel.axis=2 is out of range"):
        Channel(axis=2).mask(x, 0.5)
    with pytest.raises(ValueError, match="2:4 pattern has sparsity 0.5, but sparsity=0.25"):
        NM(2, 4).mask(jnp.ones((8, 4)), 0.25)
    with pytest.raises(ValueError, match=r"prune \(mask\): kernel.shape=\(8, 4\) is not divisible"):
        _prune(_nnx_layer(), 0.5, pattern=Block((3, 3)))
    with pytest.raises(ValueError, match="pattern='block' needs arguments: pass Block"):
        _prune(_nnx_layer(), 0.5, pattern="block")
    with pytest.raises(TypeError, match="prune: pattern must be Unstructured"):
        _prune(_nnx_layer(), 0.5, pattern=3)
    with pytest.raises(ValueError, match="method='nm' sets the pattern"):
        _prune(_nnx_layer(), None, method="nm", n=2, m=4, pattern=Channel())
    with pytest.raises(ValueError, match="global_magnitude' ranks single weights"):
        hl.prune(_linen_variables(), 0.5, method="global_magnitude", pattern=Channel())
    with pytest.raises(TypeError, match="sparsity is required"):
        _prune(_nnx_layer(), None, pattern=Channel())
    with pytest.raises(ValueError, match=r"sparsify: unknown pattern 'rows'"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.5, pattern="rows")


def test_a_new_pattern_is_one_class():
    """A pattern defined outside the library (input rows of a kernel by their L1 norm, the
    same as ``Channel(axis=-2)``) works at every entry point, also by its name."""
    from hadamard_jax._src.sparsity.patterns import PATTERNS

    @dataclasses.dataclass(frozen=True)
    class Inputs(Pattern):
        name: ClassVar[str] = "inputs_test"

        def units(self, shape, batch_dims=0):
            return shape[-2]

        def scores(self, x, batch_dims=0):
            return jnp.abs(x).sum(-1).reshape(-1, x.shape[-2])

        def expand(self, kept, shape, batch_dims=0):
            return jnp.broadcast_to(kept.reshape(shape[:-1] + (1,)), shape)

    try:
        want = np.asarray(hj.channel_mask(_kernel(), 0.25, axis=-2))
        np.testing.assert_array_equal(Inputs().mask(_kernel(), 0.25), want)
        for pattern in (Inputs(), "inputs_test"):
            layer = _prune(_nnx_layer(), 0.25, pattern=pattern)
            np.testing.assert_array_equal(layer.mask[...], want)
        params = {"w": _kernel()}
        tx = sparse.sparsify(optax.sgd(0.1), schedule=0.25, pattern=Inputs())
        np.testing.assert_array_equal(sparse.masks_of(tx.init(params), params)["w"], want)
    finally:
        PATTERNS.pop("inputs_test")


def test_nm_default_axis_is_the_input_axis_everywhere():
    stack = normal(3, (2, 8, 8))
    tx = sparse.sparsify(optax.sgd(0.0), schedule=sparse.one_shot(0.5), pattern=sparse.NM(2, 4))
    p = {"w": W, "s": stack}
    _, state = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    via_sparsify = sparse.masks_of(state, p)
    layer = hn.MaskedLinear(8, 8, rngs=nnx.Rngs(0))
    layer.kernel[...] = W
    hn.prune(layer, None, method="nm", n=2, m=4)
    variables = {"params": {"kernel": W}, "masks": {"mask": jnp.ones((8, 8), bool)}}
    via_linen = hl.prune(variables, None, method="nm", n=2, m=4)["masks"]["mask"]
    want = nm_mask(W, 2, 4)
    # Groups of 4 consecutive inputs (axis -2) of each output unit keep 2.
    assert (np.asarray(want).reshape(2, 4, 8).sum(axis=1) == 2).all()
    np.testing.assert_array_equal(want, nm_mask(W, 2, 4, axis=-2))
    np.testing.assert_array_equal(via_sparsify["w"], want)
    np.testing.assert_array_equal(layer.mask[...], want)
    np.testing.assert_array_equal(via_linen, want)
    # Stacked kernels [*stack, in, out]: the input axis of each layer.
    np.testing.assert_array_equal(via_sparsify["s"], nm_mask(stack, 2, 4))
    np.testing.assert_array_equal(nm_mask(stack, 2, 4), nm_mask(stack, 2, 4, axis=1))
    # A rank-1 layer groups along its only axis.
    np.testing.assert_array_equal(nm_mask(W[0], 2, 4), nm_mask(W[0], 2, 4, axis=-1))
    np.testing.assert_array_equal(nm_mask(W, 2, 4, batch_dims=1), nm_mask(W, 2, 4, axis=-1))
