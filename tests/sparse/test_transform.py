"""The sparsify transform (``hadamard_jax.sparse.sparsify``): exact counts at every step, pruned
weights exactly zero, RigL/SET drop-and-grow (the moments of regrown weights reset inside every
optax wrapper), the patterns and ``distribution=`` through sparsify, one compilation, packed masks
under mesh axes, non-float leaves, saliency from the first gradient, jaxpruner's skipped update,
argument errors. With Flax's containers and on 8 devices: ``test_transform_flax.py``."""

import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hadamard_jax import block_mask, channel_mask, magnitude_mask, nm_mask, saliency_mask, sparse
from hadamard_jax._src.checks import count_of
from tests.utils import normal, run_on_8_cpu_devices


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


W = normal(0, (8, 8))


G = normal(1, (8, 8))


def _rigl(tx, **kw):
    return sparse.sparsify(
        tx, method="rigl", schedule=sparse.periodic(0.5, 2, end_step=10), drop_fraction=0.5, **kw
    )


def test_integer_and_bool_leaves_are_never_pruned_and_pass_through():
    p = {
        "w": W,
        "table": jnp.arange(64, dtype=jnp.int32).reshape(8, 8),
        "flag": jnp.arange(64).reshape(8, 8) % 3 == 0,
    }
    tx = sparse.sparsify(optax.set_to_zero(), schedule=0.5)
    state = tx.init(p)
    masks = sparse.masks_of(state, p)
    assert masks["table"] is None and masks["flag"] is None
    assert int(masks["w"].sum()) == 32
    u, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    q = optax.apply_updates(p, u)
    np.testing.assert_array_equal(q["table"], p["table"])
    np.testing.assert_array_equal(q["flag"], p["flag"])
    assert (np.asarray(q["w"])[~np.asarray(masks["w"])] == 0).all()
    # float0 gradients (jax.grad(..., allow_int=True)) go through untouched, also under jit.
    loss = lambda p: jnp.sum(p["w"] * p["table"] * p["flag"])
    g = jax.grad(loss, allow_int=True)(p)
    u, _ = jax.jit(tx.update)(g, state, p)
    assert u["table"].dtype == jax.dtypes.float0 and u["flag"].dtype == jax.dtypes.float0
    assert u["table"].shape == (8, 8) and u["w"].dtype == jnp.float32


def _adam_states(state):
    found = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    return [s for s in found if isinstance(s, optax.ScaleByAdamState)]


_LABELS = {"k": "adam", "b": "sgd"}


WRAPPERS = {
    "chain": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)),
    "masked": lambda: optax.masked(optax.adam(0.1), {"k": True, "b": False}),
    "multi_transform": lambda: optax.multi_transform(
        {"adam": optax.adam(0.1), "sgd": optax.sgd(0.1)}, _LABELS
    ),
    "MultiSteps": lambda: optax.MultiSteps(optax.adam(0.1), every_k_schedule=2),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
    "apply_if_finite": lambda: optax.apply_if_finite(optax.adam(0.1), 3),
}


def _placeholder_refusing_adam():
    """adam whose init reads a leaf (so optax's placeholder cannot run it): the path fallback."""
    inner = optax.adam(0.1)

    def init(params):
        _ = jax.tree.leaves(params)[0].shape
        return inner.init(params)

    return optax.GradientTransformation(init, inner.update)


WRAPPERS["custom (by path)"] = _placeholder_refusing_adam


@pytest.mark.parametrize("method", ["rigl", "set"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_regrown_moments_are_zero_inside_every_wrapper(wrapper, method):
    p = {"k": W, "b": jnp.zeros(8)}
    tx = sparse.sparsify(
        WRAPPERS[wrapper](),
        method=method,
        schedule=sparse.periodic(0.5, 2, end_step=10),
        drop_fraction=0.5,
    )
    state = tx.init(p)
    # Every per-parameter moment 1: a moment that is not reset stays far from 0.
    ones = lambda x: jnp.ones_like(x) if x.shape == (8, 8) else x
    state = state._replace(inner_state=jax.tree.map(ones, state.inner_state))
    old = np.asarray(state.masks[1])  # leaves: b, k
    _, new_state = jax.jit(tx.update)({"k": G, "b": jnp.ones(8)}, state, p)  # step 0: update
    new = np.asarray(new_state.masks[1])
    regrown = new & ~old
    assert regrown.sum() >= 8  # of d = round(0.5 * 32) grown, some were pruned before
    adams = _adam_states(new_state.inner_state)
    assert adams, wrapper
    for adam in adams:
        for moment in (adam.mu["k"], adam.nu["k"]):
            moment = np.asarray(moment)
            assert (moment[regrown] == 0).all(), wrapper
            assert (moment[new & old] != 0).all(), wrapper  # the rest kept (not zeroed)
    if wrapper == "MultiSteps":
        acc = np.asarray(new_state.inner_state.acc_grads["k"])
        assert (acc[regrown] == 0).all()


@pytest.mark.parametrize(
    "pattern, want",
    [
        ("unstructured", lambda w, g: saliency_mask(w, g, 0.5)),
        (sparse.NM(2, 4), lambda w, g: nm_mask(w * g, 2, 4)),
    ],
)
def test_saliency_masks_come_from_the_first_gradient(pattern, want):
    p = {"w": W}
    for schedule in (sparse.constant(0.5), sparse.one_shot(0.5)):
        tx = sparse.sparsify(optax.sgd(0.0), method="saliency", schedule=schedule, pattern=pattern)
        state = tx.init(p)
        assert sparse.sparsity_of(state) == 0.0  # dense until there is a gradient
        u, state = tx.update({"w": G}, state, p)
        mask = sparse.masks_of(state, p)["w"]
        np.testing.assert_array_equal(mask, want(W, G))
        assert not np.array_equal(mask, nm_mask(W, 2, 4))  # not magnitude
        assert not np.array_equal(mask, np.abs(np.asarray(W)) >= np.median(np.abs(W)))
        q = np.asarray(optax.apply_updates(p, u)["w"])
        assert (q[~np.asarray(mask)] == 0).all()


def _compiles(tx, p):
    state = tx.init(p)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.tree.map(jnp.cos, p), s, p)
        return optax.apply_updates(p, u), s

    for _ in range(3):
        p, state = step(p, state)
    return step._cache_size()


def test_jitted_step_compiles_once_like_plain_optax():
    p = {"k": W, "b": jnp.zeros(8)}
    assert _compiles(optax.adam(0.1), p) == 1
    for pack in (False, True):
        for method, schedule in (("magnitude", 0.5), ("rigl", sparse.periodic(0.5, 2))):
            tx = sparse.sparsify(optax.adam(0.1), method=method, schedule=schedule, pack=pack)
            assert _compiles(tx, p) == 1, (pack, method)
            # Committed parameters: every state leaf committed alike (plain adam compiles
            # twice here, its count is not committed).
            assert _compiles(tx, jax.device_put(p, jax.devices()[0])) == 1, (pack, method)
            leaves = jax.tree.leaves(tx.init(jax.device_put(p, jax.devices()[0])))
            assert all(x.committed for x in leaves)


_MESH = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from hadamard_jax import sparse

    specs = {"w": P("data", "model"), "s": P(None, "data", "model"), "b": P("model")}
    k = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k[0], (16, 8)), "s": jax.random.normal(k[1], (2, 16, 8)),
              "b": jnp.zeros(8), "v": jax.random.normal(k[2], (8, 16))}
    loss = lambda p: sum(jnp.sum(jnp.sin(3 * v)) for v in p.values())

    def run(params, method, pack):
        sched = sparse.periodic(0.5, 2) if method == "rigl" else sparse.polynomial(0.75, 0, 4)
        tx = sparse.sparsify(optax.adam(0.1), method=method, schedule=sched, pack=pack)
        state = tx.init(params)
        step = jax.jit(lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(
            *tx.update(jax.grad(loss)(p), s, p)))
        for _ in range(3):
            params, state = step(params, state)
        return params, sparse.masks_of(state, params), step._cache_size()

    single = {method: run(params, method, False) for method in ("magnitude", "rigl")}
    cases = {AxisType.Explicit: [("magnitude", True), ("rigl", True), ("rigl", False)],
             AxisType.Auto: [("magnitude", True), ("rigl", False)]}
    for axis_type, runs in cases.items():
        mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
        # "v" spelled as a jitted step spells it (a user's own parameter, not our state).
        specs["v"] = P("model", None) if axis_type == AxisType.Explicit else P("model")
        for method, pack in runs:
            want_p, want_m, _ = single[method]
            with jax.set_mesh(mesh):
                sharded = {n: jax.device_put(v, NamedSharding(mesh, specs[n]))
                       for n, v in params.items()}
                p8, m8, compiles = run(sharded, method, pack)
                assert compiles == 1, (axis_type, method, pack, compiles)
                for n in ("w", "s", "v"):
                    np.testing.assert_array_equal(np.asarray(m8[n]), np.asarray(want_m[n]))
                    np.testing.assert_allclose(np.asarray(p8[n]), np.asarray(want_p[n]),
                                               atol=1e-5)
                    assert p8[n].sharding.is_equivalent_to(sharded[n].sharding, p8[n].ndim)
            print(axis_type, method, pack, "OK")
    print("PACKED MESH OK")
    """
)


def test_packed_masks_under_explicit_and_auto_mesh_axes():
    run_on_8_cpu_devices(_MESH, "PACKED MESH OK")


def test_bad_arguments_are_named_at_construction():
    with pytest.raises(TypeError, match="tx must be an optax GradientTransformation.*NoneType"):
        sparse.sparsify(None, schedule=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"tx must be.*factory: call it, e.g. optax.adam\("):
        sparse.sparsify(optax.adam, schedule=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sparsify: schedule must be a Schedule.*None"):
        sparse.sparsify(optax.sgd(0.1), schedule=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sparsify: schedule must be a Schedule.*1.5"):
        sparse.sparsify(optax.sgd(0.1), schedule=1.5)
    with pytest.raises(TypeError, match="filter must be a callable"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.5, filter=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"overrides key '\(\[' is not a valid regular"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.5, overrides={"([": 0.5})
    with pytest.raises(TypeError, match="skip_update_on_mask_step"):
        sparse.sparsify(optax.sgd(0.1), schedule=0.5, skip_update_on_mask_step=1)
    for bad in (2.0, -0.1):
        with pytest.raises(ValueError, match="erk_densities: sparsity"):
            sparse.erk_densities([(4, 4)], bad)
    with pytest.raises(ValueError, match="layers needs one count per shape"):
        sparse.erk_densities([(4, 4)], 0.5, [1, 2])
    p = {"w": W, "s": normal(2, (2, 8, 8))}
    for b in (2, 3):
        tx = sparse.sparsify(optax.sgd(0.1), schedule=0.5, batch_dims=b)
        with pytest.raises(ValueError, match=rf"batch_dims={b} leaves no layer axis in [sw]"):
            tx.init(p)
    # batch_dims below every pruned rank is fine.
    masks = sparse.masks_of(sparse.sparsify(optax.sgd(0.1), schedule=0.5, batch_dims=1).init(p), p)
    assert (np.asarray(masks["w"]).sum(axis=1) == 4).all()


@pytest.mark.parametrize("skip", [False, True])
def test_skip_update_on_mask_step(skip):
    p = {"k": W, "b": jnp.zeros(8)}
    tx = _rigl(optax.adam(0.1), skip_update_on_mask_step=skip)
    state = tx.init(p)
    step = jax.jit(
        lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(
            *tx.update({"k": G, "b": jnp.ones(8)}, s, p)
        )
    )
    q, state = step(p, state)  # step 0: a mask-update step
    kept = np.asarray(sparse.masks_of(state, q)["k"])
    old_mask = np.asarray(sparse.masks_of(tx.init(p), p)["k"])
    survivors = kept & old_mask
    adam = _adam_states(state.inner_state)[0]
    if skip:
        np.testing.assert_array_equal(np.asarray(q["k"])[survivors], np.asarray(W)[survivors])
        np.testing.assert_array_equal(q["b"], p["b"])
        assert int(adam.count) == 0
    else:
        assert (np.asarray(q["k"])[survivors] != np.asarray(W)[survivors]).all()
        assert int(adam.count) == 1
    assert (np.asarray(q["k"])[~kept] == 0).all()
    r, state = step(q, state)  # step 1: not a mask-update step, adam steps either way
    assert int(_adam_states(state.inner_state)[0].count) == (1 if skip else 2)
    assert not np.array_equal(r["b"], q["b"])
