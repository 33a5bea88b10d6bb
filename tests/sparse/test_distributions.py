"""The layer-wise sparsity distributions (``hadamard_jax.sparse.erk_densities``): the target
reached, tiny layers capped dense. Their use by ``sparsify(distribution=...)`` is tested in
``test_transform.py``."""

import math

import pytest

from hadamard_jax import sparse


def test_erk_densities_reach_the_target_and_cap_dense_layers():
    shapes = [(64, 128), (128, 10), (3, 2)]
    d = sparse.erk_densities(shapes, 0.9)
    sizes = [math.prod(s) for s in shapes]
    assert d[2] == 1.0  # tiny layer capped dense, the rest rescaled
    assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(0.1 * sum(sizes))
    raw = [sum(s) / math.prod(s) for s in shapes[:2]]
    assert d[0] / d[1] == pytest.approx(raw[0] / raw[1])
