"""Flax Linen modules: the :mod:`hadamard_jax.nnx` modules with the same names and arguments
(input sizes inferred from the inputs, as in ``nn.Dense``). Masks live in the ``"masks"``
collection; :func:`prune` returns new variables.
"""

from hadamard_jax._layers.adapters import ADAPTERS as ADAPTERS
from hadamard_jax._layers.options import MASKS as MASKS
from hadamard_jax.linen._adapters import *  # noqa: F403
from hadamard_jax.linen._gated_attention import *  # noqa: F403
from hadamard_jax.linen._gated_norm import *  # noqa: F403
from hadamard_jax.linen._glu import *  # noqa: F403
from hadamard_jax.linen._linear_attention import *  # noqa: F403
from hadamard_jax.linen._masks import *  # noqa: F403
from hadamard_jax.linen._prune import *  # noqa: F403
from hadamard_jax.linen._recurrent import *  # noqa: F403
from hadamard_jax.linen._residual import *  # noqa: F403

#: The public names: each family module's ``__all__`` (star-imported above) and the names
#: imported one by one.
__all__ = sorted(name for name in dir() if not name.startswith("_"))  # pyright: ignore[reportUnsupportedDunderAll]
