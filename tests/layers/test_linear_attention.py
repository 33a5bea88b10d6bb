"""GatedDeltaNet and GatedLinearAttention (NNX and Linen): float64 NumPy ports of
flash-linear-attention's layers (torch weight layout, token-by-token recurrences) against ours
with the converted weights, NNX == Linen, the decode step and a prefill + continue against the
parallel form, gradients, errors, and ``mesh_axis=`` passed to the op (sequence sharding on 8 CPU
devices; the op's own sharding tests: ``tests/test_linear_attention_sharding.py``)."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from hadamard_jax._layers import linear_attention as L
from hadamard_jax.nnx import _common as C
from tests.utils import assert_tree_allclose, check_grads, normal, run_on_8_cpu_devices

# Small, but every feature on: grouped values (Hv = 2 H), V != K, T not a multiple of the chunk.
B, T, D = 2, 9, 12
H, K, HV, EXPAND, W = 2, 4, 4, 1.5, 3
V = int(K * EXPAND)
CFG = dict(num_heads=H, head_dim=K, expand_v=EXPAND, num_v_heads=HV, conv_size=W, chunk_size=4)
# GLA: key_dim = 12 * 2/3 = 8 (K_G = 4 per head), value_dim = 12 (V_G = 6), rank-3 gate.
KG, VG, R = 4, 6, 3
GLA_CFG = dict(
    num_heads=H,
    expand_k=2 / 3,
    expand_v=1.0,
    use_short_conv=True,
    conv_size=W,
    gate_low_rank_dim=R,
    chunk_size=4,
)
LAYERS = {
    "gdn": (hn.GatedDeltaNet, hl.GatedDeltaNet, CFG),
    "gla": (hn.GatedLinearAttention, hl.GatedLinearAttention, GLA_CFG),
}
TOL = dict(rtol=2e-5, atol=2e-5)


def _x(shape=(B, T, D), seed=0):
    return normal(seed, shape)


def _nnx(kind="gdn", **kw):
    cls, _, cfg = LAYERS[kind]
    return cls(D, **{**cfg, **kw}, rngs=nnx.Rngs(0))


def _set(layer, params):
    for name, value in params.items():
        getattr(layer, name)[...] = value
    return layer


# --- a port of fla's GatedDeltaNet.forward, in float64 NumPy, on torch-layout weights ---------


def fla_state_dict(seed=0, conv=True):
    rng = np.random.default_rng(seed)
    kd, vd = H * K, HV * V
    shapes = {
        "q_proj.weight": (kd, D),
        "k_proj.weight": (kd, D),
        "v_proj.weight": (vd, D),
        "a_proj.weight": (HV, D),
        "b_proj.weight": (HV, D),
        "g_proj.weight": (vd, D),
        "o_proj.weight": (D, vd),
        "o_norm.weight": (V,),
        "dt_bias": (HV,),
    }
    if conv:
        shapes |= {
            "q_conv1d.weight": (kd, 1, W),
            "k_conv1d.weight": (kd, 1, W),
            "v_conv1d.weight": (vd, 1, W),
        }
    sd = {k: (0.5 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    sd["A_log"] = np.log(rng.uniform(0.5, 8.0, HV)).astype(np.float32)
    return sd


def fla_reference(sd, x, *, conv=True, eps=1e-5, neg=False):
    """fla ``GatedDeltaNet.forward`` (use_gate, chunk or fused_recurrent: the same math) and
    ``naive_recurrent_gated_delta_rule``, one token at a time, float64."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(x, np.float64)

    def silu(u):
        return u / (1 + np.exp(-u))

    def lin(name, u):
        return u @ sd[f"{name}.weight"].T

    def short_conv(name, u):  # nn.Conv1d(groups=D, padding=W-1)[..., :T], then SiLU
        w = sd[f"{name}.weight"][:, 0, :]  # [D, W]
        up = np.concatenate([np.zeros((u.shape[0], W - 1, u.shape[2])), u], axis=1)
        return silu(sum(w[:, i] * up[:, i : i + u.shape[1]] for i in range(W)))

    q, k, v = lin("q_proj", x), lin("k_proj", x), lin("v_proj", x)
    if conv:
        q, k, v = short_conv("q_conv1d", q), short_conv("k_conv1d", k), short_conv("v_conv1d", v)
    else:
        q, k, v = silu(q), silu(k), silu(v)
    b, t = x.shape[:2]
    q, k, v = q.reshape(b, t, H, K), k.reshape(b, t, H, K), v.reshape(b, t, HV, V)
    q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
    k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    q, k = np.repeat(q, HV // H, axis=2), np.repeat(k, HV // H, axis=2)
    beta = 1 / (1 + np.exp(-lin("b_proj", x))) * (2.0 if neg else 1.0)
    g = -np.exp(sd["A_log"]) * np.log1p(np.exp(lin("a_proj", x) + sd["dt_bias"]))
    q = q * K**-0.5
    s = np.zeros((b, HV, K, V))
    o = np.zeros((b, t, HV, V))
    for i in range(t):
        s = s * np.exp(g[:, i])[..., None, None]
        u = (v[:, i] - (s * k[:, i, ..., None]).sum(-2)) * beta[:, i, :, None]
        s = s + k[:, i, ..., None] * u[..., None, :]
        o[:, i] = (s * q[:, i, ..., None]).sum(-2)
    gate = lin("g_proj", x).reshape(b, t, HV, V)
    o = o / np.sqrt((o * o).mean(-1, keepdims=True) + eps) * sd["o_norm.weight"] * silu(gate)
    return lin("o_proj", o.reshape(b, t, HV * V)), s


@pytest.mark.parametrize("conv,neg", [(True, False), (False, True)])
def test_gated_delta_net_matches_fla_port(conv, neg):
    sd = fla_state_dict(conv=conv)
    x = _x()
    want, want_state = fla_reference(sd, x, conv=conv, neg=neg)
    layer = _set(_nnx(use_short_conv=conv, allow_neg_eigval=neg), L.gdn_params_from_fla(sd))
    y, cache = layer(x)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cache["state"], want_state, rtol=1e-4, atol=1e-4)


def gla_state_dict(seed=0, conv=True):
    rng = np.random.default_rng(seed)
    kd, vd = H * KG, H * VG
    shapes = {
        "q_proj.weight": (kd, D),
        "k_proj.weight": (kd, D),
        "v_proj.weight": (vd, D),
        "g_proj.weight": (vd, D),
        "gk_proj.0.weight": (R, D),
        "gk_proj.1.weight": (kd, R),
        "gk_proj.1.bias": (kd,),
        "g_norm_swish_gate.weight": (VG,),
        "o_proj.weight": (D, vd),
    }
    if conv:
        shapes |= {
            "q_conv1d.weight": (kd, 1, W),
            "k_conv1d.weight": (kd, 1, W),
            "v_conv1d.weight": (vd, 1, W),
        }
    return {k: (0.7 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def gla_reference(sd, x, *, conv=True, clamp_min=None, eps=1e-5):
    """fla ``GatedLinearAttention.forward`` (fused gated norm) with ``naive_recurrent_gla``,
    one token at a time, float64."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(x, np.float64)

    def silu(u):
        return u / (1 + np.exp(-u))

    def lin(name, u):
        return u @ sd[f"{name}.weight"].T

    def short_conv(name, u):
        w = sd[f"{name}.weight"][:, 0, :]
        up = np.concatenate([np.zeros((u.shape[0], W - 1, u.shape[2])), u], axis=1)
        return silu(sum(w[:, i] * up[:, i : i + u.shape[1]] for i in range(W)))

    q, k, v = lin("q_proj", x), lin("k_proj", x), lin("v_proj", x)
    if conv:
        q, k, v = short_conv("q_conv1d", q), short_conv("k_conv1d", k), short_conv("v_conv1d", v)
    gk = lin("gk_proj.1", lin("gk_proj.0", x)) + sd["gk_proj.1.bias"]
    b, t = x.shape[:2]
    q, k = q.reshape(b, t, H, KG) * KG**-0.5, k.reshape(b, t, H, KG)
    v, gk = v.reshape(b, t, H, VG), gk.reshape(b, t, H, KG)
    gk = -np.log1p(np.exp(-gk)) / 16
    if clamp_min is not None:
        gk = np.maximum(gk, clamp_min)
    s = np.zeros((b, H, KG, VG))
    o = np.zeros((b, t, H, VG))
    for i in range(t):
        s = s * np.exp(gk[:, i])[..., None] + k[:, i, ..., None] * v[:, i, :, None, :]
        o[:, i] = (s * q[:, i, ..., None]).sum(-2)
    gate = lin("g_proj", x).reshape(b, t, H, VG)
    w = sd["g_norm_swish_gate.weight"]
    o = o / np.sqrt((o * o).mean(-1, keepdims=True) + eps) * w * silu(gate)
    return lin("o_proj", o.reshape(b, t, H * VG)), s


@pytest.mark.parametrize("conv,clamp_min", [(True, None), (False, -0.02)])
def test_gated_linear_attention_matches_fla_port(conv, clamp_min):
    sd = gla_state_dict(conv=conv)
    x = _x()
    want, want_state = gla_reference(sd, x, conv=conv, clamp_min=clamp_min)
    layer = _nnx("gla", use_short_conv=conv, clamp_min=clamp_min)
    y, cache = _set(layer, L.gla_params_from_fla(sd))(x)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cache["state"], want_state, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_decode_equals_parallel(kind):
    layer = _nnx(kind)
    x = _x(seed=3)
    y, cache = layer(x)

    @nnx.jit
    def decode(layer, x):
        xs = x.swapaxes(0, 1)
        return jax.lax.scan(lambda c, x_t: layer.step(c, x_t), layer.init_cache(B), xs)

    c_dec, y_dec = decode(layer, x)
    np.testing.assert_allclose(y_dec.swapaxes(0, 1), y, **TOL)
    assert_tree_allclose(c_dec, cache, **TOL)
    # A prefill of 5 tokens, then the rest as a sequence from its cache.
    y1, c1 = layer(x[:, :5])
    y2, c2 = layer(x[:, 5:], c1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, **TOL)
    assert_tree_allclose(c2, cache, **TOL)


def test_gated_delta_net_grads():
    cfg = dict(num_heads=1, head_dim=2, expand_v=1.0, conv_size=2, chunk_size=2)
    layer = hn.GatedDeltaNet(3, **cfg, rngs=nnx.Rngs(2))
    params = C.values(layer, layer._names)

    def f(x, a_log, conv):
        p = {**params, "A_log": a_log, "q_conv1d": conv}
        y, c = L.gated_delta_net(x, p, None, layer.options)
        return y, c["state"]

    x = _x((1, 3, 3), seed=5)
    args = (x, params["A_log"], params["q_conv1d"])
    check_grads(f, args, 1, modes=["fwd", "rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "kw,exc,name",
    [
        (dict(num_heads=0), ValueError, "num_heads"),
        (dict(head_dim=2.0), TypeError, "head_dim"),
        (dict(expand_v=0.3), ValueError, "expand_v"),
        (dict(num_v_heads=3), ValueError, "num_v_heads"),
        (dict(use_short_conv="yes"), TypeError, "use_short_conv"),
        (dict(conv_size=0), ValueError, "conv_size"),
        (dict(allow_neg_eigval=None), TypeError, "allow_neg_eigval"),
        (dict(norm_eps=0.0), ValueError, "norm_eps"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(kernel_init=3), TypeError, "kernel_init"),
        (dict(param_dtype=None), TypeError, "param_dtype"),
    ],
)
def test_gated_delta_net_bad_options(kw, exc, name):
    with pytest.raises(exc, match=name):
        _nnx(**kw)
    with pytest.raises(exc, match=name):
        hl.GatedDeltaNet(D, **{**CFG, **kw})


@pytest.mark.parametrize(
    "kw,exc,name",
    [
        (dict(expand_k=0.1), ValueError, "expand_k"),
        (dict(expand_v=0.25), ValueError, "expand_v"),
        (dict(gate_logit_normalizer=0), ValueError, "gate_logit_normalizer"),
        (dict(gate_low_rank_dim=0), ValueError, "gate_low_rank_dim"),
        (dict(clamp_min=0.5), ValueError, "clamp_min"),
        (dict(clamp_min="low"), TypeError, "clamp_min"),
        (dict(bias_init=None), TypeError, "bias_init"),
        (dict(use_short_conv=1), TypeError, "use_short_conv"),
    ],
)
def test_gated_linear_attention_bad_options(kw, exc, name):
    with pytest.raises(exc, match=name):
        _nnx("gla", **kw)
    with pytest.raises(exc, match=name):
        hl.GatedLinearAttention(D, **{**GLA_CFG, **kw})


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_bad_calls(kind):
    layer = _nnx(kind)
    with pytest.raises(ValueError, match="x.shape"):
        layer(jnp.ones((B, D)))
    with pytest.raises(ValueError, match="in_features"):
        layer(jnp.ones((B, T, D + 1)))
    with pytest.raises(ValueError, match="x.shape"):
        layer.step(None, jnp.ones((B, 1, D)))
    cache = layer.init_cache(B)
    with pytest.raises(ValueError, match="keys"):
        layer(_x(), {k: v for k, v in cache.items() if k != "q_conv"})
    with pytest.raises(ValueError, match=r"cache\['state'\]"):
        layer.step({**cache, "state": cache["state"][:1]}, jnp.ones((B, D)))
    with pytest.raises(TypeError, match="cache"):
        layer(_x(), cache["state"])


def test_gated_linear_attention_grads():
    cfg = dict(num_heads=1, expand_k=2 / 3, expand_v=1.0, gate_low_rank_dim=2, chunk_size=2)
    layer = hn.GatedLinearAttention(3, **cfg, use_short_conv=True, conv_size=2, rngs=nnx.Rngs(2))
    params = C.values(layer, layer._names)

    def f(x, bias, conv):
        p = {**params, "gk_proj_1_bias": bias, "k_conv1d": conv}
        y, c = L.gated_linear_attention(x, p, None, layer.options)
        return y, c["state"]

    args = (_x((1, 3, 3), seed=6), params["gk_proj_1_bias"] - 1.0, params["k_conv1d"])
    check_grads(f, args, 1, modes=["fwd", "rev"], atol=2e-2, rtol=2e-2)


_LAYERS = textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp
    from flax import nnx
    from jax.sharding import AxisType
    import hadamard_jax.nnx as hn
    import hadamard_jax.linen as hl

    # The layers pass mesh_axis to their op: under an Auto mesh the recurrence runs per shard of
    # the time axis (T = 16 over 4 shards, chunks of 4) and the block equals the one-device one.
    x = jax.random.normal(jax.random.key(0), (2, 16, 8))
    mesh = jax.make_mesh((4, 2), ("seq", "model"), axis_types=(AxisType.Auto,) * 2)
    for cls, kw in ((hn.GatedDeltaNet, dict(head_dim=4)), (hn.GatedLinearAttention, {})):
        one = cls(8, num_heads=2, chunk_size=4, **kw, rngs=nnx.Rngs(0))
        split = cls(8, num_heads=2, chunk_size=4, **kw, mesh_axis="seq", rngs=nnx.Rngs(0))
        want = jax.jit(lambda x: one(x))(x)
        with jax.set_mesh(mesh):
            got = jax.jit(lambda x: split(x))(x)
            hlo = jax.jit(lambda x: split(x)).lower(x).compile().as_text()
        assert "all-reduce" in hlo, cls  # the shards' (transition, state) pairs moved
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
    linen = hl.GatedDeltaNet(8, num_heads=2, head_dim=4, chunk_size=4, mesh_axis="seq")
    plain = hl.GatedDeltaNet(8, num_heads=2, head_dim=4, chunk_size=4)
    variables = plain.init(jax.random.key(1), x)  # the same variables: mesh_axis adds none
    want = plain.apply(variables, x)
    with jax.set_mesh(mesh):
        got = jax.jit(linen.apply)(variables, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
    print("LAYERS OK")
    """
)


def test_layers_pass_mesh_axis_to_the_op():
    run_on_8_cpu_devices(_LAYERS, "LAYERS OK")


@pytest.mark.parametrize("name", ["GatedDeltaNet", "GatedLinearAttention"])
def test_layer_mesh_axis_must_be_a_name(name):
    from flax import nnx

    import hadamard_jax.nnx as hn

    with pytest.raises(TypeError, match=f"{name}: mesh_axis must be a mesh axis name"):
        getattr(hn, name)(8, num_heads=2, mesh_axis=0, rngs=nnx.Rngs(0))
