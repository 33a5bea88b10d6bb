"""The sparse schedules (``hadamard_jax.sparse``: polynomial, one_shot, periodic, constant): the
sparsity and the update steps at every step, traceable under jit and vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hadamard_jax import sparse


def test_polynomial_schedule_formula_and_update_steps():
    s = sparse.polynomial(0.9, 10, 50, initial=0.2, every=7)
    updates = [t for t in range(70) if bool(s.is_update(t))]
    assert updates == [10, 17, 24, 31, 38, 45, 50]
    for t in range(70):
        last = max([u for u in updates if u <= t], default=None)
        if last is None:
            want = 0.2
        else:
            want = 0.9 + (0.2 - 0.9) * (1 - min(1.0, (last - 10) / 40)) ** 3
        assert s.sparsity_at(t) == pytest.approx(want, abs=1e-12)
        assert float(s(t)) == pytest.approx(want, abs=1e-6)
    # jnp-traceable: one jit over all steps.
    values = jax.jit(jax.vmap(s))(jnp.arange(70))
    np.testing.assert_allclose(values, [s.sparsity_at(t) for t in range(70)], rtol=1e-6)


def test_other_schedules():
    one = sparse.one_shot(0.8, step=3)
    assert [one.sparsity_at(t) for t in range(5)] == [0, 0, 0, 0.8, 0.8]
    assert [bool(one.is_update(t)) for t in range(5)] == [False, False, False, True, False]
    per = sparse.periodic(0.5, 4, begin_step=2, end_step=12)
    assert [t for t in range(20) if bool(per.is_update(t))] == [2, 6, 10]
    const = sparse.constant(0.3)
    assert const.sparsity_at(100) == 0.3 and not any(bool(const.is_update(t)) for t in range(5))
    with pytest.raises(ValueError, match="polynomial: end_step must be >= 5"):
        sparse.polynomial(0.5, 5, 2)
    with pytest.raises(ValueError, match="periodic: every must be >= 1"):
        sparse.periodic(0.5, 0)
