"""What the NNX and Linen front ends share: one home for each concept.

* :mod:`~hadamard_jax._layers.options`: argument checks (one function per module, used by both
  front ends at construction time), default initialisers and constants (the hard-concrete
  defaults, the ``"masks"`` collection, the mask types and pruning methods);
* :mod:`~hadamard_jax._layers.functional`: the pure layer functions (parameters in, arrays out)
  that both front ends call, so equal parameters give equal outputs;
* :mod:`~hadamard_jax._layers.pruning`: :func:`~hadamard_jax._layers.pruning.prune_masks`, the
  pairing of masks with kernels and the sparsity count behind both ``prune`` functions;
* :mod:`~hadamard_jax._layers.attention`: the output gate of ``GatedMultiHeadAttention``;
* :mod:`~hadamard_jax._layers.recurrent`: checks, initialisers and pure functions of ``RGLRU``
  and ``MinGRU``.

The front ends hold only parameter creation and state. Private: import the public modules from
:mod:`hadamard_jax.nnx` and :mod:`hadamard_jax.linen`.
"""
