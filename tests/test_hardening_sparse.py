"""Sparse training under outside testing (issue 22): non-float leaves, RigL/SET moment resets in
every optax wrapper, saliency from the first gradient, one compilation, packed masks under
Explicit mesh axes, argument errors, one N:M convention, jaxpruner's skipped update."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from hadamard_jax import nm_mask, saliency_mask, sparse
from tests.utils import normal, run_on_8_cpu_devices

W = normal(0, (8, 8))
G = normal(1, (8, 8))


def _rigl(tx, **kw):
    return sparse.sparsify(
        tx, method="rigl", schedule=sparse.periodic(0.5, 2, end_step=10), drop_fraction=0.5, **kw
    )


# --- 1. only inexact leaves are pruned; int/bool/float0 pass through -------------------------


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


# --- 2. RigL/SET reset the moments of regrown weights inside every optax wrapper -------------


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


# --- 3. saliency masks come from |w * grad| at the first update ------------------------------


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


# --- 4. a jitted step compiles once ----------------------------------------------------------


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


# --- 5. pack=True under Explicit (and Auto) mesh axes -----------------------------------------

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


# --- 9. bad arguments ------------------------------------------------------------------------


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


# --- 10. one N:M convention ------------------------------------------------------------------


def test_nm_default_axis_is_the_input_axis_everywhere():
    stack = normal(3, (2, 8, 8))
    tx = sparse.sparsify(optax.sgd(0.0), schedule=sparse.one_shot(0.5), pattern=sparse.NM(2, 4))
    p = {"w": W, "s": stack}
    _, state = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    via_sparsify = sparse.masks_of(state, p)
    layer = hn.MaskedLinear(8, 8, rngs=nnx.Rngs(0))
    layer.kernel[...] = W
    hn.prune(layer, None, method="nm", n=2, m=4)
    variables = {"params": {"kernel": W}, "masks": {"mask": jnp.ones((8, 8), bool)}}
    via_linen = hl.prune(variables, None, method="nm", n=2, m=4)["masks"]["mask"]
    want = nm_mask(W, 2, 4)
    # Groups of 4 consecutive inputs (axis -2) of each output unit keep 2.
    assert (np.asarray(want).reshape(2, 4, 8).sum(axis=1) == 2).all()
    np.testing.assert_array_equal(want, nm_mask(W, 2, 4, axis=-2))
    np.testing.assert_array_equal(via_sparsify["w"], want)
    np.testing.assert_array_equal(layer.mask[...], want)
    np.testing.assert_array_equal(via_linen, want)
    # Stacked kernels [*stack, in, out]: the input axis of each layer.
    np.testing.assert_array_equal(via_sparsify["s"], nm_mask(stack, 2, 4))
    np.testing.assert_array_equal(nm_mask(stack, 2, 4), nm_mask(stack, 2, 4, axis=1))
    # A rank-1 layer groups along its only axis.
    np.testing.assert_array_equal(nm_mask(W[0], 2, 4), nm_mask(W[0], 2, 4, axis=-1))
    np.testing.assert_array_equal(nm_mask(W, 2, 4, batch_dims=1), nm_mask(W, 2, 4, axis=-1))


# --- jaxpruner's skipped update on mask-update steps -----------------------------------------


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
