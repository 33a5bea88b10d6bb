"""Workload: a stack of gated feed-forward layers, plain ``jax.nn`` vs the gating rules.

Each layer is a residual gated FFN (LLaMA / T5 v1.1 style)::

    x <- x + (act(x @ W1) * (x @ W2)) @ W3        x: (batch, d), W1, W2: (d, h), W3: (h, d)

with ``act`` SiLU (``"swiglu"``) or GELU (``"geglu"``), applied under ``lax.scan`` over the layer
axis of stacked weights. Under ``scan`` JAX, not XLA, decides what the backward pass keeps, so
the derivative rule of the gate shows up in the compiled temp memory. Three
implementations of the same loss:

* ``"plain"``: ``jax.nn.silu(a) * b`` / ``jax.nn.gelu(a, approximate=...) * b``;
* ``"hadamard_jax"``: :func:`hadamard_jax.swiglu` / :func:`hadamard_jax.geglu`;
* ``"remat"``: the plain layer under ``jax.checkpoint(policy=dots_saveable)``.

The functions are small and pure so that the asv suite can import them; jitted steps are
cached at module level (asv re-runs ``setup`` before every timed call).

Run ``python -m hadamard_jax.bench.ffn_stack`` for the memory and time ratios at the documented
size (d=512, h=2048, batch 2048, 8 layers, float32).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from typing import Any, Unpack

import jax
import jax.numpy as jnp

from hadamard_jax._src.glu import geglu, swiglu
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import kernels, timing
from hadamard_jax.bench.args import SizeOptions

GATES = ("swiglu", "geglu")
IMPLS = ("plain", "hadamard_jax", "remat")


Size = _args.Size

# The size of the report's and the asv suite's memory figures (the defaults below).
SIZE = Size(batch=2048, d=512, h=2048, layers=8)

Params = dict[str, jax.Array]
Loss = Callable[[Params, jax.Array], jax.Array]


def init_params(
    key: jax.Array, *, layers: int = 8, d: int = 512, h: int = 2048, dtype: Any = jnp.float32
) -> Params:
    """Stacked weights of ``layers`` gated FFN layers.

    Returns:
      ``{"w1": (layers, d, h), "w2": (layers, d, h), "w3": (layers, h, d)}`` in ``dtype``,
      normal with variance ``1/fan_in``.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": (jax.random.normal(k1, (layers, d, h)) * d**-0.5).astype(dtype),
        "w2": (jax.random.normal(k2, (layers, d, h)) * d**-0.5).astype(dtype),
        "w3": (jax.random.normal(k3, (layers, h, d)) * h**-0.5).astype(dtype),
    }


def init_inputs(key: jax.Array, *, batch: int = 2048, d: int = 512, dtype: Any = jnp.float32):
    """Inputs of shape ``(batch, d)``, standard normal, in ``dtype``."""
    return jax.random.normal(key, (batch, d)).astype(dtype)


def _gate_fn(
    gate: str, impl: str, approximate: bool
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if gate not in GATES:
        raise ValueError(f"ffn_stack: gate must be one of {GATES}, got {gate!r}.")
    if impl not in IMPLS:
        raise ValueError(f"ffn_stack: impl must be one of {IMPLS}, got {impl!r}.")
    if impl == "hadamard_jax":
        if gate == "swiglu":
            return swiglu
        return functools.partial(geglu, approximate=approximate)
    if gate == "swiglu":
        return lambda a, b: jax.nn.silu(a) * b
    return lambda a, b: jax.nn.gelu(a, approximate=approximate) * b


def make_loss(gate: str, impl: str, *, approximate: bool = False) -> Loss:
    """The loss ``mean(y**2)`` of the layer stack, ``y = stack(x)``.

    Args:
      gate: ``"swiglu"`` or ``"geglu"`` (exact GELU unless ``approximate=True``).
      impl: ``"plain"``, ``"hadamard_jax"`` or ``"remat"`` (see the module docstring).
      approximate: tanh-approximate GELU, for ``gate="geglu"``.

    Returns:
      ``loss(params, x) -> scalar``, ``params`` from :func:`init_params`, ``x`` of shape
      ``(batch, d)``.
    """
    act_mul = _gate_fn(gate, impl, approximate)

    def layer(x, w):
        return x + act_mul(x @ w["w1"], x @ w["w2"]) @ w["w3"]

    if impl == "remat":
        layer = jax.checkpoint(layer, policy=jax.checkpoint_policies.dots_saveable)

    def loss(params: Params, x: jax.Array) -> jax.Array:
        y, _ = jax.lax.scan(lambda x, w: (layer(x, w), None), x, params)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    return loss


def train_step(loss: Loss) -> jax.stages.Wrapped:
    """``jax.jit(jax.value_and_grad(loss))``: ``(params, x) -> (loss, grads)``."""
    return jax.jit(jax.value_and_grad(loss))


@functools.cache
def cached_train_step(gate: str, impl: str, *, approximate: bool = False) -> jax.stages.Wrapped:
    """:func:`train_step` of :func:`make_loss`, built once per ``(gate, impl, approximate)``."""
    return train_step(make_loss(gate, impl, approximate=approximate))


def _abstract_args(batch: int, d: int, h: int, layers: int, dtype: Any):
    dtype = jnp.dtype(dtype)
    params = {
        "w1": jax.ShapeDtypeStruct((layers, d, h), dtype),
        "w2": jax.ShapeDtypeStruct((layers, d, h), dtype),
        "w3": jax.ShapeDtypeStruct((layers, h, d), dtype),
    }
    return params, jax.ShapeDtypeStruct((batch, d), dtype)


@functools.cache
def compiled_temp_bytes(
    gate: str,
    impl: str,
    *,
    dtype: Any = jnp.float32,
    approximate: bool = False,
    **size: Unpack[SizeOptions],
) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the compiled training step.

    ``size``: any of ``batch``, ``d``, ``h``, ``layers`` (the others as in :data:`SIZE`).
    Compiled from abstract shapes (nothing is allocated); deterministic for a given JAX/XLA
    version and backend. Cached.
    """
    step = cached_train_step(gate, impl, approximate=approximate)
    return kernels.temp_bytes(step, *_abstract_args(**_args.sized(size, SIZE), dtype=dtype))


def memory_ratio(gate: str, impl: str = "hadamard_jax", **kwargs: Any) -> float:
    """``compiled_temp_bytes(gate, impl) / compiled_temp_bytes(gate, "plain")``."""
    return compiled_temp_bytes(gate, impl, **kwargs) / compiled_temp_bytes(gate, "plain", **kwargs)


def time_ratio(
    gate: str,
    *,
    repeats: int = 5,
    dtype: Any = jnp.float32,
    approximate: bool = False,
    impl: str = "hadamard_jax",
    seed: int = 0,
    **size: Unpack[SizeOptions],
) -> dict[str, Any]:
    """Wall time of ``impl`` over ``"plain"``, timed alternately in one process.

    Both steps are compiled and run once before timing (warm-up excluded); then ``repeats``
    rounds time plain and ``impl`` back to back in alternating order
    (:func:`hadamard_jax.bench.timing.step_time_ratio`), so drifting load on a shared machine
    hits both alike. ``size``: any of ``batch``, ``d``, ``h``, ``layers`` (default :data:`SIZE`).

    Returns:
      ``{"ratio": median of per-round ratios, "ratios": [...], "plain_s": [...],
      "<impl>_s": [...]}``; a ratio below 1 means ``impl`` is faster.
    """
    s = _args.sized(size, SIZE)
    kp, kx = jax.random.split(jax.random.key(seed))
    params = init_params(kp, layers=s["layers"], d=s["d"], h=s["h"], dtype=dtype)
    x = init_inputs(kx, batch=s["batch"], d=s["d"], dtype=dtype)
    calls = {
        name: timing.Call(cached_train_step(gate, name, approximate=approximate), (params, x))
        for name in ("plain", impl)
    }
    return timing.step_time_ratio(calls, impl, "plain", repeats=repeats)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    size, args = _args.workload_args(_PROG, _DESCRIPTION, SIZE, argv)
    for gate in GATES:
        mem = {impl: compiled_temp_bytes(gate, impl, **size) for impl in IMPLS}
        line = ", ".join(f"{impl} {mem[impl] / 2**20:.0f} MiB" for impl in IMPLS)
        ratio = mem["hadamard_jax"] / mem["plain"]
        print(f"{gate}: temp memory {line}; hadamard_jax/plain = {ratio:.3f}")
    if args.no_time:
        return
    for gate in GATES:
        r = time_ratio(gate, repeats=args.repeats, **size)
        spread = f"min {min(r['ratios']):.3f}, max {max(r['ratios']):.3f}"
        plain = statistics.median(r["plain_s"])
        ours = statistics.median(r["hadamard_jax_s"])
        print(
            f"{gate}: time hadamard_jax/plain = {r['ratio']:.3f} (median of {args.repeats} "
            f"alternations; {spread}); plain {plain:.3f} s, hadamard_jax {ours:.3f} s"
        )


_PROG = "python -m hadamard_jax.bench.ffn_stack"
_DESCRIPTION = "A stack of gated feed-forward layers: training memory and time, plain vs ours."


if __name__ == "__main__":  # pragma: no cover
    main()
