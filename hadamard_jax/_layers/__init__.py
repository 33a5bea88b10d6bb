"""What the NNX and Linen front ends share: one home for each concept.

* one module per layer family (:mod:`~hadamard_jax._layers.glu`: ``GLU``, ``GatedMLP``;
  :mod:`~hadamard_jax._layers.residual`: ``Highway``, ``GatedResidual``;
  :mod:`~hadamard_jax._layers.gated_norm`; :mod:`~hadamard_jax._layers.gated_attention`): its
  argument check (used by both front ends at construction time), its params table
  (:mod:`~hadamard_jax._layers.params`), its pure apply function and the argument descriptions
  both docstrings share (:mod:`~hadamard_jax._layers.docstrings`); ``nnx/_<family>.py`` and
  ``linen/_<family>.py`` store the options, build the table and call the apply function;
* :mod:`~hadamard_jax._layers.options`: the checks of one kind of argument each (sizes, flags,
  dtypes, ...), the checks of the mask modules, default initialisers and constants (the
  hard-concrete defaults, the ``"masks"`` collection, the mask types and pruning methods);
* :mod:`~hadamard_jax._layers.functional`: the pure layer functions (parameters in, arrays out)
  that both front ends call, so equal parameters give equal outputs;
* :mod:`~hadamard_jax._layers.pruning`: :func:`~hadamard_jax._layers.pruning.prune_masks`, the
  pairing of masks with kernels and the sparsity count behind both ``prune`` functions;
* :mod:`~hadamard_jax._layers.recurrent`: ``RGLRU`` and ``MinGRU``;
  :mod:`~hadamard_jax._layers.linear_attention`: ``GatedDeltaNet`` and ``GatedLinearAttention``;
  :mod:`~hadamard_jax._layers.adapters`: the adapter layers. Each holds, per layer, a frozen
  options dataclass checked once at construction, its parameter table
  (:mod:`~hadamard_jax._layers.params`) and its pure apply functions.

The front ends hold only parameter creation and state. Private: import the public modules from
:mod:`hadamard_jax.nnx` and :mod:`hadamard_jax.linen`.
"""
