"""hadamard_jax: element-wise (Hadamard) and gating ops for JAX with hand-written derivative rules.

Every op is a pure function with a ``jax.custom_jvp`` rule that is linear in the tangents and
evaluated under ``jax.checkpoint``: forward and reverse mode both work, and only the op's inputs
are kept for the backward pass. Flax modules live in :mod:`hadamard_jax.nnx` and
:mod:`hadamard_jax.linen`; benchmarks in :mod:`hadamard_jax.bench`.
"""

__version__ = "0.1.0"

# Core products.
from hadamard_jax._src.hadamard import hadamard as hadamard
from hadamard_jax._src.hadamard import hadamard_n as hadamard_n

# --- gating ops (begin) ---
from hadamard_jax._src.glu import glu as glu
from hadamard_jax._src.glu import bilinear as bilinear
from hadamard_jax._src.glu import reglu as reglu
from hadamard_jax._src.glu import geglu as geglu
from hadamard_jax._src.glu import swiglu as swiglu
from hadamard_jax._src.glu import glu_packed as glu_packed
from hadamard_jax._src.glu import bilinear_packed as bilinear_packed
from hadamard_jax._src.glu import reglu_packed as reglu_packed
from hadamard_jax._src.glu import geglu_packed as geglu_packed
from hadamard_jax._src.glu import swiglu_packed as swiglu_packed
from hadamard_jax._src.highway import highway as highway
# --- gating ops (end) ---

# --- masks (begin) ---
# --- masks (end) ---

# --- fused blocks (begin) ---
from hadamard_jax._src.gated_mlp import gated_mlp as gated_mlp
# --- fused blocks (end) ---

__all__ = [
    "__version__",
    "hadamard",
    "hadamard_n",
    # --- gating __all__ (begin) ---
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
    "highway",
    # --- gating __all__ (end) ---
    # --- masks __all__ (begin) ---
    # --- masks __all__ (end) ---
    # --- fused blocks __all__ (begin) ---
    "gated_mlp",
    # --- fused blocks __all__ (end) ---
]
