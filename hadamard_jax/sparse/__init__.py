"""Sparse training: pruning schedules, per-layer sparsity distributions and dynamic sparsity
(RigL, SET) as an optax ``GradientTransformation``.

>>> import optax
>>> from hadamard_jax import sparse
>>> tx = sparse.sparsify(
...     optax.adamw(1e-3),
...     method="magnitude",
...     schedule=sparse.polynomial(0.9, begin_step=100, end_step=1000, every=50),
...     distribution="erk",
... )

``tx`` works wherever an optax optimizer does: ``nnx.Optimizer(model, tx, wrt=nnx.Param)``,
Linen's ``variables["params"]``, a plain pytree. Needs optax (the ``examples``/``test`` extras).
"""

# isort: off
from hadamard_jax.sparse._schedules import Schedule as Schedule
from hadamard_jax.sparse._schedules import constant as constant
from hadamard_jax.sparse._schedules import one_shot as one_shot
from hadamard_jax.sparse._schedules import periodic as periodic
from hadamard_jax.sparse._schedules import polynomial as polynomial
from hadamard_jax.sparse._distributions import default_filter as default_filter
from hadamard_jax.sparse._distributions import erk_densities as erk_densities
from hadamard_jax._src.sparsity.patterns import NM as NM
from hadamard_jax._src.sparsity.patterns import Block as Block
from hadamard_jax._src.sparsity.patterns import Channel as Channel
from hadamard_jax._src.sparsity.patterns import Unstructured as Unstructured
from hadamard_jax.sparse._transform import SparseState as SparseState
from hadamard_jax.sparse._transform import apply_masks as apply_masks
from hadamard_jax.sparse._transform import masks_of as masks_of
from hadamard_jax.sparse._reset import reset_where as reset_where
from hadamard_jax.sparse._transform import sparsify as sparsify
from hadamard_jax.sparse._transform import sparsity_of as sparsity_of
# isort: on

__all__ = [
    "Schedule",
    "constant",
    "one_shot",
    "periodic",
    "polynomial",
    "default_filter",
    "erk_densities",
    "NM",
    "Block",
    "Channel",
    "Unstructured",
    "SparseState",
    "sparsify",
    "masks_of",
    "apply_masks",
    "sparsity_of",
    "reset_where",
]
