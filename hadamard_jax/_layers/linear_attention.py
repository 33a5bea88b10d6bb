"""The matrix-state mixers ``GatedDeltaNet`` (and, when its op is in, ``GatedLinearAttention``),
shared by NNX and Linen.

One home for what the two front ends share: the argument checks (run once, at construction),
the parameter table (names, shapes and initialisers, flash-linear-attention's names), the
conversion of flash-linear-attention's PyTorch weights (:func:`gdn_params_from_fla`) and the pure
layer functions: the parallel form over a sequence (:func:`gated_delta_net`) and the decode step
(:func:`gated_delta_net_step`), both returning the decode cache.

Shapes: inputs ``[B, T, hidden_size]``, one token ``[B, hidden_size]``. The cache is a dict:
``"state"`` ``[B, Hv, K, V]`` (the delta rule's matrix state, ``S^T q`` reads it) and, with the
short convolution, ``"q_conv"``, ``"k_conv"`` ``[B, conv_size - 1, H * K]`` and ``"v_conv"``
``[B, conv_size - 1, Hv * V]``: the last ``conv_size - 1`` inputs of each convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax.typing import Dtype, PrecisionLike

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._src import checks

Params = Mapping[str, Any]

#: ``eps`` of the L2 normalisation of ``q`` and ``k`` (fla's ``l2norm``, Qwen3-Next's ``l2norm``).
L2_EPS = 1e-6

# --- Gated DeltaNet: options -------------------------------------------------------------------

GDN = "GatedDeltaNet"


def check_gated_delta_net(
    *,
    hidden_size: Any,
    num_heads: Any,
    head_dim: Any,
    expand_v: Any,
    num_v_heads: Any,
    use_short_conv: Any,
    conv_size: Any,
    allow_neg_eigval: Any,
    norm_eps: Any,
    chunk_size: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
) -> dict[str, Any]:
    """``GatedDeltaNet``'s arguments, checked once; returns the derived sizes.

    ``hidden_size, num_heads, head_dim, conv_size, chunk_size >= 1``; ``expand_v > 0`` with
    ``head_dim * expand_v`` a whole number; ``num_v_heads`` (``None``: ``num_heads``) a multiple
    of ``num_heads``; ``norm_eps > 0``. Returns ``{"num_v_heads", "head_k_dim",
    "head_v_dim", "key_dim", "value_dim"}``.
    """
    op = GDN
    options.size(hidden_size, "hidden_size", op)
    h = options.size(num_heads, "num_heads", op)
    k = options.size(head_dim, "head_dim", op)
    ev = checks.static_real(expand_v, "expand_v", op, lambda v: v > 0, "a number > 0")
    v = round(k * ev)
    if v < 1 or not math.isclose(k * ev, v, rel_tol=1e-5):
        raise ValueError(
            f"{op}: head_dim * expand_v must be a whole number >= 1 (the value head size), "
            f"got head_dim={k}, expand_v={ev} ({k * ev})."
        )
    hv = h if num_v_heads is None else options.size(num_v_heads, "num_v_heads", op)
    if hv % h:
        raise ValueError(
            f"{op}: num_v_heads={hv} must be a multiple of num_heads={h} (each key head serves "
            "num_v_heads // num_heads value heads)."
        )
    options.flag(use_short_conv, "use_short_conv", op)
    options.size(conv_size, "conv_size", op)
    options.flag(allow_neg_eigval, "allow_neg_eigval", op)
    checks.static_real(norm_eps, "norm_eps", op, lambda e: e > 0, "a number > 0")
    options.size(chunk_size, "chunk_size", op)
    options.dtypes(dtype, param_dtype, op)
    options.function(kernel_init, "kernel_init", op)
    return {
        "num_v_heads": hv,
        "head_k_dim": k,
        "head_v_dim": v,
        "key_dim": h * k,
        "value_dim": hv * v,
    }


# --- initialisers -------------------------------------------------------------------------------


def a_log_init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    """fla's ``A_log``: ``log A`` with ``A ~ U(0, 16)`` (the decay rate per value head)."""
    a = jax.random.uniform(key, shape, jnp.float32, minval=1e-4, maxval=16.0)
    return jnp.log(a).astype(dtype)


def dt_bias_init(
    dt_min: float = 0.001, dt_max: float = 0.1, dt_floor: float = 1e-4
) -> Callable[..., jax.Array]:
    """fla's ``dt_bias``: ``softplus^{-1}(dt)`` with ``log dt ~ U(log dt_min, log dt_max)``."""

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, dt_floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


def conv_init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    """PyTorch's depthwise ``Conv1d`` default: ``U(-1/sqrt(W), 1/sqrt(W))``, ``shape = [W, D]``."""
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def ones_init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    """The norm's scale: ones."""
    del key
    return jnp.ones(shape, dtype)


def gdn_param_table(
    hidden_size: int,
    sizes: Mapping[str, int],
    *,
    num_heads: int,
    conv_size: int,
    use_short_conv: bool,
    kernel_init: Callable[..., jax.Array],
) -> dict[str, tuple[tuple[int, ...], Callable[..., jax.Array]]]:
    """``{name: (shape, init)}`` of ``GatedDeltaNet``'s parameters, in creation order.

    Kernels are JAX's ``[in, out]`` (PyTorch's ``weight.T``); the convolutions ``[conv_size, D]``
    (fla's ``[D, 1, conv_size]`` weight as ``weight[:, 0, :].T``).
    """
    d, hv = hidden_size, sizes["num_v_heads"]
    kd, vd = sizes["key_dim"], sizes["value_dim"]
    del num_heads
    table: dict[str, tuple[tuple[int, ...], Callable[..., jax.Array]]] = {
        "q_proj": ((d, kd), kernel_init),
        "k_proj": ((d, kd), kernel_init),
        "v_proj": ((d, vd), kernel_init),
        "a_proj": ((d, hv), kernel_init),
        "b_proj": ((d, hv), kernel_init),
        "A_log": ((hv,), a_log_init),
        "dt_bias": ((hv,), dt_bias_init()),
    }
    if use_short_conv:
        table["q_conv1d"] = ((conv_size, kd), conv_init)
        table["k_conv1d"] = ((conv_size, kd), conv_init)
        table["v_conv1d"] = ((conv_size, vd), conv_init)
    table["g_proj"] = ((d, vd), kernel_init)
    table["o_norm"] = ((sizes["head_v_dim"],), ones_init)
    table["o_proj"] = ((vd, d), kernel_init)
    return table


def gdn_params_from_fla(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, jax.Array]:
    """flash-linear-attention ``GatedDeltaNet`` weights (``module.state_dict()``, as NumPy or
    array values) -> this library's parameter dict.

    ``{q,k,v,a,b,g,o}_proj.weight`` ``[out, in]`` -> ``{..}_proj`` ``[in, out]`` (transposed);
    ``{q,k,v}_conv1d.weight`` ``[D, 1, W]`` -> ``{..}_conv1d`` ``[W, D]``; ``o_norm.weight`` ->
    ``o_norm``; ``A_log``, ``dt_bias`` as they are. ``prefix``: e.g. ``"model.layers.0.attn."``.
    Convolution biases (fla's ``conv_bias=True``) are not supported.
    """
    out: dict[str, jax.Array] = {}
    for name in ("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj", "o_proj"):
        out[name] = jnp.asarray(state_dict[f"{prefix}{name}.weight"]).T
    for name in ("q_conv1d", "k_conv1d", "v_conv1d"):
        key = f"{prefix}{name}.weight"
        if key in state_dict:
            out[name] = jnp.asarray(state_dict[key])[:, 0, :].T
    out["o_norm"] = jnp.asarray(state_dict[f"{prefix}o_norm.weight"])
    out["A_log"] = jnp.asarray(state_dict[f"{prefix}A_log"])
    out["dt_bias"] = jnp.asarray(state_dict[f"{prefix}dt_bias"])
    return out


# --- call checks --------------------------------------------------------------------------------


def cache_shapes(
    batch: int, sizes: Mapping[str, int], *, num_heads: int, conv_size: int, use_short_conv: bool
) -> dict[str, tuple[int, ...]]:
    """The shapes of the decode cache's entries for a batch of ``batch``."""
    del num_heads
    shapes: dict[str, tuple[int, ...]] = {
        "state": (batch, sizes["num_v_heads"], sizes["head_k_dim"], sizes["head_v_dim"]),
    }
    if use_short_conv:
        w = conv_size - 1
        shapes["q_conv"] = (batch, w, sizes["key_dim"])
        shapes["k_conv"] = (batch, w, sizes["key_dim"])
        shapes["v_conv"] = (batch, w, sizes["value_dim"])
    return shapes


def check_cache(op: str, cache: Any, want: Mapping[str, tuple[int, ...]]) -> None:
    """Raises unless ``cache`` is ``None`` or a dict with exactly ``want``'s keys and shapes."""
    if cache is None:
        return
    if not isinstance(cache, Mapping):
        raise TypeError(f"{op}: cache must be None or a dict, got {type(cache).__name__}.")
    if set(cache) != set(want):
        raise ValueError(f"{op}: cache has keys {sorted(cache)}, expected {sorted(want)}.")
    for name, shape in want.items():
        got = tuple(jnp.shape(cache[name]))
        if got != shape:
            raise ValueError(f"{op}: cache[{name!r}].shape={got} must be {shape}.")


def check_call(op: str, x: Any, hidden_size: int, rank: int) -> None:
    """``x`` of rank ``rank`` (3: ``[B, T, d]``, 2: one token ``[B, d]``) with ``d`` last."""
    if jnp.ndim(x) != rank:
        what = "[batch, time, hidden_size]" if rank == 3 else "[batch, hidden_size]"
        raise ValueError(f"{op}: expected x of shape {what}, got x.shape={jnp.shape(x)}.")
    F.check_features(op, x, hidden_size)


# --- the pieces ---------------------------------------------------------------------------------


def short_conv(
    x: jax.Array, weight: jax.Array, tail: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """A causal depthwise convolution with SiLU (fla's ``ShortConvolution``): ``(y, new tail)``.

    ``y_t = silu(sum_i weight[i] * x_{t - W + 1 + i})`` for ``x`` ``[B, T, D]``,
    ``weight`` ``[W, D]``; the inputs before the sequence are ``tail`` ``[B, W - 1, D]`` (the
    last inputs of the previous call; ``None``: zeros). Returns ``y`` ``[B, T, D]`` and the new
    tail, the last ``W - 1`` inputs.
    """
    w, t = weight.shape[0], x.shape[1]
    if tail is None:
        tail = jnp.zeros((x.shape[0], w - 1, x.shape[2]), x.dtype)
    xp = jnp.concatenate([tail.astype(x.dtype), x], axis=1)
    y = sum(weight[i][None, None] * xp[:, i : i + t] for i in range(w))
    return jax.nn.silu(y), xp[:, xp.shape[1] - (w - 1) :]


def l2_normalize(x: jax.Array) -> jax.Array:
    """``x / sqrt(sum(x^2) + 1e-6)`` over the last axis (fla's and Qwen3-Next's ``l2norm``)."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + L2_EPS)


def _heads(x: jax.Array, size: int) -> jax.Array:
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size)


def _promoted(x: Any, params: Params, dtype: Dtype | None) -> tuple[jax.Array, dict[str, Any]]:
    names = tuple(params)
    x, *vals = F.promote((x, *(params[n] for n in names)), dtype)
    return x, dict(zip(names, vals, strict=True))


def _qkv(
    x: jax.Array,
    p: Mapping[str, Any],
    cache: Mapping[str, Any] | None,
    *,
    use_short_conv: bool,
    silu_without_conv: bool,
    precision: PrecisionLike,
) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """The projections ``q, k, v`` (flat), through the short convolutions (or SiLU, or as
    they are), and the new convolution tails."""
    q = F.dense(x, p["q_proj"], None, precision)
    k = F.dense(x, p["k_proj"], None, precision)
    v = F.dense(x, p["v_proj"], None, precision)
    tails: dict[str, jax.Array] = {}
    if use_short_conv:
        c = cache or {}
        q, tails["q_conv"] = short_conv(q, p["q_conv1d"], c.get("q_conv"))
        k, tails["k_conv"] = short_conv(k, p["k_conv1d"], c.get("k_conv"))
        v, tails["v_conv"] = short_conv(v, p["v_conv1d"], c.get("v_conv"))
    elif silu_without_conv:
        q, k, v = jax.nn.silu(q), jax.nn.silu(k), jax.nn.silu(v)
    return q, k, v, tails


def _gdn_inputs(
    x: Any,
    params: Params,
    cache: Mapping[str, Any] | None,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    allow_neg_eigval: bool,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[tuple[jax.Array, ...], jax.Array, dict[str, jax.Array]]:
    """``((q, k, v, log_alpha, beta), gate, conv tails)`` of a sequence ``x`` ``[B, T, d]``."""
    x, p = _promoted(x, params, dtype)
    q, k, v, tails = _qkv(
        x, p, cache, use_short_conv=use_short_conv, silu_without_conv=True, precision=precision
    )
    kdim, vdim = sizes["head_k_dim"], sizes["head_v_dim"]
    q, k, v = _heads(q, kdim), _heads(k, kdim), _heads(v, vdim)
    q, k = l2_normalize(q), l2_normalize(k)
    groups = sizes["num_v_heads"] // q.shape[2]
    if groups > 1:  # grouped values: key head i serves value heads i*g ... i*g + g - 1
        q, k = jnp.repeat(q, groups, axis=2), jnp.repeat(k, groups, axis=2)
    beta = jax.nn.sigmoid(F.dense(x, p["b_proj"], None, precision))
    if allow_neg_eigval:
        beta = 2.0 * beta
    # Qwen3-Next / fla: g = -exp(A_log) * softplus(x W_a + dt_bias), in float32.
    f32 = jnp.promote_types(x.dtype, jnp.float32)
    a = F.dense(x, p["a_proj"], None, precision).astype(f32)
    rate = jnp.exp(p["A_log"].astype(f32))[None, None]
    log_alpha = -rate * jax.nn.softplus(a + p["dt_bias"].astype(f32)[None, None])
    gate = _heads(F.dense(x, p["g_proj"], None, precision), vdim)
    return (q, k, v, log_alpha, beta), gate, tails


def _gdn_output(
    o: jax.Array,
    gate: jax.Array,
    params: Params,
    *,
    norm_eps: float,
    precision: PrecisionLike,
    norm: str = "o_norm",
) -> jax.Array:
    """``o_proj(gated_rms_norm(o, gate))``: the norm per value head, SiLU gate after it."""
    o = o.astype(gate.dtype)
    scale = params[norm]
    o, gate, scale = F.promote((o, gate, scale), None)
    y = hj.gated_rms_norm(o, gate, scale, eps=norm_eps, activation="swiglu", norm_before_gate=True)
    y = y.reshape(*y.shape[:-2], -1)
    (y, w) = F.promote((y, params["o_proj"]), None)
    return F.dense(y, w, None, precision)


def gated_delta_net(
    x: Any,
    params: Params,
    cache: Mapping[str, Any] | None = None,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    allow_neg_eigval: bool,
    norm_eps: float,
    chunk_size: int,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gated DeltaNet block over ``x`` ``[B, T, d]``: ``(y [B, T, d], cache)``.

    ``cache`` (``None``: zeros) holds the state and convolution tails before ``x``; the returned
    cache those after it, so a prefill followed by :func:`gated_delta_net_step` continues it.
    """
    (q, k, v, log_alpha, beta), gate, tails = _gdn_inputs(
        x,
        params,
        cache,
        sizes=sizes,
        use_short_conv=use_short_conv,
        allow_neg_eigval=allow_neg_eigval,
        dtype=dtype,
        precision=precision,
    )
    s0 = None if cache is None else cache["state"]
    o, state = hj.gated_delta_rule(
        q, k, v, log_alpha, beta, initial_state=s0, chunk_size=chunk_size
    )
    y = _gdn_output(o, gate, params, norm_eps=norm_eps, precision=precision)
    return y, {"state": state, **tails}


def gated_delta_net_step(
    cache: Mapping[str, Any] | None,
    x_t: Any,
    params: Params,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    allow_neg_eigval: bool,
    norm_eps: float,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """One decode step, ``x_t`` ``[B, d]``: ``(new cache, y_t [B, d])``, by
    :func:`hadamard_jax.gated_delta_rule_step`."""
    (q, k, v, log_alpha, beta), gate, tails = _gdn_inputs(
        jnp.asarray(x_t)[:, None],
        params,
        cache,
        sizes=sizes,
        use_short_conv=use_short_conv,
        allow_neg_eigval=allow_neg_eigval,
        dtype=dtype,
        precision=precision,
    )
    b, hv = q.shape[0], q.shape[2]
    if cache is None:
        s = jnp.zeros((b, hv, sizes["head_k_dim"], sizes["head_v_dim"]), jnp.float32)
    else:
        s = cache["state"]
    o, state = hj.gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], log_alpha[:, 0], beta[:, 0], s)
    y = _gdn_output(o[:, None], gate, params, norm_eps=norm_eps, precision=precision)
    return {"state": state, **tails}, y[:, 0]


# --- Gated Linear Attention --------------------------------------------------------------------

GLA = "GatedLinearAttention"


def check_gated_linear_attention(
    *,
    hidden_size: Any,
    num_heads: Any,
    expand_k: Any,
    expand_v: Any,
    use_short_conv: Any,
    conv_size: Any,
    gate_logit_normalizer: Any,
    gate_low_rank_dim: Any,
    clamp_min: Any,
    norm_eps: Any,
    chunk_size: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
) -> dict[str, Any]:
    """``GatedLinearAttention``'s arguments, checked once; returns the derived sizes.

    ``hidden_size * expand_k`` and ``hidden_size * expand_v`` whole multiples of
    ``num_heads``; ``gate_logit_normalizer > 0``; ``clamp_min`` ``None`` or a number ``<= 0``.
    """
    op = GLA
    d = options.size(hidden_size, "hidden_size", op)
    h = options.size(num_heads, "num_heads", op)
    dims = []
    for name, value in (("expand_k", expand_k), ("expand_v", expand_v)):
        e = checks.static_real(value, name, op, lambda v: v > 0, "a number > 0")
        n = round(d * e)
        if n < h or n % h or not math.isclose(d * e, n, rel_tol=1e-5):
            raise ValueError(
                f"{op}: hidden_size * {name} must be a whole multiple of num_heads={h}, got "
                f"hidden_size={d}, {name}={e} ({d * e})."
            )
        dims.append(n)
    options.flag(use_short_conv, "use_short_conv", op)
    options.size(conv_size, "conv_size", op)
    checks.static_real(
        gate_logit_normalizer, "gate_logit_normalizer", op, lambda v: v > 0, "a number > 0"
    )
    options.size(gate_low_rank_dim, "gate_low_rank_dim", op)
    if clamp_min is not None:
        checks.static_real(clamp_min, "clamp_min", op, lambda v: v <= 0, "None or a number <= 0")
    checks.static_real(norm_eps, "norm_eps", op, lambda e: e > 0, "a number > 0")
    options.size(chunk_size, "chunk_size", op)
    options.dtypes(dtype, param_dtype, op)
    options.function(kernel_init, "kernel_init", op)
    options.function(bias_init, "bias_init", op)
    kd, vd = dims
    return {
        "num_v_heads": h,
        "head_k_dim": kd // h,
        "head_v_dim": vd // h,
        "key_dim": kd,
        "value_dim": vd,
    }


def gla_param_table(
    hidden_size: int,
    sizes: Mapping[str, int],
    *,
    gate_low_rank_dim: int,
    conv_size: int,
    use_short_conv: bool,
    kernel_init: Callable[..., jax.Array],
    bias_init: Callable[..., jax.Array],
) -> dict[str, tuple[tuple[int, ...], Callable[..., jax.Array]]]:
    """``{name: (shape, init)}`` of ``GatedLinearAttention``'s parameters (fla's names, with
    ``gk_proj.0.weight`` -> ``gk_proj_0``, ``gk_proj.1.weight`` -> ``gk_proj_1``,
    ``gk_proj.1.bias`` -> ``gk_proj_1_bias``)."""
    d, kd, vd, r = hidden_size, sizes["key_dim"], sizes["value_dim"], gate_low_rank_dim
    table: dict[str, tuple[tuple[int, ...], Callable[..., jax.Array]]] = {
        "q_proj": ((d, kd), kernel_init),
        "k_proj": ((d, kd), kernel_init),
        "v_proj": ((d, vd), kernel_init),
        "g_proj": ((d, vd), kernel_init),
    }
    if use_short_conv:
        table["q_conv1d"] = ((conv_size, kd), conv_init)
        table["k_conv1d"] = ((conv_size, kd), conv_init)
        table["v_conv1d"] = ((conv_size, vd), conv_init)
    table["gk_proj_0"] = ((d, r), kernel_init)
    table["gk_proj_1"] = ((r, kd), kernel_init)
    table["gk_proj_1_bias"] = ((kd,), bias_init)
    table["g_norm_swish_gate"] = ((sizes["head_v_dim"],), ones_init)
    table["o_proj"] = ((vd, d), kernel_init)
    return table


def gla_params_from_fla(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, jax.Array]:
    """flash-linear-attention ``GatedLinearAttention`` weights -> this library's parameters.

    Linear weights transposed (``q_proj.weight.T`` ...; ``gk_proj.0.weight.T`` ->
    ``gk_proj_0``, ``gk_proj.1.weight.T`` -> ``gk_proj_1``, ``gk_proj.1.bias`` ->
    ``gk_proj_1_bias``), convolutions ``weight[:, 0, :].T``, ``g_norm_swish_gate.weight`` ->
    ``g_norm_swish_gate``. For fla's defaults ``use_output_gate=True, gate_fn="swish",
    fuse_norm=True, elementwise_affine=True, num_kv_heads=None, feature_map=None``.
    """
    out: dict[str, jax.Array] = {}
    for name in ("q_proj", "k_proj", "v_proj", "g_proj", "o_proj"):
        out[name] = jnp.asarray(state_dict[f"{prefix}{name}.weight"]).T
    for name in ("q_conv1d", "k_conv1d", "v_conv1d"):
        key = f"{prefix}{name}.weight"
        if key in state_dict:
            out[name] = jnp.asarray(state_dict[key])[:, 0, :].T
    out["gk_proj_0"] = jnp.asarray(state_dict[f"{prefix}gk_proj.0.weight"]).T
    out["gk_proj_1"] = jnp.asarray(state_dict[f"{prefix}gk_proj.1.weight"]).T
    out["gk_proj_1_bias"] = jnp.asarray(state_dict[f"{prefix}gk_proj.1.bias"])
    out["g_norm_swish_gate"] = jnp.asarray(state_dict[f"{prefix}g_norm_swish_gate.weight"])
    return out


def _gla_inputs(
    x: Any,
    params: Params,
    cache: Mapping[str, Any] | None,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    gate_logit_normalizer: float,
    clamp_min: float | None,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[tuple[jax.Array, ...], jax.Array, dict[str, jax.Array]]:
    """``((q, k, v, log_g), gate, conv tails)`` of a sequence ``x`` ``[B, T, d]``."""
    x, p = _promoted(x, params, dtype)
    q, k, v, tails = _qkv(
        x, p, cache, use_short_conv=use_short_conv, silu_without_conv=False, precision=precision
    )
    kdim, vdim = sizes["head_k_dim"], sizes["head_v_dim"]
    gk = F.dense(F.dense(x, p["gk_proj_0"], None, precision), p["gk_proj_1"], None, precision)
    gk = gk + p["gk_proj_1_bias"][None, None]
    f32 = jnp.promote_types(x.dtype, jnp.float32)
    log_g = jax.nn.log_sigmoid(gk.astype(f32)) / gate_logit_normalizer
    if clamp_min is not None:
        log_g = jnp.maximum(log_g, clamp_min)
    gate = _heads(F.dense(x, p["g_proj"], None, precision), vdim)
    return (_heads(q, kdim), _heads(k, kdim), _heads(v, vdim), _heads(log_g, kdim)), gate, tails


def gated_linear_attention(
    x: Any,
    params: Params,
    cache: Mapping[str, Any] | None = None,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    gate_logit_normalizer: float,
    clamp_min: float | None,
    norm_eps: float,
    chunk_size: int,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GLA block over ``x`` ``[B, T, d]``: ``(y [B, T, d], cache)`` (as
    :func:`gated_delta_net`), by :func:`hadamard_jax.gated_linear_attention`."""
    (q, k, v, log_g), gate, tails = _gla_inputs(
        x,
        params,
        cache,
        sizes=sizes,
        use_short_conv=use_short_conv,
        gate_logit_normalizer=gate_logit_normalizer,
        clamp_min=clamp_min,
        dtype=dtype,
        precision=precision,
    )
    s0 = None if cache is None else cache["state"]
    o, state = hj.gated_linear_attention(q, k, v, log_g, initial_state=s0, chunk_size=chunk_size)
    y = _gdn_output(
        o, gate, params, norm_eps=norm_eps, precision=precision, norm="g_norm_swish_gate"
    )
    return y, {"state": state, **tails}


def gated_linear_attention_step(
    cache: Mapping[str, Any] | None,
    x_t: Any,
    params: Params,
    *,
    sizes: Mapping[str, int],
    use_short_conv: bool,
    gate_logit_normalizer: float,
    clamp_min: float | None,
    norm_eps: float,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """One GLA decode step, ``x_t`` ``[B, d]``: ``(new cache, y_t [B, d])``, by
    :func:`hadamard_jax.gated_linear_attention_step`."""
    (q, k, v, log_g), gate, tails = _gla_inputs(
        jnp.asarray(x_t)[:, None],
        params,
        cache,
        sizes=sizes,
        use_short_conv=use_short_conv,
        gate_logit_normalizer=gate_logit_normalizer,
        clamp_min=clamp_min,
        dtype=dtype,
        precision=precision,
    )
    if cache is None:
        shape = (q.shape[0], q.shape[2], sizes["head_k_dim"], sizes["head_v_dim"])
        s = jnp.zeros(shape, jnp.float32)
    else:
        s = cache["state"]
    o, state = hj.gated_linear_attention_step(q[:, 0], k[:, 0], v[:, 0], log_g[:, 0], s)
    y = _gdn_output(
        o[:, None], gate, params, norm_eps=norm_eps, precision=precision, norm="g_norm_swish_gate"
    )
    return {"state": state, **tails}, y[:, 0]
