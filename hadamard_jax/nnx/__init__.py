"""Flax NNX modules: gated units (GLU, GatedMLP, Highway, GatedResidual, GatedRMSNorm,
GatedMultiHeadAttention), gated linear recurrences (RGLRU, MinGRU) and masks (Mask,
MaskedLinear, HardConcreteGate, prune), built on the hadamard_jax ops.

Masks are :class:`MaskVar` variables, kept apart from the trainable ``nnx.Param``s. The same
modules, with the same names and arguments, are in :mod:`hadamard_jax.linen`.
"""

from hadamard_jax.nnx._adapters import *  # noqa: F403
from hadamard_jax.nnx._common import MaskVar as MaskVar
from hadamard_jax.nnx._gated_attention import *  # noqa: F403
from hadamard_jax.nnx._gated_norm import *  # noqa: F403
from hadamard_jax.nnx._glu import *  # noqa: F403
from hadamard_jax.nnx._linear_attention import *  # noqa: F403
from hadamard_jax.nnx._masks import *  # noqa: F403
from hadamard_jax.nnx._prune import *  # noqa: F403
from hadamard_jax.nnx._recurrent import *  # noqa: F403
from hadamard_jax.nnx._residual import *  # noqa: F403

#: The public names: each family module's ``__all__`` (star-imported above) and the names
#: imported one by one.
__all__ = sorted(name for name in dir() if not name.startswith("_"))  # pyright: ignore[reportUnsupportedDunderAll]
