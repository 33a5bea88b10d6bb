"""hadamard_jax.sparse: schedules, distributions and the sparsify transform (exact counts at
every step, pruned weights exactly zero, RigL/SET drop-and-grow, NNX/Linen/pytree agreement)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hadamard_jax import block_mask, channel_mask, magnitude_mask, nm_mask, sparse
from hadamard_jax._src.checks import count_of
from tests.utils import normal


def _params(seed=0):
    s = 10 * seed
    return {
        "dense": {"kernel": normal(s, (12, 10)), "bias": jnp.zeros(10)},
        "stack": {"kernel": normal(s + 1, (3, 10, 10))},  # three scanned layers
        "head": {"kernel": normal(s + 2, (10, 5)), "bias": jnp.zeros(5)},
        "norm": {"scale": jnp.ones(10)},
    }


def _loss(p, x):
    h = jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"][None])
    for i in range(3):
        h = jnp.tanh(h @ p["stack"]["kernel"][i])
    return (
        jnp.sum((h * p["norm"]["scale"][None]) @ p["head"]["kernel"] + p["head"]["bias"][None]) ** 2
    )


X = normal(9, (4, 12))


def _stepper(tx):
    @jax.jit
    def step(p, s):
        g = jax.grad(_loss)(p, X)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    device = jax.devices()[0]
    # Committed inputs, as the step's outputs are: one compilation, not two.
    return lambda p, s: step(*jax.device_put((p, s), device))


def _layers(mask, batch_dims):
    return np.asarray(mask).reshape(math.prod(mask.shape[:batch_dims]), -1)


def _pruned_are_zero(params, masks):
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
        if m is not None and np.any(np.asarray(p)[~np.asarray(m)] != 0):
            return False
    return True


# --- schedules ------------------------------------------------------------------------------


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


# --- distributions --------------------------------------------------------------------------


def test_erk_densities_reach_the_target_and_cap_dense_layers():
    shapes = [(64, 128), (128, 10), (3, 2)]
    d = sparse.erk_densities(shapes, 0.9)
    sizes = [math.prod(s) for s in shapes]
    assert d[2] == 1.0  # tiny layer capped dense, the rest rescaled
    assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(0.1 * sum(sizes))
    raw = [sum(s) / math.prod(s) for s in shapes[:2]]
    assert d[0] / d[1] == pytest.approx(raw[0] / raw[1])


def test_distribution_filter_and_overrides_in_sparsify():
    p = _params()
    tx = sparse.sparsify(
        optax.sgd(0.1),
        schedule=0.5,
        distribution="erk",
        overrides={"head": 0.25},
    )
    masks = sparse.masks_of(tx.init(p), p)
    assert masks["dense"]["bias"] is None and masks["norm"]["scale"] is None
    assert int(masks["head"]["kernel"].sum()) == 50 - count_of(0.25, 50)
    kept = int(masks["dense"]["kernel"].sum()) + int(masks["stack"]["kernel"].sum())
    assert abs(kept - 0.5 * (120 + 300)) <= 2  # ERK over the rest, per-layer rounding
    # Per scanned layer the same count.
    per_layer = _layers(masks["stack"]["kernel"], 1).sum(1)
    assert len(set(per_layer.tolist())) == 1


# --- exact counts at every step, zeros after every step ------------------------------------


@pytest.mark.parametrize("method", ["magnitude", "random", "saliency"])
def test_gradual_schedule_exact_counts_at_every_step(method):
    p = _params(1)
    sched = sparse.polynomial(0.9, 2, 20, every=3)
    tx = sparse.sparsify(optax.adam(1e-2), method=method, schedule=sched)
    state = tx.init(p)
    step = _stepper(tx)
    for t in range(24):
        p, state = step(p, state)
        level = sched.sparsity_at(t)
        masks = sparse.masks_of(state, p)
        for name, b in (("dense", 0), ("stack", 1), ("head", 0)):
            layers = _layers(masks[name]["kernel"], b)
            n = layers.shape[1]
            assert (layers.sum(1) == n - count_of(level, n)).all(), (method, t, name)
        assert _pruned_are_zero(p, masks)
        assert int(state.step) == t + 1


@pytest.mark.parametrize(
    "inner, method", [("adam", "magnitude"), ("adamw", "magnitude"), ("adamw", "rigl")]
)
def test_pruned_weights_exactly_zero_after_100_steps(inner, method):
    p = _params(2)
    opt = optax.adam(3e-2) if inner == "adam" else optax.adamw(3e-2, weight_decay=0.5)
    if method == "magnitude":
        sched = sparse.polynomial(0.8, 0, 40, every=10)
    else:
        sched = sparse.periodic(0.8, 10, end_step=80)
    tx = sparse.sparsify(opt, method=method, schedule=sched)
    state, q = tx.init(p), p
    step = _stepper(tx)
    for _ in range(100):
        q, state = step(q, state)
    masks = sparse.masks_of(state, q)
    assert _pruned_are_zero(q, masks)
    assert sparse.sparsity_of(state) == pytest.approx(0.8, abs=0.01)
    # The kept weights did train.
    assert not np.allclose(q["dense"]["kernel"], p["dense"]["kernel"] * masks["dense"]["kernel"])


def test_one_compilation_for_update_and_plain_steps():
    traces = []
    tx = sparse.sparsify(optax.sgd(0.1), schedule=sparse.polynomial(0.5, 0, 4))

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(jax.grad(_loss)(p, X), s, p)
        return optax.apply_updates(p, u), s

    p = _params()
    s = tx.init(p)
    for _ in range(6):
        p, s = step(p, s)
    assert len(traces) == 1


# --- RigL / SET -----------------------------------------------------------------------------


def _keep_ref(score, k):
    order = sorted(range(score.size), key=lambda i: (-score[i], i))
    keep = np.zeros(score.size, bool)
    keep[order[:k]] = True
    return keep


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_drop_and_grow_keeps_sparsity_and_regrows_largest_gradients(method):
    p = _params(3)
    tx = sparse.sparsify(
        optax.adam(1e-2),
        method=method,
        schedule=sparse.periodic(0.75, 2, end_step=10),
        drop_fraction=0.5,
    )
    state = tx.init(p)
    step = _stepper(tx)
    p, state = step(p, state)  # step 0 is an update step: f = 0.5
    p, state = step(p, state)  # step 1: not an update step
    old = sparse.masks_of(state, p)
    mu_before = state.inner_state[0].mu
    g = jax.grad(_loss)(p, X)
    new_p, new_state = step(p, state)  # step 2: update, f = 0.5 * (1 + cos(pi / 5)) / 2
    new = sparse.masks_of(new_state, new_p)
    f = 0.5 * 0.5 * (1 + math.cos(math.pi * 2 / 10))
    w, m0, m1 = (np.asarray(a["stack"]["kernel"]) for a in (p, old, new))
    gs = np.asarray(g["stack"]["kernel"])
    for i in range(3):
        k = int(m0[i].sum())
        assert int(m1[i].sum()) == k == 100 - count_of(0.75, 100)
        d = round(f * k)
        survivors = _keep_ref(np.where(m0[i].ravel(), np.abs(w[i].ravel()), -1.0), k - d)
        assert (m1[i].ravel() & survivors).sum() == k - d
        grown = m1[i].ravel() & ~survivors
        assert grown.sum() == d
        if method == "rigl":
            want = _keep_ref(np.where(survivors, -1.0, np.abs(gs[i].ravel())), d)
            np.testing.assert_array_equal(grown, want)
    regrown = np.asarray(new["stack"]["kernel"]) & ~np.asarray(old["stack"]["kernel"])
    assert regrown.any()
    assert (np.asarray(new_p["stack"]["kernel"])[regrown] == 0).all()
    mu, nu = new_state.inner_state[0].mu, new_state.inner_state[0].nu
    assert (np.asarray(mu["stack"]["kernel"])[regrown] == 0).all()
    assert (np.asarray(nu["stack"]["kernel"])[regrown] == 0).all()
    assert np.asarray(mu_before["stack"]["kernel"]).any()
    assert _pruned_are_zero(new_p, new)
    assert sparse.sparsity_of(new_state) == sparse.sparsity_of(state)


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


# --- patterns through sparsify --------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, op",
    [
        (sparse.Block((2, 2)), lambda x, b: block_mask(x, 0.5, (2, 2), batch_dims=b)),
        (sparse.Channel(axis=-1, norm=2), lambda x, b: channel_mask(x, 0.5, norm=2, batch_dims=b)),
        (sparse.NM(2, 4, axis=-2), lambda x, b: nm_mask(x, 2, 4, axis=x.ndim - 2, batch_dims=b)),
        ("unstructured", lambda x, b: magnitude_mask(x, 0.5, batch_dims=b)),
    ],
)
def test_patterns_match_the_pure_ops_at_the_pruning_step(pattern, op):
    p = {"w": normal(40, (8, 12)), "s": normal(41, (2, 4, 8))}
    tx = sparse.sparsify(optax.sgd(0.0), schedule=sparse.one_shot(0.5), pattern=pattern)
    state = tx.init(p)
    u, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    masks = sparse.masks_of(state, p)
    np.testing.assert_array_equal(masks["w"], op(p["w"], 0))
    np.testing.assert_array_equal(masks["s"], op(p["s"], 1))
    assert _pruned_are_zero(optax.apply_updates(p, u), masks)


def test_packed_masks_give_the_same_training():
    p = _params(5)
    sched = sparse.polynomial(0.7, 0, 6, every=2)
    runs = []
    for pack in (False, True):
        tx = sparse.sparsify(optax.adam(1e-2), schedule=sched, pack=pack)
        state, q = tx.init(p), p
        step = _stepper(tx)
        for _ in range(8):
            q, state = step(q, state)
        runs.append((q, sparse.masks_of(state, q), state))
    assert runs[1][2].masks[1].dtype == jnp.uint8  # dense/kernel, packed 1 bit per entry
    for a, b in zip(jax.tree.leaves(runs[0][:2]), jax.tree.leaves(runs[1][:2])):
        np.testing.assert_array_equal(a, b)


def test_errors_name_their_argument():
    p = _params()
    tx = sparse.sparsify(optax.sgd(0.1), schedule=0.5)
    with pytest.raises(ValueError, match="update needs the parameters"):
        tx.update(p, tx.init(p))
    with pytest.raises(ValueError, match="single-level schedule"):
        sparse.sparsify(optax.sgd(0.1), method="rigl", schedule=sparse.polynomial(0.5, 0, 9))
    with pytest.raises(ValueError, match="unknown method"):
        sparse.sparsify(optax.sgd(0.1), method="lottery", schedule=0.5)
    with pytest.raises(ValueError, match=r"sparsify \(dense/kernel\).*not divisible"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.5, pattern=sparse.Block((5, 5))).init(p)
    with pytest.raises(ValueError, match="2:4 pattern has sparsity 0.5"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.9, pattern=sparse.NM(2, 4)).init(p)
