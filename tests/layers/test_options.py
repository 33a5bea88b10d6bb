"""The options of the Flax modules (``hadamard_jax._layers.options``): every field has a check,
NumPy scalars and bools are static values, ``deterministic=None`` stays allowed."""

from __future__ import annotations

import dataclasses
from typing import ClassVar
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from hadamard_jax import linen
from hadamard_jax import nnx as hnnx
from hadamard_jax._layers import glu, options
from hadamard_jax.linen import _common as LC
from tests.utils import nnx_rngs


def test_an_option_without_a_check_is_refused():

    @dataclasses.dataclass(frozen=True)
    class Unchecked(glu.GLUOptions):
        op: ClassVar[str] = "GLU"
        outfeatures: int = 3

    args = dict(out_features=3, activation="swiglu", approximate=False, fused_kernel=True)
    args |= dict(use_bias=True, dtype=None, param_dtype="float32", precision=None)
    args |= dict(
        kernel_init=glu.options.default_kernel_init, bias_init=glu.options.default_bias_init
    )
    assert glu.GLUOptions(**args).out_features == 3
    with pytest.raises(TypeError, match="GLU: unexpected argument 'outfeatures'"):
        Unchecked(**args)


def test_good_arguments_still_accepted():
    """NumPy scalars and bools are static values too; ``deterministic=None`` stays allowed."""
    hn.GatedMLP(np.int64(4), 8, dropout_rate=np.float32(0.25), deterministic=None, rngs=nnx_rngs())
    hl.GatedMLP(np.int32(8), dropout_rate=0.0, deterministic=np.bool_(True))
    hn.Mask(3, fill=-np.inf)
    hn.MaskedLinear(4, 4, mask_type="ste", sparsity=np.float64(0.5), rngs=nnx_rngs())
    hn.prune(hn.MaskedLinear(8, 4, rngs=nnx_rngs()), np.float32(0.5))


# --- options checked once (was test_options_cache.py) ------------------------------------------
# Options are checked once: Linen's clones reuse the checked options, NNX builds them once.
#
# Flax runs a Linen module's ``__post_init__`` again on every clone (``init``, each un-jitted
# ``apply``); :func:`hadamard_jax.linen._common.checked_options` keeps the options checked from
# equal fields, so the family's checks run once per distinct set of fields. The checks counted
# here are :func:`hadamard_jax._layers.options.check_args` (the table checks of ``GLUOptions``).
#


@pytest.fixture
def check_args():
    """A fresh options cache, and the family's table check counted."""
    LC._checked.cache_clear()
    with mock.patch.object(options, "check_args", wraps=options.check_args) as counted:
        yield counted
    LC._checked.cache_clear()


def test_linen_checks_once_across_init_and_applies(check_args):
    layer, x = linen.GLU(3, activation="geglu"), jnp.ones((2, 4))
    variables = layer.init(jax.random.key(0), x)
    first = layer.apply(variables, x)
    second = layer.apply(variables, x)
    assert check_args.call_count == 1
    assert jnp.array_equal(first, second)


def test_linen_modules_with_equal_fields_share_their_options(check_args):
    a, b = linen.GLU(5, use_bias=False), linen.GLU(5, use_bias=False)
    assert a.options is b.options
    assert linen.GLU(5).options is not a.options  # other fields, checked on their own
    assert check_args.call_count == 2


def test_linen_bad_option_raises_each_time_with_its_message(check_args):
    for _ in range(2):  # a failed check is not cached
        with pytest.raises(ValueError, match="GLU: unknown activation 'nope'"):
            linen.GLU(3, activation="nope")
    assert check_args.call_count == 2


def test_equal_values_of_other_types_are_checked_apart(check_args):
    assert linen.GLU(3, use_bias=True).options.use_bias is True
    with pytest.raises(TypeError, match="GLU: use_bias must be a static bool, got int"):
        linen.GLU(3, use_bias=1)  # 1 == True, but not a bool
    linen.Mask((4, 3))
    with pytest.raises(TypeError, match=r"Mask: shape\[0\] must be a static Python int"):
        linen.Mask((4.0, 3))  # (4.0, 3) == (4, 3), inside a tuple


class _Init:
    """An initialiser object without ``__hash__`` (it defines ``__eq__``)."""

    def __eq__(self, other):
        return isinstance(other, _Init)

    def __call__(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype)


def test_unhashable_field_is_checked_each_time(check_args):
    layer, x = linen.GLU(3, kernel_init=_Init()), jnp.ones((2, 4))
    variables = layer.init(jax.random.key(0), x)
    layer.apply(variables, x)
    assert check_args.call_count > 1  # no cache, the same options
    assert LC._checked.cache_info().currsize == 0
    assert not jnp.any(variables["params"]["kernel"])


def test_cache_is_bounded(check_args):
    for n in range(1, LC.CHECKED_CACHE_SIZE + 6):
        linen.GLU(n)
    assert LC._checked.cache_info().currsize == LC.CHECKED_CACHE_SIZE


def test_nnx_checks_once_at_construction(check_args):
    layer, x = hnnx.GLU(4, 3, rngs=nnx.Rngs(0)), jnp.ones((2, 4))
    layer(x)
    layer(x)
    nnx.jit(lambda m, v: m(v))(layer, x)
    nnx.clone(layer)(x)
    assert check_args.call_count == 1
