"""``hadamard_jax.sparse.reset_where``: the optimizer moments of regrown weights zeroed in any
inner state, through optax's wrappers or by path. The resets inside a RigL/SET step are tested in
``test_transform.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hadamard_jax import sparse


def test_reset_where_is_generic_over_inner_states():
    p = {"a": jnp.ones((2, 2)), "b": jnp.ones(3)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
    state = tx.update(p, tx.init(p), p)[1]
    regrown = [jnp.array([[True, False], [False, False]]), None]
    out = sparse.reset_where(state, jax.tree.structure(p), regrown)
    trace, before = out[1][0].trace, state[1][0].trace
    np.testing.assert_array_equal(trace["a"], np.where(regrown[0], 0.0, before["a"]))
    assert (np.asarray(before["a"]) != 0).all()
    np.testing.assert_array_equal(trace["b"], state[1][0].trace["b"])


def test_reset_where_without_tx_goes_by_path_through_masked_nodes():
    p = {"k": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = optax.masked(optax.sgd(0.1, momentum=0.9), {"k": True, "b": False})
    state = tx.update(p, tx.init(p), p)[1]
    regrown = [None, jnp.array([[True, False], [False, False]])]
    for out in (
        sparse.reset_where(state, jax.tree.structure(p), regrown),
        sparse.reset_where(state, p, regrown, tx=tx),
    ):
        trace = np.asarray(out.inner_state[0].trace["k"])
        np.testing.assert_array_equal(trace == 0, np.asarray(regrown[1]))
