"""Flax Linen modules: the :mod:`hadamard_jax.nnx` modules with the same names and arguments
(input sizes inferred from the inputs, as in ``nn.Dense``). Masks live in the ``"masks"``
collection; :func:`prune` returns new variables.
"""

from hadamard_jax._layers.adapters import ADAPTERS as ADAPTERS
from hadamard_jax._layers.options import MASKS as MASKS
from hadamard_jax.linen._adapters import IA3 as IA3
from hadamard_jax.linen._adapters import DoRALinear as DoRALinear
from hadamard_jax.linen._adapters import HiRALinear as HiRALinear
from hadamard_jax.linen._adapters import IA3Linear as IA3Linear
from hadamard_jax.linen._adapters import LoHaLinear as LoHaLinear
from hadamard_jax.linen._adapters import merge_adapter as merge_adapter
from hadamard_jax.linen._gated_attention import (
    GatedMultiHeadAttention as GatedMultiHeadAttention,
)
from hadamard_jax.linen._gated_norm import GatedRMSNorm as GatedRMSNorm
from hadamard_jax.linen._glu import GLU as GLU
from hadamard_jax.linen._glu import GatedMLP as GatedMLP
from hadamard_jax.linen._linear_attention import GatedDeltaNet as GatedDeltaNet
from hadamard_jax.linen._linear_attention import (
    GatedLinearAttention as GatedLinearAttention,
)
from hadamard_jax.linen._masks import HardConcreteGate as HardConcreteGate
from hadamard_jax.linen._masks import Mask as Mask
from hadamard_jax.linen._masks import MaskedLinear as MaskedLinear
from hadamard_jax.linen._prune import l0_penalty as l0_penalty
from hadamard_jax.linen._prune import mask_sparsity as mask_sparsity
from hadamard_jax.linen._prune import prune as prune
from hadamard_jax.linen._recurrent import RGLRU as RGLRU
from hadamard_jax.linen._recurrent import MinGRU as MinGRU
from hadamard_jax.linen._residual import GatedResidual as GatedResidual
from hadamard_jax.linen._residual import Highway as Highway

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
    "MASKS",
    "Mask",
    "MaskedLinear",
    "MinGRU",
    "RGLRU",
    "l0_penalty",
    "mask_sparsity",
    "prune",
    "ADAPTERS",
    "DoRALinear",
    "HiRALinear",
    "IA3",
    "IA3Linear",
    "LoHaLinear",
    "merge_adapter",
]
