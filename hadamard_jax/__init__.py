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
# --- gating ops (end) ---

# --- masks (begin) ---
# --- masks (end) ---

# --- fused blocks (begin) ---
# --- fused blocks (end) ---

__all__ = [
    "__version__",
    "hadamard",
    "hadamard_n",
    # --- gating __all__ (begin) ---
    # --- gating __all__ (end) ---
    # --- masks __all__ (begin) ---
    # --- masks __all__ (end) ---
    # --- fused blocks __all__ (begin) ---
    # --- fused blocks __all__ (end) ---
]
