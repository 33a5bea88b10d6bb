"""hadamard_jax: element-wise (Hadamard) and gating ops for JAX with hand-written derivative rules.

Every op is a pure function with a ``jax.custom_jvp`` rule that is linear in the tangents and
evaluated under ``jax.checkpoint``: forward and reverse mode both work, and only the op's inputs
are kept for the backward pass. Flax modules live in :mod:`hadamard_jax.nnx` and
:mod:`hadamard_jax.linen`; benchmarks in :mod:`hadamard_jax.bench`.
"""

__version__ = "0.2.0"

# isort: off
# Core products.
from hadamard_jax._src.hadamard import hadamard as hadamard
from hadamard_jax._src.hadamard import hadamard_n as hadamard_n

# Gating ops (the GLU family) and the highway gate.
from hadamard_jax._src.glu import bilinear as bilinear
from hadamard_jax._src.glu import bilinear_packed as bilinear_packed
from hadamard_jax._src.glu import geglu as geglu
from hadamard_jax._src.glu import geglu_packed as geglu_packed
from hadamard_jax._src.glu import glu as glu
from hadamard_jax._src.glu import glu_packed as glu_packed
from hadamard_jax._src.glu import reglu as reglu
from hadamard_jax._src.glu import reglu_packed as reglu_packed
from hadamard_jax._src.glu import swiglu as swiglu
from hadamard_jax._src.glu import swiglu_packed as swiglu_packed
from hadamard_jax._src.glu import quick_geglu as quick_geglu
from hadamard_jax._src.glu import quick_geglu_packed as quick_geglu_packed
from hadamard_jax._src.glu import squared_reglu as squared_reglu
from hadamard_jax._src.glu import squared_reglu_packed as squared_reglu_packed
from hadamard_jax._src.glu import clamped_swiglu as clamped_swiglu
from hadamard_jax._src.glu import clamped_swiglu_packed as clamped_swiglu_packed
from hadamard_jax._src.highway import highway as highway

# Linear recurrences.
from hadamard_jax._src.linear_scan import linear_scan as linear_scan
from hadamard_jax._src.linear_scan import log_linear_scan as log_linear_scan

# Fused blocks.
from hadamard_jax._src.gated_mlp import gated_mlp as gated_mlp
from hadamard_jax._src.gated_norm import gated_rms_norm as gated_rms_norm

# Masks: applying and building them.
from hadamard_jax._src.masking import apply_mask as apply_mask
from hadamard_jax._src.masking import attention_mask as attention_mask
from hadamard_jax._src.masking import causal_mask as causal_mask
from hadamard_jax._src.masking import combine_masks as combine_masks
from hadamard_jax._src.masking import padding_mask as padding_mask

# Pruning masks.
from hadamard_jax._src.sparsity.masks import global_magnitude_masks as global_magnitude_masks
from hadamard_jax._src.sparsity.masks import magnitude_mask as magnitude_mask
from hadamard_jax._src.sparsity.masks import nm_mask as nm_mask
from hadamard_jax._src.sparsity.masks import random_mask as random_mask
from hadamard_jax._src.sparsity.masks import topk_mask as topk_mask
from hadamard_jax._src.sparsity.masks import block_mask as block_mask
from hadamard_jax._src.sparsity.masks import channel_mask as channel_mask
from hadamard_jax._src.sparsity.masks import saliency_mask as saliency_mask

# Learned masks.
from hadamard_jax._src.learned_masks import bernoulli_ste as bernoulli_ste
from hadamard_jax._src.learned_masks import hard_concrete as hard_concrete
from hadamard_jax._src.learned_masks import l0_penalty as l0_penalty
from hadamard_jax._src.learned_masks import ste_mask as ste_mask

# Mask storage.
from hadamard_jax._src.mask_packing import pack_mask as pack_mask
from hadamard_jax._src.mask_packing import unpack_mask as unpack_mask

# Hadamard adapters for fine-tuning (LoHa/ABBA, HiRA, DoRA).
from hadamard_jax._src.adapters import dora_matmul as dora_matmul
from hadamard_jax._src.adapters import dora_norm as dora_norm
from hadamard_jax._src.adapters import hira_matmul as hira_matmul
from hadamard_jax._src.adapters import loha_delta as loha_delta
from hadamard_jax._src.adapters import loha_matmul as loha_matmul

# Chunked matrix-state recurrences: gated delta rule and gated linear attention.
from hadamard_jax._src.delta_rule import gated_delta_rule as gated_delta_rule
from hadamard_jax._src.delta_rule import gated_delta_rule_step as gated_delta_rule_step
from hadamard_jax._src.gated_linear_attention import (
    gated_linear_attention as gated_linear_attention,
)
from hadamard_jax._src.gated_linear_attention import (
    gated_linear_attention_step as gated_linear_attention_step,
)

# Mask patterns: what a pruning mask removes whole (mask makers, prune, sparsify).
from hadamard_jax._src.sparsity.patterns import NM as NM
from hadamard_jax._src.sparsity.patterns import Block as Block
from hadamard_jax._src.sparsity.patterns import Channel as Channel
from hadamard_jax._src.sparsity.patterns import Pattern as Pattern
from hadamard_jax._src.sparsity.patterns import Unstructured as Unstructured
# isort: on

__all__ = [
    "__version__",
    "hadamard",
    "hadamard_n",
    "glu",
    "bilinear",
    "reglu",
    "geglu",
    "swiglu",
    "glu_packed",
    "bilinear_packed",
    "reglu_packed",
    "geglu_packed",
    "swiglu_packed",
    "quick_geglu",
    "quick_geglu_packed",
    "squared_reglu",
    "squared_reglu_packed",
    "clamped_swiglu",
    "clamped_swiglu_packed",
    "highway",
    "apply_mask",
    "combine_masks",
    "causal_mask",
    "padding_mask",
    "attention_mask",
    "magnitude_mask",
    "global_magnitude_masks",
    "random_mask",
    "nm_mask",
    "topk_mask",
    "block_mask",
    "channel_mask",
    "saliency_mask",
    "ste_mask",
    "bernoulli_ste",
    "hard_concrete",
    "l0_penalty",
    "pack_mask",
    "unpack_mask",
    "gated_mlp",
    "gated_rms_norm",
    "linear_scan",
    "log_linear_scan",
    "dora_matmul",
    "dora_norm",
    "hira_matmul",
    "loha_delta",
    "loha_matmul",
    "gated_delta_rule",
    "gated_delta_rule_step",
    "gated_linear_attention",
    "gated_linear_attention_step",
    "Pattern",
    "Unstructured",
    "NM",
    "Block",
    "Channel",
]
