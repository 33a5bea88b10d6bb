r"""The gated delta rule (Gated DeltaNet), chunkwise-parallel, with its own derivative rule.

The recurrence of Gated DeltaNet (Yang et al. 2025; the linear-attention layers of Qwen3-Next)
carries one ``[K, V]`` matrix state per batch element and head:

.. math::
  S_t = \alpha_t (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top, \qquad
  o_t = \mathrm{scale}\; S_t^\top q_t,

with ``alpha_t = exp(log_alpha_t)`` (``alpha = beta = 1``: DeltaNet).

**Forward: chunkwise-parallel** (the WY/UT representation of fla's ``chunk.py`` and MaxText's
``qwen3.py``). Cut time into chunks of ``C`` tokens. With ``g_t`` the cumulative log-gate
inside the chunk (relative to the chunk's start), ``gamma_t = exp(g_t)`` and the decay matrix
``D[t, i] = exp(sum_{i < l <= t} log_alpha_l)`` for ``i <= t``, write the update as
``S_t = alpha_t S_{t-1} + k_t u_t^T``; then the ``u`` of one chunk solve the unit lower
triangular system

.. math::
  (I + A) U = \mathrm{diag}(\beta) V - \mathrm{diag}(\beta\gamma) K S_0, \qquad
  A_{ti} = \beta_t D_{ti}\, k_t^\top k_i \ (i < t),

and the chunk's outputs and last state are ``O = scale (diag(gamma) Q S_0 + (D * Q K^T) U)``,
``S_C = gamma_C S_0 + (exp(g_C - g) * K)^T U``. Each ``D`` entry is a sum of the log-gates over
its own segment (a masked cumulative sum, never a difference ``g_t - g_i`` and never ``exp`` of
a positive number): every exponent is ``<= 0``, and ``log_alpha = -inf`` (a full reset) gives
exact zeros, not ``-inf - -inf``. Across chunks a ``lax.scan`` carries ``S``. Everything is
accumulated in float32 (float64 for float64 inputs) with ``Precision.HIGHEST`` matmuls: the
triangular system is ill-conditioned in 16 bits (MaxText #4510). ``(I + A)^{-1}`` is formed by
recursive block inversion in matmuls (:func:`_unit_lower_inverse`), not by a LAPACK solve.

**Derivative rule** (the library's design, :mod:`hadamard_jax._src.rules`): a
``jax.custom_jvp`` whose tangent is a second ``lax.scan`` over the chunks carrying ``(S, dS)``,
each step the ``jax.jvp`` of one chunk's computation under ``jax.checkpoint``. The tangent is
linear in the tangents, so ``jvp``, ``jacfwd``, ``hessian`` and forward-over-reverse work, and
reverse mode is JAX's transpose of that scan: it keeps the (chunked) inputs and the states at
the chunk boundaries, ``[T/C, B, H, K, V]``, and recomputes every per-chunk matrix in the
backward pass; never a per-token state or a ``[C, C]`` matrix per chunk.

**Sequence sharding** (:func:`hadamard_jax._src.chunked.sharded`): the recurrence acts on each
column of the state alone, so one chunked pass over a shard with the state ``[S | P]``, values
``[v | 0]`` and initial state ``[0 | I]`` (:func:`_carry`) gives the shard's state from zero and
its transition ``M``; the ``n`` pairs are exchanged and each shard reruns :func:`_local` (the
rule) from its incoming state. Rerunning costs one more chunked pass, where correcting the
outputs would need ``q_t^T (prod_{s <= t} ...)`` per token: the same chunked recurrence.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, chunked, rules

_HIGHEST = lax.Precision.HIGHEST


def _mm(spec: str, x, y):
    return jnp.einsum(spec, x, y, precision=_HIGHEST)


# --- one chunk ----------------------------------------------------------------------------------


def _unit_lower_inverse(a):
    """``(I + a)^{-1}`` for ``a`` strictly lower triangular, ``[..., C, C]``, by matmuls only.

    Recursive block inversion, bottom-up: with the inverses ``X1, X2`` of two neighbouring
    diagonal blocks and ``L21`` the block below the first, the inverse of the pair is
    ``[[X1, 0], [-X2 L21 X1, X2]]``. ``log2(C)`` levels of batched ``b x b`` matmuls,
    ``C^3 / 3`` multiply-adds in all, as a triangular solve (``C`` is padded to a power of 2
    with an identity block). No LAPACK call: on CPU ``jax.scipy.linalg.solve_triangular``
    calls OpenBLAS ``trsm``, which took 4.5 s for a ``T = 2048`` forward pass with its default
    thread pool (0.05 s with ``OPENBLAS_NUM_THREADS=1``) and hung (every thread waiting on a
    futex) in backward passes on a 2-core machine; MaxText replaced its solve by a matmul-only
    (Newton-Schulz) inverse too (PR #4577).
    """
    c = a.shape[-1]
    size = 1 << max(0, (c - 1).bit_length())
    if size != c:
        pad = [(0, 0)] * (a.ndim - 2) + [(0, size - c), (0, size - c)]
        a = jnp.pad(a, pad)
    lead = a.shape[:-2]
    x = jnp.ones((*lead, size, 1, 1), a.dtype)  # the inverses of the 1 x 1 diagonal blocks
    b = 1
    while b < size:
        pairs = size // (2 * b)
        blocks = a.reshape(*lead, size // b, b, size // b, b)
        # L21 of pair p: block row 2p + 1, block column 2p.
        below = jnp.einsum(
            "...pbqc,pq->...pbc",
            blocks[..., 1::2, :, 0::2, :],
            jnp.eye(pairs, dtype=a.dtype),
            precision=_HIGHEST,
        )
        x1, x2 = x[..., 0::2, :, :], x[..., 1::2, :, :]
        off = -_mm("...pij,...pjk->...pik", x2, _mm("...pij,...pjk->...pik", below, x1))
        top = jnp.concatenate([x1, jnp.zeros_like(x1)], axis=-1)
        bottom = jnp.concatenate([off, x2], axis=-1)
        x = jnp.concatenate([top, bottom], axis=-2)  # [..., pairs, 2b, 2b]
        b *= 2
    return x[..., 0, :c, :c]


def _chunk(x, s):
    """One chunk of the recurrence from the state ``s``: ``(o, s_next)``.

    ``x = (q, k, v, log_alpha, beta)``: ``q, k`` of shape ``[..., C, K]`` (``q`` already
    scaled), ``v``: ``[..., C, V]``, ``log_alpha, beta``: ``[..., C]``; ``s``: ``[..., K, V]``.
    Returns ``o``: ``[..., C, V]`` and ``s_next``: ``[..., K, V]``.
    """
    q, k, v, log_alpha, beta = x
    c = q.shape[-2]
    idx = np.arange(c)
    incl = idx[:, None] >= idx[None, :]  # [t, i]: i <= t
    strict = idx[:, None] > idx[None, :]  # i < t
    # seg[t, i] = sum_{i < l <= t} log_alpha_l: a cumulative sum down each column of a masked
    # matrix, so each entry sums only its own segment (exact -inf, never -inf - -inf).
    seg = jnp.cumsum(jnp.where(strict, log_alpha[..., :, None], 0.0), axis=-2)
    decay = jnp.where(incl, jnp.exp(seg), 0.0)  # D, [..., C, C]; seg = 0 above the diagonal
    g = jnp.cumsum(log_alpha, axis=-1)  # log gamma_t, from the chunk's start
    gamma = jnp.exp(g)
    to_end = jnp.exp(seg[..., -1, :])  # exp(g_C - g_i), the decay from i to the chunk's end
    total = gamma[..., -1]

    a = jnp.where(strict, beta[..., :, None] * decay * _mm("...tk,...ik->...ti", k, k), 0.0)
    rhs = jnp.concatenate([beta[..., None] * v, (beta * gamma)[..., None] * k], axis=-1)
    w = _mm("...ti,...ic->...tc", _unit_lower_inverse(a), rhs)  # (I + A)^{-1} rhs
    w_v, w_k = w[..., : v.shape[-1]], w[..., v.shape[-1] :]
    u = w_v - _mm("...ck,...kv->...cv", w_k, s)

    p = decay * _mm("...tk,...ik->...ti", q, k)
    o = _mm("...ck,...kv->...cv", gamma[..., None] * q, s) + _mm("...ti,...iv->...tv", p, u)
    s_next = total[..., None, None] * s + _mm("...ck,...cv->...kv", to_end[..., None] * k, u)
    return o, s_next


def _scan(xs, s0):
    """The chunks in order: ``xs`` each ``[N, ...]`` (chunk-major); returns ``(o, s_last)``."""

    def step(s, x):
        o, s = _chunk(x, s)
        return s, o

    s_last, o = lax.scan(step, s0, xs)
    return o, s_last


@jax.custom_jvp
def _chunked(q, k, v, log_alpha, beta, s0):
    """``(o, s_last)`` of the chunked inputs (``[N, B, H, C, ...]``, the compute dtype)."""
    return _scan((q, k, v, log_alpha, beta), s0)


@functools.partial(_chunked.defjvp, symbolic_zeros=True)
def _chunked_jvp(primals, tangents):
    *xs, s0 = primals
    *dxs, ds0 = tangents
    live = [i for i, t in enumerate(dxs) if not rules.is_zero(t)]
    if rules.is_zero(ds0):
        ds0 = jnp.zeros_like(s0)

    @jax.checkpoint
    def step_jvp(s, ds, x, dx):
        def chunk(live_x, s):
            full = list(x)
            for i, xi in zip(live, live_x):
                full[i] = xi
            return _chunk(full, s)

        (o, s), (do, ds) = jax.jvp(chunk, ([x[i] for i in live], s), (list(dx), ds))
        return s, ds, o, do

    def step(carry, x):
        s, ds, o, do = step_jvp(*carry, *x)
        return (s, ds), (o, do)

    (s_last, ds_last), (o, do) = lax.scan(step, (s0, ds0), (xs, [dxs[i] for i in live]))
    return (o, s_last), (do, ds_last)


# --- layout -------------------------------------------------------------------------------------


class _Config(NamedTuple):
    """Everything static about one call (hashable: a jit key)."""

    chunk: int  # the chunk length actually used: min(chunk_size, T)
    scale: float
    dtype: np.dtype  # the result dtype
    has_state: bool
    shards: chunked.Shards | None = None  # the split of a sharded time axis


def _local(chunk: int, q, k, v, log_alpha, beta, s0):
    """``(o, s_last)`` of compute-dtype inputs (``q`` scaled) on one device: chunked, then
    :func:`_chunked` (the rule). Padding steps have ``log_alpha = 0``, ``beta = 0``,
    ``k = v = 0``: they leave the state unchanged."""
    t = q.shape[1]
    c = min(chunk, t)
    xs = [chunked.to_blocks(x, t, c) for x in (q, k, v, log_alpha, beta)]
    o, s_last = _chunked(*xs, s0)
    return chunked.from_blocks(o, t), s_last


def _carry(chunk: int, q, k, v, log_alpha, beta):
    """One shard's ``(M, S_local)``: the transition ``prod_t alpha_t (I - beta_t k_t k_t^T)``
    (``[B, H, K, K]``) and the state reached from zero (``[B, H, K, V]``).

    The recurrence acts on each column of the state alone, so one chunked run over the shard
    with the state ``[S | P]`` (``[K, V + K]``), values ``[v | 0]`` and initial state
    ``[0 | I]`` gives both: ``S_local`` in the first ``V`` columns and ``M`` in the last ``K``.
    """
    b, _, h, kd = k.shape
    vd = v.shape[-1]
    v_aug = jnp.concatenate([v, jnp.zeros((*v.shape[:-1], kd), v.dtype)], axis=-1)
    eye = jnp.broadcast_to(jnp.eye(kd, dtype=v.dtype), (b, h, kd, kd))
    s0 = jnp.concatenate([jnp.zeros((b, h, kd, vd), v.dtype), eye], axis=-1)
    _, s_last = _local(chunk, q, k, v_aug, log_alpha, beta, chunked.varying_like(s0, k))
    return s_last[..., vd:], s_last[..., :vd]


def _transition(m, s):
    return _mm("...ij,...jv->...iv", m, s)


def _impl(cfg: _Config, q, k, v, log_alpha, beta, state):
    b, t, h, kd = q.shape
    vd = v.shape[-1]
    compute = activations.compute_dtype(cfg.dtype)
    s0 = state.astype(compute) if cfg.has_state else jnp.zeros((b, h, kd, vd), compute)
    if t == 0:
        return jnp.zeros((b, 0, h, vd), cfg.dtype), s0.astype(cfg.dtype)
    q = q.astype(compute) * jnp.asarray(cfg.scale, compute)  # scaled in the compute dtype
    xs = [q, *(x.astype(compute) for x in (k, v, log_alpha, beta))]
    if cfg.shards is None:
        o, s_last = _local(cfg.chunk, xs[0], xs[1], xs[2], xs[3], xs[4], s0)
    else:
        local = functools.partial(_local, cfg.chunk)
        carry = functools.partial(_carry, cfg.chunk)
        o, s_last = chunked.sharded(cfg.shards, carry, _transition, _first(local), xs, s0)
    return o.astype(cfg.dtype), s_last.astype(cfg.dtype)


def _first(fn):
    return lambda *args: fn(*args)[0]


_impl_jit = jax.jit(_impl, static_argnums=(0,))


# --- argument checks ----------------------------------------------------------------------------


def _floating(arrays, names, op: str) -> list[Any]:
    """Each argument as an array of a real floating dtype, or a ``TypeError`` naming it."""
    out = []
    for x, name in zip(arrays, names):
        x = checks.as_array(x, name, op)
        dtype = jnp.result_type(x)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{op}: argument {name!r} must have a real floating dtype, got {dtype}; the "
                "delta rule is defined for real floating inputs (cast integers explicitly)."
            )
        out.append(jnp.asarray(x))
    return out


def _check_shape(x, name: str, want: tuple[int, ...], layout: str, op: str, given: str) -> None:
    if tuple(x.shape) != want:
        raise ValueError(
            f"{op}: {name} must have shape {layout} = {want} ({given}), got {name}.shape="
            f"{tuple(x.shape)}."
        )


def _scale(scale: Any, k_dim: int, op: str) -> float:
    if scale is None:
        return 1.0 / math.sqrt(k_dim) if k_dim else 1.0
    return checks.static_real(scale, "scale", op)


def _arguments(op, q, k, v, log_alpha, beta, state, state_name, time: bool):
    """Checked arrays and the result dtype; shapes ``[B, T, H, *]`` (``time``) or ``[B, H, *]``."""
    names = ("q", "k", "v", "log_alpha", "beta") + ((state_name,) if state is not None else ())
    given = [q, k, v, log_alpha, beta] + ([state] if state is not None else [])
    arrays = _floating(given, names, op)
    q, k, v, log_alpha, beta = arrays[:5]
    lead = "[B, T, H" if time else "[B, H"
    if q.ndim != len(lead.split(",")) + 1:
        raise ValueError(
            f"{op}: q must have rank {len(lead.split(',')) + 1}, shape {lead}, K], got "
            f"q.shape={tuple(q.shape)}."
        )
    heads = tuple(q.shape[:-1])
    k_dim = q.shape[-1]
    got = f"from q.shape={tuple(q.shape)}"
    _check_shape(k, "k", tuple(q.shape), f"{lead}, K]", op, got)
    if v.ndim != q.ndim or tuple(v.shape[:-1]) != heads:
        raise ValueError(
            f"{op}: v must have shape {lead}, V] with {lead}] = {heads} ({got}), got "
            f"v.shape={tuple(v.shape)}."
        )
    _check_shape(log_alpha, "log_alpha", heads, f"{lead}]", op, got)
    _check_shape(beta, "beta", heads, f"{lead}]", op, got)
    if state is not None:
        want = (q.shape[0], q.shape[-2], k_dim, v.shape[-1])
        _check_shape(
            arrays[5], state_name, want, "[B, H, K, V]", op, f"{got}, v.shape={tuple(v.shape)}"
        )
    dtype, _ = checks.result_type(arrays, floating=True)
    return arrays, dtype


# --- public functions ---------------------------------------------------------------------------


def gated_delta_rule(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    log_alpha: ArrayLike,
    beta: ArrayLike,
    *,
    initial_state: ArrayLike | None = None,
    scale: float | None = None,
    chunk_size: int = 64,
    mesh_axis: str | tuple[str, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""The gated delta rule (Gated DeltaNet), chunkwise-parallel: ``(o, final_state)``.

    .. math::
      S_t = e^{\ell_t} (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top, \qquad
      o_t = \mathrm{scale}\; S_t^\top q_t, \qquad S_{-1} = \text{initial\_state},

    per batch element and head, with ``S_t`` a ``[K, V]`` matrix and ``l_t = log_alpha``
    (``log_alpha = 0, beta = 1``: DeltaNet; ``log_alpha = -inf``: the state is reset). The
    layout is flash-linear-attention's, ``[batch, time, heads, dim]``. The delta rule is stable
    for ``beta_t |k_t|^2 <= 2``: models L2-normalise ``k`` and take ``beta`` in ``(0, 1)``.

    The forward pass is chunkwise-parallel (the WY/UT representation: one unit lower triangular
    inverse per chunk, in matmuls, then a ``lax.scan`` over chunk states), with every decay an
    ``exp`` of a non-positive segment sum of ``log_alpha``. The derivative rule is a
    ``jax.custom_jvp`` whose tangent is a scan over the chunks carrying ``(S, dS)``, each chunk
    recomputed under ``jax.checkpoint``: ``jvp``, ``jacfwd``, ``hessian`` and ``grad`` all
    work, and the backward pass keeps only the inputs and the ``T / chunk_size`` chunk-boundary
    states ``[B, H, K, V]`` (see :mod:`hadamard_jax._src.delta_rule`).

    Sequence sharding: when the time axis is split over a mesh axis, each device computes
    what its tokens do to the state, ``S -> M S + S_local`` with the transition
    ``M = prod_t alpha_t (I - beta_t k_t k_t^T)`` (``[B, H, K, K]``) and ``S_local`` the state
    reached from zero (one chunked pass with ``K`` extra columns, ``[S | M]``), and only these
    ``n`` pairs move between devices (an all-reduce). Each device then runs its chunks from its
    incoming state (``initial_state`` enters the first): the one-device algorithm and rule, so
    the backward pass keeps the inputs and chunk-boundary states as on one device. The
    sharded forward pass costs about ``2 + K / V`` times one device's chunked pass per token
    (the ``[S | M]`` pass and the rerun), recomputing rather than correcting the outputs (the
    incoming state's effect on ``o_t`` is the chunked recurrence itself, not a closed form).
    It is used when ``q`` (else ``k``, else ``v``) is sharded along ``T`` under Explicit mesh
    axes, or when ``mesh_axis`` names the mesh axis (under ``jax.set_mesh``; Auto axes), as
    :func:`~hadamard_jax.linear_scan` does; ``T`` must be a multiple of the number of devices.

    Dtypes: the result is ``jnp.result_type`` of all inputs (real floating only); the
    computation runs in float32 (float64 for float64 inputs) with ``Precision.HIGHEST``
    matmuls, so bfloat16/float16 inputs give bfloat16/float16 outputs rounded once.

    Args:
      q: queries, ``[B, T, H, K]``.
      k: keys, ``[B, T, H, K]`` (L2-normalised in Gated DeltaNet).
      v: values, ``[B, T, H, V]``.
      log_alpha: the log decay gates, ``[B, T, H]``, in ``[-inf, 0]`` (``alpha_t = exp``).
      beta: the write strengths, ``[B, T, H]``, usually in ``[0, 1]``.
      initial_state: the state before the first token, ``[B, H, K, V]``; ``None`` for zeros.
      scale: the output scale; ``None`` for ``K ** -0.5``.
      chunk_size: the chunk length ``C`` (a static int >= 1); ``T`` need not be a multiple.
      mesh_axis: the mesh axis name (or tuple of names) the time axis is split over, in the
        mesh set by ``jax.set_mesh``; ``None`` detects it under Explicit mesh axes.

    Returns:
      ``(o, final_state)``: ``o`` of shape ``[B, T, H, V]`` and the state after the last token,
      ``[B, H, K, V]`` (``initial_state``, or zeros, for ``T = 0``).

    Raises:
      TypeError: an argument is not an array of a real floating dtype (integer, boolean and
        complex inputs are refused); ``scale`` or ``chunk_size`` is not a static number;
        ``mesh_axis`` is not a name.
      ValueError: the shapes do not match ``[B, T, H, K]``, ``[B, T, H, V]``, ``[B, T, H]``,
        ``[B, H, K, V]``; ``chunk_size < 1``; ``scale`` is not finite; ``mesh_axis`` is given
        without a mesh or is not an axis of it; the sharded ``T`` is not a multiple of the
        number of devices.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import gated_delta_rule
      >>> B, T, H, K, V = 1, 5, 2, 4, 3
      >>> q, k = jax.random.normal(jax.random.key(0), (2, B, T, H, K))
      >>> k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
      >>> v = jnp.ones((B, T, H, V))
      >>> log_alpha, beta = jnp.full((B, T, H), -0.1), jnp.full((B, T, H), 0.5)
      >>> o, state = gated_delta_rule(q, k, v, log_alpha, beta, chunk_size=2)
      >>> o.shape, state.shape
      ((1, 5, 2, 3), (1, 2, 4, 3))

    See also:
      :func:`gated_delta_rule_step` for one token (decoding).
    """
    op = "gated_delta_rule"
    arrays, dtype = _arguments(
        op, q, k, v, log_alpha, beta, initial_state, "initial_state", time=True
    )
    t, k_dim = arrays[0].shape[1], arrays[0].shape[-1]
    c = checks.static_int(chunk_size, "chunk_size", op, lo=1)
    cfg = _Config(
        chunk=max(1, min(c, t)),
        scale=_scale(scale, k_dim, op),
        dtype=dtype,
        has_state=initial_state is not None,
        shards=chunked.time_shards(op, arrays[:3], mesh_axis, t),
    )
    state = arrays[5] if initial_state is not None else None
    return _impl_jit(cfg, *arrays[:5], state)


@functools.partial(jax.jit, static_argnums=(0,))
def _step(cfg: _Config, q, k, v, log_alpha, beta, state):
    compute = activations.compute_dtype(cfg.dtype)
    q, k, v, log_alpha, beta, s = (x.astype(compute) for x in (q, k, v, log_alpha, beta, state))
    s = jnp.exp(log_alpha)[..., None, None] * s
    recalled = jnp.einsum("...k,...kv->...v", k, s, precision=_HIGHEST)
    u = beta[..., None] * (v - recalled)
    s = s + k[..., :, None] * u[..., None, :]
    o = cfg.scale * jnp.einsum("...k,...kv->...v", q, s, precision=_HIGHEST)
    return o.astype(cfg.dtype), s.astype(cfg.dtype)


def gated_delta_rule_step(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    log_alpha: ArrayLike,
    beta: ArrayLike,
    state: ArrayLike,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""One token of :func:`gated_delta_rule` (decoding): ``(o, new_state)``.

    .. math::
      S' = e^{\ell} (I - \beta k k^\top) S + \beta k v^\top, \qquad o = \mathrm{scale}\; S'^\top q,

    computed as ``S <- alpha S``, ``u = beta (v - S^T k)``, ``S' = S + k u^T``. Equal to
    ``gated_delta_rule`` on a sequence of one token (``q[:, None]``, ...) with
    ``initial_state=state``; stepping it token by token gives the parallel form's outputs.
    Differentiable by plain autodiff (no loop).

    Args:
      q: the query, ``[B, H, K]``.
      k: the key, ``[B, H, K]``.
      v: the value, ``[B, H, V]``.
      log_alpha: the log decay gate, ``[B, H]``.
      beta: the write strength, ``[B, H]``.
      state: the state before this token, ``[B, H, K, V]``.
      scale: the output scale; ``None`` for ``K ** -0.5``.

    Returns:
      ``(o, new_state)``: ``[B, H, V]`` and ``[B, H, K, V]``, dtype ``jnp.result_type`` of all
      inputs (computed in float32 for 16-bit inputs).

    Raises:
      TypeError: an argument is not an array of a real floating dtype.
      ValueError: the shapes do not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import gated_delta_rule_step
      >>> q = k = jnp.array([[[1.0, 0.0]]])  # B = H = 1, K = 2
      >>> v = jnp.array([[[2.0, 4.0]]])
      >>> state = jnp.zeros((1, 1, 2, 2))
      >>> o, state = gated_delta_rule_step(q, k, v, jnp.zeros((1, 1)), jnp.ones((1, 1)), state,
      ...                                  scale=1.0)
      >>> o
      Array([[[2., 4.]]], dtype=float32)
    """
    op = "gated_delta_rule_step"
    state = checks.as_array(state, "state", op)  # required: None is a TypeError naming it
    arrays, dtype = _arguments(op, q, k, v, log_alpha, beta, state, "state", time=False)
    k_dim = arrays[0].shape[-1]
    cfg = _Config(chunk=1, scale=_scale(scale, k_dim, op), dtype=dtype, has_state=True)
    return _step(cfg, *arrays)
