"""The options of the Flax modules (``hadamard_jax._layers.options``): every field has a check,
NumPy scalars and bools are static values, ``deterministic=None`` stays allowed."""

import numpy as np
import pytest

import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from tests.utils import nnx_rngs


def test_an_option_without_a_check_is_refused():
    import dataclasses
    from typing import ClassVar

    from hadamard_jax._layers import glu

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
