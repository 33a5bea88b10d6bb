"""Mask bit-packing (``pack_mask``, ``unpack_mask``): a round trip equal to NumPy's ``packbits``,
jit, vmap and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hadamard_jax import pack_mask, unpack_mask
from tests.utils import (
    bernoulli,
)


@settings(max_examples=10)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from([np.bool_, np.int8, np.float32]),
)
def test_pack_round_trip_and_matches_numpy(shape, seed, kind):
    mask = np.random.default_rng(seed).random(shape) < 0.5
    packed = pack_mask(jnp.asarray(mask.astype(kind)))
    assert packed.dtype == jnp.uint8 and packed.shape == (-(-mask.size // 8),)
    np.testing.assert_array_equal(packed, np.packbits(mask.ravel()))
    out = unpack_mask(packed, tuple(shape))
    assert out.dtype == jnp.bool_ and out.shape == tuple(shape)
    np.testing.assert_array_equal(out, mask)


def test_pack_under_jit_and_vmap_and_errors():
    masks = bernoulli(0, 0.5, (3, 5, 7))  # random bits
    packed = jax.jit(jax.vmap(pack_mask))(masks)
    assert packed.shape == (3, 5)
    out = jax.jit(jax.vmap(lambda p: unpack_mask(p, (5, 7))))(packed)
    np.testing.assert_array_equal(out, masks)
    with pytest.raises(ValueError, match=r"shape \(5, 7\) packs into shape \(5,\).*\(4,\)"):
        unpack_mask(packed[0, :4], (5, 7))
    with pytest.raises(TypeError, match="uint8"):
        unpack_mask(packed[0].astype(jnp.int32), (5, 7))
    with pytest.raises(TypeError, match="shape"):
        unpack_mask(packed[0], "abc")
