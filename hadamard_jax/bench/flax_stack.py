"""Workload: a Flax NNX stack of gated MLP layers, the fused ``GatedMLP`` vs plain ``nnx.Linear``.

Eight residual layers ``x <- x + GatedMLP(x)`` (SwiGLU, no biases) with parameters stacked on a
leading layer axis (built with ``nnx.vmap``) and applied with ``lax.scan`` over that axis
(``nnx.split`` once, ``nnx.merge`` inside the scan body). Three implementations of the same
model and loss:

* ``"gated_mlp"``: :class:`hadamard_jax.nnx.GatedMLP` (the fused :func:`hadamard_jax.gated_mlp`
  op, whose rule keeps only ``x``, ``x W_gate`` and ``x W_up``);
* ``"plain"``: three ``nnx.Linear`` and ``jax.nn.silu(gate(x)) * up(x)``;
* ``"remat"``: the plain layer under ``jax.checkpoint(policy=dots_saveable)``.

The figure is ``memory_analysis().temp_size_in_bytes`` of the compiled training step
``jax.jit(jax.value_and_grad(loss))`` (compiled from abstract shapes: nothing of that size is
allocated), and the wall-time ratio of ``"gated_mlp"`` over ``"plain"`` timed alternately in one
process. The functions are small and pure for reuse by the asv suite (jitted steps cached at
module level). Run ``python -m hadamard_jax.bench.flax_stack``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Unpack

import jax
import jax.numpy as jnp
from flax import nnx

from hadamard_jax.bench import args as _args
from hadamard_jax.bench import ffn_stack, kernels, timing
from hadamard_jax.bench.args import SizeOptions
from hadamard_jax.nnx import GatedMLP

IMPLS = ("gated_mlp", "plain", "remat")


class PlainGatedMLP(nnx.Module):
    """The reference block: ``down(silu(gate(x)) * up(x))`` from three ``nnx.Linear``."""

    def __init__(
        self, d: int, h: int, *, dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs
    ):
        self.gate = nnx.Linear(
            d, h, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.up = nnx.Linear(d, h, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.down = nnx.Linear(
            h, d, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


def make_layer(impl: str, key: jax.Array, *, d: int, h: int, dtype: Any) -> nnx.Module:
    """One layer of ``impl`` (``"remat"`` uses the plain layer)."""
    rngs = nnx.Rngs(key)
    if impl == "gated_mlp":
        return GatedMLP(d, h, use_bias=False, param_dtype=dtype, rngs=rngs)
    if impl in ("plain", "remat"):
        return PlainGatedMLP(d, h, param_dtype=dtype, rngs=rngs)
    raise ValueError(f"flax_stack: unknown impl {impl!r}; expected one of {IMPLS}.")


def make_stack(
    impl: str,
    key: jax.Array,
    *,
    layers: int = 8,
    d: int = 512,
    h: int = 2048,
    dtype: Any = jnp.float32,
) -> nnx.Module:
    """``layers`` layers with parameters stacked on a leading axis (``nnx.vmap``)."""

    @nnx.vmap(in_axes=0, out_axes=0)
    def build(k):
        return make_layer(impl, k, d=d, h=h, dtype=dtype)

    return build(jax.random.split(key, layers))


def split_stack(impl: str, key: jax.Array, **kwargs: Any) -> tuple[nnx.GraphDef, nnx.State]:
    """``nnx.split`` of :func:`make_stack`: ``(graphdef, stacked params)``."""
    return nnx.split(make_stack(impl, key, **kwargs))


def make_loss(impl: str, graphdef: nnx.GraphDef) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """``loss(state, x) = mean(y^2)`` with ``y`` the scan of ``x + layer(x)`` over the layers."""

    def body(x, state):
        return x + nnx.merge(graphdef, state)(x)

    if impl == "remat":
        body = jax.checkpoint(body, policy=jax.checkpoint_policies.dots_saveable)

    def loss(state, x):
        y, _ = jax.lax.scan(lambda x, s: (body(x, s), None), x, state)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    return loss


@functools.cache
def _abstract(impl: str, layers: int, d: int, h: int, dtype: Any):
    return nnx.split(
        nnx.eval_shape(
            lambda: make_stack(impl, jax.random.key(0), layers=layers, d=d, h=h, dtype=dtype)
        )
    )


@functools.cache
def train_step(
    impl: str, *, layers: int = 8, d: int = 512, h: int = 2048, dtype: Any = jnp.float32
):
    """``jax.jit(jax.value_and_grad(loss))``: ``(state, x) -> (loss, grads)``; cached."""
    graphdef, _ = _abstract(impl, layers, d, h, jnp.dtype(dtype))
    return jax.jit(jax.value_and_grad(make_loss(impl, graphdef)))


@functools.cache
def compiled_temp_bytes(impl: str, *, dtype: Any = jnp.float32, **size: Unpack[SizeOptions]) -> int:
    """``memory_analysis().temp_size_in_bytes`` of the compiled training step of ``impl``.

    ``size``: any of ``batch``, ``d``, ``h``, ``layers`` (the others as in ``ffn_stack.SIZE``).
    """
    dtype = jnp.dtype(dtype)
    s = _args.sized(size, ffn_stack.SIZE)
    _, state = _abstract(impl, s["layers"], s["d"], s["h"], dtype)
    x = jax.ShapeDtypeStruct((s["batch"], s["d"]), dtype)
    step = train_step(impl, layers=s["layers"], d=s["d"], h=s["h"], dtype=dtype)
    return kernels.temp_bytes(step, state, x)


def memory_ratios(**kwargs: Any) -> dict[str, float]:
    """``{"vs_plain": a / b, "vs_remat": a / c}`` of :func:`compiled_temp_bytes`."""
    a, b, c = (compiled_temp_bytes(impl, **kwargs) for impl in IMPLS)
    return {"vs_plain": a / b, "vs_remat": a / c}


def time_ratio(
    *,
    repeats: int = 5,
    dtype: Any = jnp.float32,
    impl: str = "gated_mlp",
    baseline: str = "plain",
    seed: int = 0,
    **size: Unpack[SizeOptions],
) -> dict[str, Any]:
    """Wall time of ``impl`` over ``baseline``, timed alternately in one process.

    Both steps are compiled and run once first (warm-up excluded); then ``repeats`` rounds time
    the two back to back, in alternating order
    (:func:`hadamard_jax.bench.timing.step_time_ratio`). ``size``: any of ``batch``, ``d``,
    ``h``, ``layers`` (default ``ffn_stack.SIZE``).

    Returns:
      ``{"ratio": median per-round ratio, "ratios": [...], "<impl>_s": [...],
      "<baseline>_s": [...]}``; below 1 means ``impl`` is faster.
    """
    s = _args.sized(size, ffn_stack.SIZE)
    kp, kx = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (s["batch"], s["d"]), dtype)
    shape = {"layers": s["layers"], "d": s["d"], "h": s["h"]}
    calls = {}
    for name in (impl, baseline):
        _, state = split_stack(name, kp, **shape, dtype=dtype)
        step = train_step(name, **shape, dtype=jnp.dtype(dtype))
        calls[name] = timing.Call(step, (state, x))
    return timing.step_time_ratio(calls, impl, baseline, repeats=repeats)


def report(**kwargs: Any) -> dict[str, Any]:
    """Temp bytes of every impl and the two memory ratios (no timing)."""
    out: dict[str, Any] = {impl: compiled_temp_bytes(impl, **kwargs) for impl in IMPLS}
    out.update(memory_ratios(**kwargs))
    return out


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    size, args = _args.workload_args(_PROG, _DESCRIPTION, ffn_stack.SIZE, argv)
    figures = report(**size)
    for impl in IMPLS:
        print(f"{impl:>10}: temp {figures[impl] / 2**20:8.1f} MiB")
    print(
        f"gated_mlp / plain = {figures['vs_plain']:.3f}   "
        f"gated_mlp / remat = {figures['vs_remat']:.3f}"
    )
    if not args.no_time:
        t = time_ratio(repeats=args.repeats, **size)
        print(
            f"time gated_mlp / plain = {t['ratio']:.3f} (median of {args.repeats}; per round "
            + ", ".join(f"{r:.3f}" for r in t["ratios"])
            + ")"
        )


_PROG = "python -m hadamard_jax.bench.flax_stack"
_DESCRIPTION = "A Flax NNX stack of gated MLP layers: training memory and time, fused vs plain."


if __name__ == "__main__":  # pragma: no cover
    main()
