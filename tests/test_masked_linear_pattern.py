"""``MaskedLinear(pattern=)`` (NNX and Linen) and ``ste_mask(pattern=)``: the learned and the
magnitude-initialised masks keep whole units of the same pattern objects as the mask makers,
``prune`` and ``sparsify``; the default (unstructured) is the mask of before."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax as hj
import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn
from tests.utils import run_on_8_cpu_devices

N_IN, N_OUT = 8, 4
X = jax.random.normal(jax.random.key(1), (2, N_IN))
#: Scores with large negative entries: a value ranking keeps them last, a magnitude one first.
SCORES = jax.random.normal(jax.random.key(2), (N_IN, N_OUT)) * jnp.array([[1.0, -3.0, 1.0, 2.0]])
SCORES_INIT = jax.nn.initializers.constant(SCORES)


def _nnx(**kw):
    return hn.MaskedLinear(N_IN, N_OUT, **kw, rngs=nnx.Rngs(0))


def _linen_mask(**kw):
    """The Linen layer's mask (its ``kernel * mask`` over its kernel) and its variables."""
    module = hl.MaskedLinear(N_OUT, use_bias=False, **kw)
    variables = module.init(jax.random.key(0), X)
    kernel = variables["params"]["kernel"]
    eye = jnp.eye(N_IN)
    masked = module.apply(variables, eye)  # rows of kernel * mask
    return np.where(kernel != 0, np.asarray(masked) / np.asarray(kernel), np.nan), variables


# --- the default is today's mask ----------------------------------------------------------------


@pytest.mark.parametrize("pattern", [None, "unstructured", hj.Unstructured()])
def test_default_pattern_is_the_unstructured_ste_mask(pattern):
    kw = {} if pattern is None else {"pattern": pattern}
    layer = _nnx(mask_type="ste", sparsity=0.5, scores_init=SCORES_INIT, **kw)
    np.testing.assert_array_equal(layer.current_mask(), hj.ste_mask(SCORES, sparsity=0.5))
    assert layer.pattern == hj.Unstructured()
    fixed = _nnx(**kw)
    assert fixed.mask[...].all() and fixed.mask[...].dtype == jnp.bool_


# --- every pattern, NNX and Linen ---------------------------------------------------------------


def _assert_obeys(pattern, mask, scores, sparsity):
    """``mask`` keeps whole units of ``pattern``, the right count, the best by value."""
    mask = np.asarray(mask).astype(bool)
    s = np.asarray(scores)
    if isinstance(pattern, hj.NM):  # n of every m along the input axis, the n largest
        groups, values = mask.reshape(-1, pattern.m, N_OUT), s.reshape(-1, pattern.m, N_OUT)
        np.testing.assert_array_equal(groups.sum(axis=1), pattern.n)
        top = np.sort(values, axis=1)[:, -pattern.n :]
        kept = np.sort(np.where(groups, values, -np.inf), axis=1)[:, -pattern.n :]
        np.testing.assert_array_equal(kept, top)
        return
    if isinstance(pattern, hj.Block):
        bi, bo = pattern.shape
        blocks = mask.reshape(N_IN // bi, bi, N_OUT // bo, bo).transpose(0, 2, 1, 3)
        unit_kept = blocks.reshape(*blocks.shape[:2], -1)
        assert (unit_kept.all(-1) | ~unit_kept.any(-1)).all()  # whole blocks
        unit_kept = unit_kept[..., 0].ravel()
        unit_scores = s.reshape(N_IN // bi, bi, N_OUT // bo, bo).mean(axis=(1, 3)).ravel()
    else:  # Channel: whole slices along its axis, ranked by the sum of the scores
        moved = np.moveaxis(mask, pattern.axis, 0).reshape(mask.shape[pattern.axis], -1)
        assert (moved.all(-1) | ~moved.any(-1)).all()  # whole channels
        unit_kept = moved[:, 0]
        unit_scores = np.moveaxis(s, pattern.axis, 0).reshape(len(unit_kept), -1).sum(-1)
    units = unit_kept.size
    assert unit_kept.sum() == units - round(sparsity * units)
    assert unit_scores[unit_kept].min() >= unit_scores[~unit_kept].max()


PATTERNS = [
    (hj.NM(2, 4), None),
    (hj.Block((2, 2)), 0.5),
    (hj.Channel(), 0.25),
    (hj.Channel(axis=-2, norm=1), 0.5),
]


@pytest.mark.parametrize(("pattern", "sparsity"), PATTERNS, ids=str)
def test_ste_mask_obeys_the_pattern_nnx_and_linen(pattern, sparsity):
    kw = dict(mask_type="ste", sparsity=sparsity, pattern=pattern, scores_init=SCORES_INIT)
    mask = _nnx(**kw).current_mask()
    _assert_obeys(pattern, mask, SCORES, 0.5 if sparsity is None else sparsity)
    np.testing.assert_array_equal(mask, hj.ste_mask(SCORES, sparsity=sparsity, pattern=pattern))
    linen_mask, _ = _linen_mask(**kw)
    np.testing.assert_array_equal(linen_mask, mask)


@pytest.mark.parametrize(("pattern", "sparsity"), PATTERNS[:2], ids=str)
def test_fixed_mask_starts_magnitude_pruned_in_the_pattern(pattern, sparsity):
    layer = _nnx(pattern=pattern, sparsity=sparsity)
    kernel = layer.kernel[...]
    expected = pattern.mask(kernel, sparsity)
    np.testing.assert_array_equal(layer.mask[...], expected)
    _assert_obeys(pattern, layer.mask[...], jnp.abs(kernel), 0.5)
    linen_mask, variables = _linen_mask(pattern=pattern, sparsity=sparsity)
    stored = variables["masks"]["mask"]
    np.testing.assert_array_equal(stored, pattern.mask(variables["params"]["kernel"], sparsity))
    np.testing.assert_array_equal(np.nan_to_num(linen_mask, nan=0.0), stored)


def test_channel_l2_ranks_signed_scores_by_value():
    # A channel of large negative scores has the largest L2 norm but ranks last by value.
    scores = jnp.array([[1.0, -5.0, 0.5], [1.0, -5.0, 0.5]])
    mask = hj.ste_mask(scores, sparsity=1 / 3, pattern=hj.Channel(norm=2))
    np.testing.assert_array_equal(mask, [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    magnitude = hj.Channel(norm=2).mask(scores, 1 / 3)  # by norm: the smallest, 0.5, goes
    np.testing.assert_array_equal(magnitude, [[True, True, False], [True, True, False]])


# --- straight-through gradient ------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [hj.NM(2, 4), hj.Channel()], ids=str)
def test_scores_get_the_straight_through_gradient(pattern):
    sparsity = None if isinstance(pattern, hj.NM) else 0.5
    layer = _nnx(mask_type="ste", sparsity=sparsity, pattern=pattern, use_bias=False)
    g_out = jax.random.normal(jax.random.key(4), (2, N_OUT))

    def loss(layer):
        return jnp.sum(layer(X) * g_out)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(layer)
    expected = (X.T @ g_out) * layer.kernel[...]  # d loss / d mask, passed to the scores
    np.testing.assert_allclose(grads["scores"][...], expected, rtol=1e-5, atol=1e-6)
    pruned = np.asarray(layer.current_mask()) == 0
    assert pruned.any() and np.all(np.asarray(grads["scores"][...])[pruned] != 0)

    module = hl.MaskedLinear(N_OUT, mask_type="ste", sparsity=sparsity, pattern=pattern)
    params = module.init(jax.random.key(0), X)["params"]
    g = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, X) * g_out))(params)
    np.testing.assert_allclose(g["scores"], (X.T @ g_out) * params["kernel"], rtol=1e-5, atol=1e-6)


# --- strings and errors -------------------------------------------------------------------------


def test_strings_are_the_default_objects():
    by_name = _nnx(mask_type="ste", pattern="nm", scores_init=SCORES_INIT)
    assert by_name.pattern == hj.NM(2, 4, 0)  # resolved for the kernel [in, out]
    np.testing.assert_array_equal(by_name.current_mask(), hj.ste_mask(SCORES, pattern=hj.NM(2, 4)))
    channel = hl.MaskedLinear(N_OUT, mask_type="ste", sparsity=0.5, pattern="channel")
    assert channel.options.pattern == hj.Channel()


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (dict(mask_type="hard_concrete", pattern=hj.NM(2, 4)), ValueError,
         r"pattern=NM\(.*mask_type='hard_concrete'"),
        (dict(mask_type="ste", threshold=0.1, pattern=hj.NM(2, 4)), ValueError,
         r"threshold= keeps single scores; pattern=NM"),
        (dict(mask_type="ste", pattern=hj.Block((2, 2))), ValueError,
         r"pattern=Block\(.*needs sparsity="),
        (dict(mask_type="ste", sparsity=0.25, pattern=hj.NM(2, 4)), ValueError,
         r"2:4 pattern has sparsity 0.5, but sparsity=0.25"),
        (dict(pattern="block"), ValueError, r"pattern='block' needs arguments"),
        (dict(pattern="diagonal"), ValueError, r"unknown pattern 'diagonal'"),
        (dict(pattern=2), TypeError, r"MaskedLinear: pattern must be"),
        (dict(pattern=hj.NM(2, 4), mask_init=jax.nn.initializers.zeros), ValueError,
         r"mask_init and sparsity=None/pattern=NM"),
        (dict(mask_type="hard_concrete", sparsity=0.5), ValueError,
         r"sparsity/threshold apply to mask_type='ste'"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(kw, error, match):
    with pytest.raises(error, match=match):
        _nnx(**kw)
    with pytest.raises(error, match=match):
        hl.MaskedLinear(N_OUT, **kw)


def test_a_pattern_that_does_not_fit_the_kernel():
    match = r"MaskedLinear: NM.m=3 must divide the length of axis 0, got kernel.shape=\(8, 4\)"
    with pytest.raises(ValueError, match=match):
        _nnx(mask_type="ste", pattern=hj.NM(1, 3))
    with pytest.raises(ValueError, match=match):
        hl.MaskedLinear(N_OUT, mask_type="ste", pattern=hj.NM(1, 3)).init(jax.random.key(0), X)


def test_ste_mask_pattern_errors():
    s = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"ste_mask: pattern=NM\(.*by sparsity=, got k=2"):
        hj.ste_mask(s, k=2, pattern="nm")
    with pytest.raises(ValueError, match=r"ste_mask: pattern=Channel\(.*needs sparsity="):
        hj.ste_mask(s, pattern="channel")


_EXPLICIT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj
    from hadamard_jax._layers import masks

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    sharding = NamedSharding(mesh, P("data", "model"))
    scores = jax.device_put(jax.random.normal(jax.random.key(0), (8, 4)), sharding)
    with jax.set_mesh(mesh):
        for pattern, sparsity in [(hj.NM(2, 4), None), (hj.Channel(), 0.5)]:
            ste = lambda s: masks.ste_units(s, sparsity, pattern)
            out = jax.jit(ste)(scores)
            grad = jax.jit(jax.grad(lambda s: (ste(s) * s).sum()))(scores)
            expected = hj.ste_mask(jax.device_get(scores), sparsity=sparsity, pattern=pattern)
            assert (jax.device_get(out) == expected).all(), pattern
            assert out.sharding.spec == grad.sharding.spec == sharding.spec, out.sharding.spec
    print("PATTERN EXPLICIT OK")
    """
)


def test_pattern_ste_mask_under_explicit_mesh_axes():
    # The kernel-wide ranking gathers the scores; the mask and the gradient keep their sharding.
    run_on_8_cpu_devices(_EXPLICIT, "PATTERN EXPLICIT OK")
