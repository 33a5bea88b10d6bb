"""Flax NNX modules: gated units (GLU, GatedMLP, Highway, GatedResidual, GatedRMSNorm,
GatedMultiHeadAttention), gated linear recurrences (RGLRU, MinGRU) and masks (Mask,
MaskedLinear, HardConcreteGate, prune), built on the hadamard_jax ops.

Masks are :class:`MaskVar` variables, kept apart from the trainable ``nnx.Param``s. The same
modules, with the same names and arguments, are in :mod:`hadamard_jax.linen`.
"""

from hadamard_jax.nnx._adapters import IA3 as IA3
from hadamard_jax.nnx._adapters import AdapterParam as AdapterParam
from hadamard_jax.nnx._adapters import DoRALinear as DoRALinear
from hadamard_jax.nnx._adapters import HiRALinear as HiRALinear
from hadamard_jax.nnx._adapters import IA3Linear as IA3Linear
from hadamard_jax.nnx._adapters import LoHaLinear as LoHaLinear
from hadamard_jax.nnx._common import MaskVar as MaskVar
from hadamard_jax.nnx._gated_attention import GatedMultiHeadAttention as GatedMultiHeadAttention
from hadamard_jax.nnx._gated_norm import GatedRMSNorm as GatedRMSNorm
from hadamard_jax.nnx._glu import GLU as GLU
from hadamard_jax.nnx._glu import GatedMLP as GatedMLP
from hadamard_jax.nnx._linear_attention import GatedDeltaNet as GatedDeltaNet
from hadamard_jax.nnx._linear_attention import (
    GatedLinearAttention as GatedLinearAttention,
)
from hadamard_jax.nnx._masks import HardConcreteGate as HardConcreteGate
from hadamard_jax.nnx._masks import Mask as Mask
from hadamard_jax.nnx._masks import MaskedLinear as MaskedLinear
from hadamard_jax.nnx._prune import l0_penalty as l0_penalty
from hadamard_jax.nnx._prune import mask_sparsity as mask_sparsity
from hadamard_jax.nnx._prune import masks_of as masks_of
from hadamard_jax.nnx._prune import prune as prune
from hadamard_jax.nnx._recurrent import RGLRU as RGLRU
from hadamard_jax.nnx._recurrent import MinGRU as MinGRU
from hadamard_jax.nnx._residual import GatedResidual as GatedResidual
from hadamard_jax.nnx._residual import Highway as Highway

__all__ = [
    "GLU",
    "GatedDeltaNet",
    "GatedLinearAttention",
    "GatedMLP",
    "GatedMultiHeadAttention",
    "GatedRMSNorm",
    "GatedResidual",
    "HardConcreteGate",
    "Highway",
    "Mask",
    "MaskVar",
    "MaskedLinear",
    "MinGRU",
    "RGLRU",
    "l0_penalty",
    "mask_sparsity",
    "masks_of",
    "prune",
    "AdapterParam",
    "DoRALinear",
    "HiRALinear",
    "IA3",
    "IA3Linear",
    "LoHaLinear",
]
