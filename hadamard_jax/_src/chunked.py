r"""What the chunked matrix-state ops share: the chunk layout and sequence sharding.

:func:`~hadamard_jax.gated_linear_attention` and :func:`~hadamard_jax.gated_delta_rule` cut
``[B, T, H, ...]`` inputs into chunks of ``C`` tokens (zero-padded at the end) and carry a
``[B, H, K, V]`` state across them. The layout helpers here do that cutting.

**Sequence sharding** (:func:`sharded`). Both recurrences are affine in the state: over a
stretch of tokens, ``S_out = M S_in + S_local``, where ``S_local`` is the state reached from
zero and ``M`` the stretch's transition (GLA: ``diag(exp(sum log g))``, a ``[B, H, K]`` or
``[B, H]`` decay; the delta rule: ``prod_t alpha_t (I - beta_t k_t k_t^T)``, ``[B, H, K, K]``).
With the time axis split over ``n`` devices, each shard computes its own ``(M, S_local)``
(the ops' ``carry`` functions, under ``jax.checkpoint`` so their backward pass keeps only the
inputs), the ``n`` pairs are exchanged (:func:`hadamard_jax._src.linear_scan._gather`: one
all-reduce of ``n`` pairs, the only communication), a scan over them gives every shard its
incoming state ``h_in`` (``h0`` enters shard 0) and the final state, and each shard runs the
op's one-device chunked algorithm from ``h_in``. That last run is the op's own ``custom_jvp``,
so forward mode, reverse mode by transposition and the saved residuals (inputs and
chunk-boundary states) are those of the one-device op; the exchange is a few small linear
operations differentiated by JAX, so the tangent and cotangent exchanges are again ``n``
state-sized pairs. The time axis is split when its dimension of ``q`` (else ``k``, else
``v``) is sharded under Explicit mesh axes, or when ``mesh_axis`` names mesh axes of the mesh
set by ``jax.set_mesh`` (Auto axes), exactly as :func:`~hadamard_jax.linear_scan` decides it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from hadamard_jax._src import linear_scan

# --- the chunk layout ---------------------------------------------------------------------------


def num_chunks(length: int, chunk: int) -> int:
    """How many chunks of ``chunk`` tokens hold ``length`` tokens (the last one padded)."""
    return -(-length // chunk)


def padded(x: jax.Array, length: int, chunk: int) -> jax.Array:
    """``[B, T, H, ...]`` padded with zeros to whole chunks along time."""
    pad = num_chunks(length, chunk) * chunk - length
    return jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)) if pad else x


def to_blocks(x: jax.Array, length: int, chunk: int) -> jax.Array:
    """``[B, T, H, ...]`` -> ``[N, B, H, C, ...]`` (chunk major), padded with zeros."""
    x = padded(x, length, chunk)
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // chunk, chunk, h, *x.shape[3:])
    return jnp.transpose(x, (1, 0, 3, 2, *range(4, x.ndim)))


def from_blocks(x: jax.Array, length: int) -> jax.Array:
    """``[N, B, H, C, ...]`` -> ``[B, T, H, ...]`` (the padding sliced off)."""
    n, b, h, c = x.shape[:4]
    x = jnp.transpose(x, (1, 0, 3, 2, *range(4, x.ndim)))
    return x.reshape(b, n * c, h, *x.shape[4:])[:, :length]


def chunk_of(x: jax.Array, n: Any, chunk: int) -> jax.Array:
    """Chunk ``n`` of a padded ``[B, Tp, H, ...]`` array as ``[B, H, C, ...]``."""
    x = lax.dynamic_slice_in_dim(x, n * chunk, chunk, axis=1)
    return jnp.swapaxes(x, 1, 2)


# --- sequence sharding --------------------------------------------------------------------------


class Shards(NamedTuple):
    """How the time axis of a call is split (static, hashable: part of a jit key)."""

    mesh: Any  # a jax.sharding.AbstractMesh
    axes: tuple[str, ...]  # the mesh axes the time axis is split over
    batch: Any = None  # the PartitionSpec entry of B (Explicit axes), else None
    head: Any = None  # the PartitionSpec entry of H (Explicit axes), else None

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.shape[name] for name in self.axes)

    @property
    def explicit(self) -> tuple[str, ...]:
        types = zip(self.mesh.axis_names, self.mesh.axis_types)
        return tuple(name for name, t in types if t == AxisType.Explicit)


def _explicit_spec(arrays: list[Any]) -> tuple[Any, tuple[Any, ...]]:
    """``(mesh, (B, T, H) entries)`` of the first of ``arrays`` sharded under Explicit axes."""
    for x in arrays:
        sharding = jax.typeof(x).sharding if isinstance(x, jax.Array) else None
        if sharding is not None and AxisType.Explicit in sharding.mesh.axis_types:
            spec = (*sharding.spec, None, None, None)[:3]
            if any(entry is not None for entry in spec):
                return sharding.mesh, spec
    return None, (None, None, None)


def _without(entry: Any, axes: tuple[str, ...]) -> Any:
    """A PartitionSpec entry with the mesh axes ``axes`` taken out."""
    names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
    kept = tuple(name for name in names if name not in axes)
    return None if not kept else (kept[0] if len(kept) == 1 else kept)


def time_shards(op: str, arrays: list[Any], mesh_axis: Any, length: int) -> Shards | None:
    """The split of the time axis (axis 1 of ``[B, T, H, ...]`` arrays), or ``None``.

    ``mesh_axis`` as in :func:`~hadamard_jax.linear_scan`: ``None`` detects the split from
    the arrays' types under Explicit mesh axes (``q``, else ``k``, else ``v``); a name or
    tuple of names splits it over those axes of the mesh set by ``jax.set_mesh``. The errors
    (a ``TypeError``/``ValueError`` naming ``mesh_axis``, or a time length that is not a
    multiple of the number of shards) are :func:`linear_scan._mesh_axes`'s.
    """
    mesh, spec = _explicit_spec(arrays)
    layout = None if mesh is None else linear_scan._Layout(mesh, spec)
    time_mesh, axes = linear_scan._mesh_axes(layout, 1, mesh_axis, length, op)
    if not axes:
        return None
    if mesh is None or mesh != time_mesh:
        return Shards(time_mesh, tuple(axes))
    return Shards(time_mesh, tuple(axes), _without(spec[0], axes), _without(spec[2], axes))


def _spec(shards: Shards, ndim: int, state: bool) -> P:
    """``[B, T, H, ...]`` (``state=False``) or ``[B, H, K, V]`` placed on the shards."""
    time = shards.axes[0] if len(shards.axes) == 1 else shards.axes
    head = (shards.batch, shards.head) if state else (shards.batch, time, shards.head)
    return P(*head, *(None,) * (ndim - len(head)))


def _place(shards: Shards, x: jax.Array, spec: P) -> jax.Array:
    """``x`` resharded to ``spec`` under Explicit axes where its type says otherwise."""
    if not shards.explicit:
        return x
    have = tuple(jax.typeof(x).sharding.spec)
    have = have + (None,) * (x.ndim - len(have))
    if have == tuple(spec):
        return x
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(shards.mesh, spec))


def _varying(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """``x`` marked as varying over the manual ``axes`` (a scan carry must match its body)."""
    varying = jax.typeof(x).manual_axis_type.varying
    missing = tuple(name for name in axes if name not in varying)
    return lax.pcast(x, missing, to="varying") if missing else x


def sharded(
    shards: Shards,
    carry: Callable[..., tuple[Any, Any]],
    apply: Callable[[Any, Any], Any],
    local: Callable[..., Any],
    xs: list[jax.Array],
    h0: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(o, final_state)`` of a chunked op with the time axis split over ``shards``.

    ``xs`` are the op's ``[B, T, H, ...]`` inputs and ``h0`` its ``[B, H, K, V]`` initial
    state. Per shard: ``carry(*xs) -> (M, S_local)`` (the shard's transition and its state from
    zero), ``apply(M, h) -> M h`` and ``local(*xs, h_in) -> o`` (the one-device algorithm from
    ``h_in``). Only the ``n`` pairs ``(M, S_local)`` move between devices.
    """
    axes, n = shards.axes, shards.devices
    manual = set(axes) | set(shards.explicit)

    def body(*args):
        *parts, h = args
        m, s = jax.checkpoint(carry)(*parts)
        m_all, s_all = linear_scan._gather((m, s), axes, n)

        def step(state, pair):
            return apply(pair[0], state) + pair[1], state

        last, h_in = lax.scan(step, h, (m_all, s_all))
        mine = _varying(h_in[lax.axis_index(axes)], axes)
        return local(*parts, mine), last

    specs = [_spec(shards, x.ndim, False) for x in xs]
    state_spec = _spec(shards, h0.ndim, True)
    xs = [_place(shards, x, spec) for x, spec in zip(xs, specs)]
    h0 = _place(shards, h0, state_spec)
    return jax.shard_map(
        body,
        mesh=shards.mesh,
        in_specs=(*specs, state_spec),
        out_specs=(_spec(shards, 4, False), state_spec),
        axis_names=manual,
    )(*xs, h0)


def varying_like(x: jax.Array, like: jax.Array) -> jax.Array:
    """``x`` with the varying manual axes of ``like`` (inside :func:`sharded`'s shards)."""
    varying = tuple(sorted(jax.typeof(like).manual_axis_type.varying))
    return _varying(x, varying) if varying else x
