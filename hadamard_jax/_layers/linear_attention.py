"""The matrix-state mixers ``GatedDeltaNet`` and ``GatedLinearAttention``, shared by NNX and Linen.

One home for what the two front ends share. Each mixer is one frozen options dataclass
(:class:`GDNOptions`, :class:`GLAOptions`), checked once at construction, which also holds its
parameter table (:meth:`MixerOptions.specs`: names, shapes and initialisers, in
flash-linear-attention's names and NNX creation order), its decode-cache shapes, its call checks
and its pure layer functions: the parallel form over a sequence (:meth:`MixerOptions.apply`) and
the decode step (:meth:`MixerOptions.step`), both returning the decode cache. What the two share
(the ``q, k, v`` projections and short convolutions, the output norm and projection, the cache,
the conversion of fla's PyTorch weights, :func:`gdn_params_from_fla`,
:func:`gla_params_from_fla`) is written once.

Shapes: inputs ``[B, T, hidden_size]``, one token ``[B, hidden_size]``. The cache is a dict:
``"state"`` ``[B, Hv, K, V]`` (the delta rule's matrix state, ``S^T q`` reads it) and, with the
short convolution, ``"q_conv"``, ``"k_conv"`` ``[B, conv_size - 1, H * K]`` and ``"v_conv"``
``[B, conv_size - 1, Hv * V]``: the last ``conv_size - 1`` inputs of each convolution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
from flax.typing import Dtype

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks

#: ``GatedDeltaNet``'s arguments (NNX ``Args`` and Linen ``Attributes``; NNX adds ``rngs``).
GDN_ARGS = """\
hidden_size: the model width ``d``.
num_heads: key heads ``H`` (fla's default 6).
head_dim: key head size ``K`` (fla's default 256).
expand_v: value head size ``V = head_dim * expand_v`` (2 in fla; 1 in Qwen3-Next).
num_v_heads: value heads ``Hv``, a multiple of ``num_heads`` (``None``: ``num_heads``).
use_short_conv: the convolutions (else ``silu`` of the projections, as fla).
conv_size: convolution taps ``W`` (4).
allow_neg_eigval: ``beta = 2 sigmoid(.)``, eigenvalues of ``I - beta k k^T`` in
  ``(-1, 1]`` (Grazzi et al. 2024).
norm_eps: the output norm's ``eps`` (1e-5).
chunk_size: the chunk of :func:`hadamard_jax.gated_delta_rule` (64).
dtype, param_dtype, precision, kernel_init: as ``nnx.Linear``/``nn.Dense`` (the projections).
mesh_axis: the mesh axis to split the time axis over under Auto mesh axes (sequence
  sharding of the recurrence, as the op's ``mesh_axis``; under Explicit axes a time-
  sharded input is detected without it). ``None``: no opt-in.
"""

#: ``GatedLinearAttention``'s arguments (NNX ``Args`` and Linen ``Attributes``; NNX adds ``rngs``).
GLA_ARGS = """\
hidden_size: the model width ``d``.
num_heads: heads ``H`` (4).
expand_k, expand_v: ``key_dim = d * expand_k`` (0.5), ``value_dim = d * expand_v`` (1).
use_short_conv: short causal convolutions with SiLU on ``q, k, v`` (off).
conv_size: their taps (4).
gate_logit_normalizer: the divisor of ``log sigmoid`` (16).
gate_low_rank_dim: the rank of the gate projection (16).
clamp_min: a floor for ``log g`` (``None``: none).
norm_eps: the output norm's ``eps`` (1e-5).
chunk_size: the chunk of :func:`hadamard_jax.gated_linear_attention` (64).
dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``/``nn.Dense``.
mesh_axis: the mesh axis to split the time axis over under Auto mesh axes (sequence
  sharding of the recurrence, as the op's ``mesh_axis``; under Explicit axes a time-
  sharded input is detected without it). ``None``: no opt-in.
"""

Params = Mapping[str, Any]

#: ``eps`` of the L2 normalisation of ``q`` and ``k`` (fla's ``l2norm``, Qwen3-Next's ``l2norm``).
L2_EPS = 1e-6


# --- options, checked once ----------------------------------------------------------------------

GDN = "GatedDeltaNet"
GLA = "GatedLinearAttention"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The derived sizes of a mixer: value heads, head sizes and the flat widths."""

    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    key_dim: int
    value_dim: int


def _whole(op: str, what: str, value: float, lo: int, multiple: int = 1) -> int:
    """``value`` as a whole number ``>= lo`` and a multiple of ``multiple``, else ``ValueError``."""
    n = round(value)
    if n < lo or n % multiple or not math.isclose(value, n, rel_tol=1e-5):
        raise ValueError(f"{op}: {what} ({value}).")
    return n


@dataclasses.dataclass(frozen=True)
class MixerOptions(P.Options):
    """What both mixers take: sizes, the short convolution, the norm, the chunk, dtypes."""

    op: ClassVar[str] = ""
    norm: ClassVar[str] = ""

    hidden_size: int
    num_heads: int
    use_short_conv: bool
    conv_size: int
    norm_eps: float
    chunk_size: int
    dtype: Any
    param_dtype: Any
    precision: Any
    kernel_init: Any
    sizes: Sizes = dataclasses.field(init=False, repr=False)
    mesh_axis: Any = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        """The checks, in argument order: the sizes (:meth:`_sizes`), the short convolution,
        the family's own options (:meth:`_check_own`), then the norm, chunk, dtypes and
        initialisers."""
        op = self.op
        d = options.size(self.hidden_size, "hidden_size", op)
        h = options.size(self.num_heads, "num_heads", op)
        sizes = self._sizes(d, h)
        options.flag(self.use_short_conv, "use_short_conv", op)
        options.size(self.conv_size, "conv_size", op)
        self._check_own()
        self._check_tail()
        self.set(sizes=sizes)

    def _sizes(self, hidden_size: int, num_heads: int) -> Sizes:
        """The head sizes from the checked ``hidden_size`` and ``num_heads``."""
        raise NotImplementedError

    def _check_own(self) -> None:
        """The family's options between the convolution and the norm."""

    def _check_tail(self) -> None:
        op = self.op
        checks.static_real(self.norm_eps, "norm_eps", op, lambda e: e > 0, "a number > 0")
        options.size(self.chunk_size, "chunk_size", op)
        options.dtypes(self.dtype, self.param_dtype, op)
        options.function(self.kernel_init, "kernel_init", op)
        if self.mesh_axis is not None and not isinstance(self.mesh_axis, str):
            raise TypeError(
                f"{op}: mesh_axis must be a mesh axis name (a str) or None, got "
                f"{type(self.mesh_axis).__name__}."
            )
        self.set(norm_eps=float(self.norm_eps))

    # the table, the cache and the checks of a call

    def _shared_specs(self, head: tuple[P.Spec, ...], gate: tuple[P.Spec, ...]) -> tuple:
        """``head``, the short convolutions (if any), ``gate``, the norm and ``o_proj``."""
        kd, vd, w = self.sizes.key_dim, self.sizes.value_dim, self.conv_size
        convs = (("q_conv1d", kd), ("k_conv1d", kd), ("v_conv1d", vd))
        conv = tuple(P.Spec(n, (w, c), conv_init) for n, c in convs) if self.use_short_conv else ()
        tail = (
            P.Spec(self.norm, (self.sizes.head_v_dim,), ones_init),
            P.Spec("o_proj", (vd, self.hidden_size), self.kernel_init),
        )
        return head + conv + gate + tail

    def _projections(self, *widths: tuple[str, int]) -> tuple[P.Spec, ...]:
        """``[hidden_size, width]`` kernels, ``kernel_init``."""
        return tuple(P.Spec(n, (self.hidden_size, w), self.kernel_init) for n, w in widths)

    def specs(self) -> tuple[P.Spec, ...]:
        """The parameter table, in NNX creation order."""
        raise NotImplementedError

    def cache_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """The shapes of the decode cache's entries for a batch of ``batch``."""
        z = self.sizes
        shapes: dict[str, tuple[int, ...]] = {
            "state": (batch, z.num_v_heads, z.head_k_dim, z.head_v_dim)
        }
        if self.use_short_conv:
            w = self.conv_size - 1
            shapes["q_conv"] = (batch, w, z.key_dim)
            shapes["k_conv"] = (batch, w, z.key_dim)
            shapes["v_conv"] = (batch, w, z.value_dim)
        return shapes

    def init_cache(self, batch_size: int, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
        """A zero decode cache for ``batch_size`` sequences (the same as ``cache=None``)."""
        return {k: jnp.zeros(s, dtype) for k, s in self.cache_shapes(batch_size).items()}

    def check(self, x: Any, cache: Any, rank: int) -> None:
        """A call's shapes: ``x`` of rank ``rank`` (3: a sequence, 2: a token), the cache."""
        check_call(self.op, x, self.hidden_size, rank)
        check_cache(self.op, cache, self.cache_shapes(jnp.shape(x)[0]))

    # the layer

    def inputs(self, x: Any, params: Params, cache: Any) -> tuple[tuple, jax.Array, dict]:
        """``(recurrence inputs, output gate, conv tails)`` of ``x`` ``[B, T, d]``."""
        raise NotImplementedError

    def recurrence(self, *args: Any, initial_state: Any, chunk_size: int, mesh_axis: Any) -> Any:
        """The op over a sequence: ``(o, state)``."""
        raise NotImplementedError

    def recurrence_step(self, *args: Any) -> Any:
        """The op's decode step: ``(o, state)``."""
        raise NotImplementedError

    def apply(self, x: Any, params: Params, cache: Mapping[str, Any] | None = None) -> Any:
        """The block over ``x`` ``[B, T, d]``: ``(y [B, T, d], cache)``.

        ``cache`` (``None``: zeros) holds the state and convolution tails before ``x``; the
        returned cache those after it, so a prefill followed by :meth:`step` continues it.
        """
        args, gate, tails = self.inputs(x, params, cache)
        s0 = None if cache is None else cache["state"]
        o, state = self.recurrence(
            *args, initial_state=s0, chunk_size=self.chunk_size, mesh_axis=self.mesh_axis
        )
        return _output(o, gate, params, self), {"state": state, **tails}

    def step(self, cache: Mapping[str, Any] | None, x_t: Any, params: Params) -> Any:
        """One decode step, ``x_t`` ``[B, d]``: ``(new cache, y_t [B, d])``."""
        args, gate, tails = self.inputs(jnp.asarray(x_t)[:, None], params, cache)
        if cache is None:
            s = jnp.zeros(self.cache_shapes(args[0].shape[0])["state"], jnp.float32)
        else:
            s = cache["state"]
        o, state = self.recurrence_step(*(a[:, 0] for a in args), s)
        y = _output(o[:, None], gate, params, self)
        return {"state": state, **tails}, y[:, 0]


@dataclasses.dataclass(frozen=True)
class GDNOptions(MixerOptions):
    """``GatedDeltaNet``'s options, checked once.

    ``hidden_size, num_heads, head_dim, conv_size, chunk_size >= 1``; ``expand_v > 0`` with
    ``head_dim * expand_v`` a whole number; ``num_v_heads`` (``None``: ``num_heads``) a multiple
    of ``num_heads`` (resolved here); ``norm_eps > 0``.
    """

    op: ClassVar[str] = GDN
    norm: ClassVar[str] = "o_norm"

    head_dim: int
    expand_v: float
    num_v_heads: int | None
    allow_neg_eigval: bool

    def _sizes(self, hidden_size: int, num_heads: int) -> Sizes:
        op, h = self.op, num_heads
        k = options.size(self.head_dim, "head_dim", op)
        ev = checks.static_real(self.expand_v, "expand_v", op, lambda v: v > 0, "a number > 0")
        what = "head_dim * expand_v must be a whole number >= 1 (the value head size), got "
        what += f"head_dim={k}, expand_v={ev}"
        v = _whole(op, what, k * ev, 1)
        nv = self.num_v_heads
        hv = h if nv is None else options.size(nv, "num_v_heads", op)
        if hv % h:
            raise ValueError(
                f"{op}: num_v_heads={hv} must be a multiple of num_heads={h} (each key head "
                "serves num_v_heads // num_heads value heads)."
            )
        self.set(num_v_heads=hv)
        return Sizes(hv, k, v, h * k, hv * v)

    def _check_own(self) -> None:
        options.flag(self.allow_neg_eigval, "allow_neg_eigval", self.op)

    def specs(self) -> tuple[P.Spec, ...]:
        """fla's ``GatedDeltaNet``: kernels ``[in, out]`` (PyTorch's ``weight.T``), the
        convolutions ``[conv_size, D]`` (fla's ``[D, 1, conv_size]`` as ``weight[:, 0, :].T``)."""
        z = self.sizes
        head = self._projections(
            ("q_proj", z.key_dim), ("k_proj", z.key_dim), ("v_proj", z.value_dim),
            ("a_proj", z.num_v_heads), ("b_proj", z.num_v_heads),
        )  # fmt: skip
        decay = (
            P.Spec("A_log", (z.num_v_heads,), a_log_init),
            P.Spec("dt_bias", (z.num_v_heads,), dt_bias_init()),
        )
        return self._shared_specs(head + decay, self._projections(("g_proj", z.value_dim)))

    def inputs(self, x: Any, params: Params, cache: Any) -> tuple[tuple, jax.Array, dict]:
        """``((q, k, v, log_alpha, beta), gate, conv tails)``."""
        x, p = _promoted(x, params, self.dtype)
        q, k, v, tails = _qkv(x, p, cache, self, silu_without_conv=True)
        z, precision = self.sizes, self.precision
        q, k = l2_normalize(_heads(q, z.head_k_dim)), l2_normalize(_heads(k, z.head_k_dim))
        groups = z.num_v_heads // q.shape[2]
        if groups > 1:  # grouped values: key head i serves value heads i*g ... i*g + g - 1
            q, k = jnp.repeat(q, groups, axis=2), jnp.repeat(k, groups, axis=2)
        beta = jax.nn.sigmoid(F.dense(x, p["b_proj"], None, precision))
        if self.allow_neg_eigval:
            beta = 2.0 * beta
        # Qwen3-Next / fla: g = -exp(A_log) * softplus(x W_a + dt_bias), in float32.
        f32 = jnp.promote_types(x.dtype, jnp.float32)
        a = F.dense(x, p["a_proj"], None, precision).astype(f32)
        rate = jnp.exp(p["A_log"].astype(f32))[None, None]
        log_alpha = -rate * jax.nn.softplus(a + p["dt_bias"].astype(f32)[None, None])
        gate = _heads(F.dense(x, p["g_proj"], None, precision), z.head_v_dim)
        return (q, k, _heads(v, z.head_v_dim), log_alpha, beta), gate, tails

    def recurrence(self, *args: Any, initial_state: Any, chunk_size: int, mesh_axis: Any) -> Any:
        return hj.gated_delta_rule(
            *args, initial_state=initial_state, chunk_size=chunk_size, mesh_axis=mesh_axis
        )

    def recurrence_step(self, *args: Any) -> Any:
        return hj.gated_delta_rule_step(*args)


@dataclasses.dataclass(frozen=True)
class GLAOptions(MixerOptions):
    """``GatedLinearAttention``'s options, checked once.

    ``hidden_size * expand_k`` and ``hidden_size * expand_v`` whole multiples of
    ``num_heads``; ``gate_logit_normalizer > 0``; ``clamp_min`` ``None`` or a number ``<= 0``.
    """

    op: ClassVar[str] = GLA
    norm: ClassVar[str] = "g_norm_swish_gate"

    expand_k: float
    expand_v: float
    gate_logit_normalizer: float
    gate_low_rank_dim: int
    clamp_min: float | None
    bias_init: Any

    def _sizes(self, hidden_size: int, num_heads: int) -> Sizes:
        op, d, h = self.op, hidden_size, num_heads
        dims = []
        for name in ("expand_k", "expand_v"):
            e = checks.static_real(getattr(self, name), name, op, lambda v: v > 0, "a number > 0")
            what = f"hidden_size * {name} must be a whole multiple of num_heads={h}, got "
            dims.append(_whole(op, what + f"hidden_size={d}, {name}={e}", d * e, h, h))
        kd, vd = dims
        return Sizes(h, kd // h, vd // h, kd, vd)

    def _check_own(self) -> None:
        op = self.op
        g = checks.static_real(
            self.gate_logit_normalizer, "gate_logit_normalizer", op, lambda v: v > 0,
            "a number > 0",
        )  # fmt: skip
        options.size(self.gate_low_rank_dim, "gate_low_rank_dim", op)
        c = self.clamp_min
        if c is not None:
            c = checks.static_real(c, "clamp_min", op, lambda v: v <= 0, "None or a number <= 0")
        options.function(self.bias_init, "bias_init", op)
        self.set(gate_logit_normalizer=float(g), clamp_min=None if c is None else float(c))

    def specs(self) -> tuple[P.Spec, ...]:
        """fla's ``GatedLinearAttention``, the gate's ``nn.Sequential`` flattened:
        ``gk_proj.0.weight`` -> ``gk_proj_0``, ``gk_proj.1.weight`` -> ``gk_proj_1``,
        ``gk_proj.1.bias`` -> ``gk_proj_1_bias``."""
        z, r = self.sizes, self.gate_low_rank_dim
        head = self._projections(
            ("q_proj", z.key_dim), ("k_proj", z.key_dim), ("v_proj", z.value_dim),
            ("g_proj", z.value_dim),
        )  # fmt: skip
        gate = (
            P.Spec("gk_proj_0", (self.hidden_size, r), self.kernel_init),
            P.Spec("gk_proj_1", (r, z.key_dim), self.kernel_init),
            P.Spec("gk_proj_1_bias", (z.key_dim,), self.bias_init),
        )
        return self._shared_specs(head, gate)

    def inputs(self, x: Any, params: Params, cache: Any) -> tuple[tuple, jax.Array, dict]:
        """``((q, k, v, log_g), gate, conv tails)``."""
        x, p = _promoted(x, params, self.dtype)
        q, k, v, tails = _qkv(x, p, cache, self, silu_without_conv=False)
        z, precision = self.sizes, self.precision
        gk = F.dense(F.dense(x, p["gk_proj_0"], None, precision), p["gk_proj_1"], None, precision)
        gk = gk + p["gk_proj_1_bias"][None, None]
        f32 = jnp.promote_types(x.dtype, jnp.float32)
        log_g = jax.nn.log_sigmoid(gk.astype(f32)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            log_g = jnp.maximum(log_g, self.clamp_min)
        gate = _heads(F.dense(x, p["g_proj"], None, precision), z.head_v_dim)
        kd, vd = z.head_k_dim, z.head_v_dim
        return (_heads(q, kd), _heads(k, kd), _heads(v, vd), _heads(log_g, kd)), gate, tails

    def recurrence(self, *args: Any, initial_state: Any, chunk_size: int, mesh_axis: Any) -> Any:
        return hj.gated_linear_attention(
            *args, initial_state=initial_state, chunk_size=chunk_size, mesh_axis=mesh_axis
        )

    def recurrence_step(self, *args: Any) -> Any:
        return hj.gated_linear_attention_step(*args)


# --- the public calls, the same in both front ends ----------------------------------------------


class MixerCalls:
    """``init_cache``, ``__call__`` and ``step`` of both mixers (NNX and Linen): a front end
    provides ``options`` and ``_run(x, cache, decode)`` (the parallel form, or one decode step
    with ``decode=True``, on the module's parameters)."""

    if TYPE_CHECKING:

        @property
        def options(self) -> Any: ...

        def _run(self, x: Any, cache: Any, decode: bool) -> Any: ...

    def init_cache(self, batch_size: int, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
        """A zero decode cache for ``batch_size`` sequences (the same as ``cache=None``)."""
        return self.options.init_cache(batch_size, dtype)

    def __call__(
        self, x: jax.Array, cache: dict[str, jax.Array] | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``x [B, T, d]``, ``cache`` (``None``: zeros) -> ``(y [B, T, d], cache after x)``."""
        self.options.check(x, cache, 3)
        return self._run(x, cache, False)

    def step(
        self, cache: dict[str, jax.Array] | None, x_t: jax.Array
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """One decode step: ``cache`` (``None``: zeros), ``x_t [B, d]`` ->
        ``(new cache, y_t [B, d])``; stepping through a sequence gives ``__call__``'s outputs."""
        self.options.check(x_t, cache, 2)
        return self._run(x_t, cache, True)


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


# --- flash-linear-attention's weights -----------------------------------------------------------


def _from_fla(
    state_dict: Mapping[str, Any], prefix: str, linear: Mapping[str, str], plain: Mapping[str, str]
) -> dict[str, jax.Array]:
    """``linear`` (``{ours: fla's module}``) transposed from ``<module>.weight``, the convolutions
    ``weight[:, 0, :].T`` where present, ``plain`` (``{ours: fla's key}``) as they are."""
    out: dict[str, jax.Array] = {}
    for name, key in linear.items():
        out[name] = jnp.asarray(state_dict[f"{prefix}{key}.weight"]).T
    for name in ("q_conv1d", "k_conv1d", "v_conv1d"):
        key = f"{prefix}{name}.weight"
        if key in state_dict:
            out[name] = jnp.asarray(state_dict[key])[:, 0, :].T
    for name, key in plain.items():
        out[name] = jnp.asarray(state_dict[f"{prefix}{key}"])
    return out


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


def gdn_params_from_fla(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, jax.Array]:
    """flash-linear-attention ``GatedDeltaNet`` weights (``module.state_dict()``, as NumPy or
    array values) -> this library's parameter dict.

    ``{q,k,v,a,b,g,o}_proj.weight`` ``[out, in]`` -> ``{..}_proj`` ``[in, out]`` (transposed);
    ``{q,k,v}_conv1d.weight`` ``[D, 1, W]`` -> ``{..}_conv1d`` ``[W, D]``; ``o_norm.weight`` ->
    ``o_norm``; ``A_log``, ``dt_bias`` as they are. ``prefix``: e.g. ``"model.layers.0.attn."``.
    Convolution biases (fla's ``conv_bias=True``) are not supported.
    """
    linear = _same("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj", "o_proj")
    plain = {"o_norm": "o_norm.weight", **_same("A_log", "dt_bias")}
    return _from_fla(state_dict, prefix, linear, plain)


def gla_params_from_fla(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, jax.Array]:
    """flash-linear-attention ``GatedLinearAttention`` weights -> this library's parameters.

    Linear weights transposed (``q_proj.weight.T`` ...; ``gk_proj.0.weight.T`` ->
    ``gk_proj_0``, ``gk_proj.1.weight.T`` -> ``gk_proj_1``, ``gk_proj.1.bias`` ->
    ``gk_proj_1_bias``), convolutions ``weight[:, 0, :].T``, ``g_norm_swish_gate.weight`` ->
    ``g_norm_swish_gate``. For fla's defaults ``use_output_gate=True, gate_fn="swish",
    fuse_norm=True, elementwise_affine=True, num_kv_heads=None, feature_map=None``.
    """
    linear = _same("q_proj", "k_proj", "v_proj", "g_proj", "o_proj")
    linear.update(gk_proj_0="gk_proj.0", gk_proj_1="gk_proj.1")
    plain = {"gk_proj_1_bias": "gk_proj.1.bias", "g_norm_swish_gate": "g_norm_swish_gate.weight"}
    return _from_fla(state_dict, prefix, linear, plain)


# --- call checks --------------------------------------------------------------------------------


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
    opts: MixerOptions,
    *,
    silu_without_conv: bool,
) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """The projections ``q, k, v`` (flat), through the short convolutions (or SiLU, or as
    they are), and the new convolution tails."""
    q, k, v = (F.dense(x, p[f"{n}_proj"], None, opts.precision) for n in "qkv")
    tails: dict[str, jax.Array] = {}
    if opts.use_short_conv:
        c = cache or {}
        q, tails["q_conv"] = short_conv(q, p["q_conv1d"], c.get("q_conv"))
        k, tails["k_conv"] = short_conv(k, p["k_conv1d"], c.get("k_conv"))
        v, tails["v_conv"] = short_conv(v, p["v_conv1d"], c.get("v_conv"))
    elif silu_without_conv:
        q, k, v = jax.nn.silu(q), jax.nn.silu(k), jax.nn.silu(v)
    return q, k, v, tails


def _output(o: jax.Array, gate: jax.Array, params: Params, opts: MixerOptions) -> jax.Array:
    """``o_proj(gated_rms_norm(o, gate))``: the norm per value head, SiLU gate after it."""
    o = o.astype(gate.dtype)
    o, gate, scale = F.promote((o, gate, params[opts.norm]), None)
    y = hj.gated_rms_norm(
        o, gate, scale, eps=opts.norm_eps, activation="swiglu", norm_before_gate=True
    )
    y = y.reshape(*y.shape[:-2], -1)
    (y, w) = F.promote((y, params["o_proj"]), None)
    return F.dense(y, w, None, opts.precision)


def gated_delta_net(
    x: Any, params: Params, cache: Mapping[str, Any] | None, opts: GDNOptions
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gated DeltaNet block over ``x`` ``[B, T, d]``: ``(y [B, T, d], cache)``
    (:meth:`MixerOptions.apply`, by :func:`hadamard_jax.gated_delta_rule`)."""
    return opts.apply(x, params, cache)


def gated_linear_attention(
    x: Any, params: Params, cache: Mapping[str, Any] | None, opts: GLAOptions
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GLA block over ``x`` ``[B, T, d]``: ``(y [B, T, d], cache)`` (as
    :func:`gated_delta_net`), by :func:`hadamard_jax.gated_linear_attention`."""
    return opts.apply(x, params, cache)
