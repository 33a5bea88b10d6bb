"""Gating ops against their plain ``jax.nn`` compositions: fwd+bwd kernels and saved residuals.

Each case pairs a :mod:`hadamard_jax` gating op with the composition a user would write
without it (``jax.nn.silu(gate) * value`` for :func:`hadamard_jax.swiglu`, ``jax.nn.glu`` for
:func:`hadamard_jax.glu_packed`, ...). Both are jitted once at import as
``(out, *vjp(ct))`` so the asv suite and the report time the same functions.

Saved-residual bytes are what reverse mode keeps between the forward and the backward pass of
the op alone: the leaves of the ``jax.vjp`` closure, counted from abstract shapes (nothing is
run). The plain compositions keep their intermediates too (``jax.nn.silu(g) * v`` keeps ``g``,
``v`` and 3 intermediates); the library's rules keep only the inputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import hadamard_jax
from hadamard_jax._src import gates
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import kernels, timing
from hadamard_jax.bench.timing import Call

IMPLS = ("hadamard_jax", "plain")


class GateCase(NamedTuple):
    """A gating op, its plain composition, and the number of ``(n, n)`` operands it takes."""

    name: str
    ours: Callable[..., jax.Array]
    plain: Callable[..., jax.Array]
    arity: int
    packed: bool = False


#: The plain composition a user writes for each gate of the gate table (and its approximate
#: form, ``<name>_tanh``), as ``(act, value)``: the output is ``act(gate) * value(v)``. The
#: rows' ``plain`` fields (:data:`hadamard_jax._src.gates.PLAIN`), shared with the tests.
PLAIN = gates.PLAIN


def _plain_pair(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    act, value = PLAIN[name]
    return lambda g, v: act(g) * value(v)


def _cases() -> dict[str, GateCase]:
    """Every gate of the gate table (two-input form), its approximate form, the packed GLU and
    the highway combination."""
    cases = []
    for name, gate in gates.GATES.items():
        op = getattr(hadamard_jax, name)
        cases.append(GateCase(name, op, _plain_pair(name), 2))
        if gate.approximate is not None:
            approx = functools.partial(op, approximate=True)
            cases.append(GateCase(f"{name}_tanh", approx, _plain_pair(f"{name}_tanh"), 2))
    cases += [
        GateCase("glu_packed", hadamard_jax.glu_packed, lambda x: jax.nn.glu(x, axis=-1), 1, True),
        GateCase("highway", hadamard_jax.highway, lambda t, g, c: g * t + (1 - g) * c, 3),
    ]
    return {case.name: case for case in cases}


CASES: dict[str, GateCase] = _cases()
NAMES = tuple(CASES)


def _fn(name: str, impl: str) -> Callable[..., jax.Array]:
    if name not in CASES:
        raise ValueError(f"gating: op must be one of {NAMES}, got {name!r}.")
    if impl not in IMPLS:
        raise ValueError(f"gating: impl must be one of {IMPLS}, got {impl!r}.")
    case = CASES[name]
    return case.ours if impl == "hadamard_jax" else case.plain


def _forward_backward(fn: Callable[..., jax.Array]):
    def fwd_bwd(ct: jax.Array, *args: jax.Array):
        out, vjp = jax.vjp(fn, *args)
        return (out, *vjp(ct))

    return fwd_bwd


FORWARD_BACKWARD = {
    (name, impl): jax.jit(_forward_backward(_fn(name, impl))) for name in NAMES for impl in IMPLS
}


@functools.cache
def operands(name: str, n: int, dtype: str) -> tuple[jax.Array, ...]:
    """``(ct, *inputs)`` for case ``name`` at size ``n`` (cached).

    Two-input gates get ``gate, value`` standard normal of shape ``(n, n)``; the packed form one
    ``(n, 2n)`` array; ``highway`` ``transform, gate, carry`` with ``gate`` in ``(0, 1)``.
    ``ct`` has the output's shape ``(n, n)``.
    """
    case = CASES[name]
    keys = jax.random.split(jax.random.key(0), 4)

    def normal(key, shape):
        return jax.random.normal(key, shape, jnp.float32).astype(dtype)

    if case.packed:
        args = [normal(keys[1], (n, 2 * n))]
    elif name == "highway":
        gate = jax.nn.sigmoid(jax.random.normal(keys[2], (n, n), jnp.float32)).astype(dtype)
        args = [normal(keys[1], (n, n)), gate, normal(keys[3], (n, n))]
    else:
        args = [normal(keys[1], (n, n)), normal(keys[2], (n, n))]
    return jax.block_until_ready((normal(keys[0], (n, n)), *args))


def forward_backward_call(name: str, impl: str, n: int, dtype: str):
    """A blocking zero-argument call of the fwd+bwd of case ``name`` in ``impl``."""
    _fn(name, impl)
    return Call(FORWARD_BACKWARD[(name, impl)], operands(name, n, dtype))


def time_alternately(
    name: str, n: int, dtype: str, *, rounds: int, min_sample_s: float
) -> dict[str, list[float]]:
    """Samples of the fwd+bwd of ``name`` in each of :data:`IMPLS`, timed alternately.

    Returns:
      ``{impl: rounds samples, seconds per call}``, from
      :func:`~hadamard_jax.bench.timing.interleaved`.
    """
    calls = {impl: forward_backward_call(name, impl, n, dtype) for impl in IMPLS}
    return timing.interleaved(calls, rounds=rounds, min_sample_s=min_sample_s)


def saved_residual_bytes(name: str, impl: str, n: int, dtype: Any) -> int:
    """Bytes reverse mode keeps for the backward pass of ``name`` in ``impl`` at size ``n``.

    The sum of the leaves of the ``jax.vjp`` closure, from abstract shapes (nothing runs);
    the op's own inputs count too.

    Returns:
      The byte count.

    Examples:
      >>> from hadamard_jax.bench.gating import saved_residual_bytes
      >>> saved_residual_bytes("swiglu", "hadamard_jax", 1024, "float32") // (1024 * 1024 * 4)
      2
      >>> saved_residual_bytes("swiglu", "plain", 1024, "float32") // (1024 * 1024 * 4)
      5
    """
    fn = _fn(name, impl)
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _abstract_operands(name, n, dtype)]
    closure = jax.eval_shape(lambda *args: jax.vjp(fn, *args)[1], *shapes)
    return int(sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(closure)))


def _abstract_operands(name: str, n: int, dtype: Any) -> list[jax.ShapeDtypeStruct]:
    case = CASES[name]
    if case.packed:
        return [jax.ShapeDtypeStruct((n, 2 * n), jnp.dtype(dtype))]
    return [jax.ShapeDtypeStruct((n, n), jnp.dtype(dtype))] * case.arity


def stream_bytes(name: str, n: int, dtype: Any) -> float:
    """Bytes of one fwd+bwd call of ``name`` at size ``n``, counted as STREAM counts them.

    ``ct`` and the inputs read once, the output and the inputs' cotangents written once,
    whatever the caches do (as :func:`hadamard_jax.bench.kernels.work` counts).

    Examples:
      >>> from hadamard_jax.bench.gating import stream_bytes
      >>> stream_bytes("swiglu", 1024, "float32") / (1024 * 1024 * 4)  # ct, g, v, out, dg, dv
      6.0
      >>> stream_bytes("highway", 1024, "bfloat16") / (1024 * 1024 * 2)  # three inputs
      8.0
    """
    inputs = sum(math.prod(x.shape) for x in _abstract_operands(name, n, dtype))
    return float((2 * n * n + 2 * inputs) * jnp.dtype(dtype).itemsize)


def cost(name: str, impl: str, n: int, dtype: Any) -> dict[str, float]:
    """XLA's compiled cost of the fwd+bwd of ``name`` in ``impl``, per output element.

    Returns:
      ``{"flops", "transcendentals", "bytes"}`` from ``cost_analysis()``, each divided by
      ``n * n``: deterministic figures that explain a time ratio (a rule that recomputes the
      activation in the backward pass pays more transcendentals than a saved intermediate).
    """
    ct = jax.ShapeDtypeStruct((n, n), jnp.dtype(dtype))
    analysis = kernels.cost_analysis(
        FORWARD_BACKWARD[(name, impl)], ct, *_abstract_operands(name, n, dtype)
    )
    size = float(n) * n
    return {
        "flops": float(analysis.get("flops", 0.0)) / size,
        "transcendentals": float(analysis.get("transcendentals", 0.0)) / size,
        "bytes": float(analysis.get("bytes accessed", 0.0)) / size,
    }


def ratio_table(
    sizes: Sequence[int], dtypes: Sequence[str], *, rounds: int = 15, min_sample_s: float = 0.03
) -> Iterator[str]:
    """A header, then one line per gate, size and dtype as each is measured: the fwd+bwd time
    ratio and the transcendentals per element.

    The ratio is ours over plain, timed alternately (:func:`time_alternately`), as the median of
    the per-round ratios and as the ratio of the best samples; the transcendentals are
    :func:`cost`'s, ours and plain.
    """
    yield "dtype     n     op               median  best   transcendentals/element ours|plain"
    for dtype in dtypes:
        for n in sizes:
            for name in NAMES:
                samples = time_alternately(name, n, dtype, rounds=rounds, min_sample_s=min_sample_s)
                ours, plain = (samples[impl] for impl in IMPLS)
                t = [cost(name, impl, n, dtype)["transcendentals"] for impl in IMPLS]
                yield (
                    f"{dtype:9s} {n:<5d} {name:16s} {timing.median_ratio(ours, plain):.3f}   "
                    f"{timing.best_ratio(ours, plain):.3f}  {t[0]:.0f}|{t[1]:.0f}"
                )


#: Eager (un-jitted) calls: a library op and the ``jnp`` call a user would write instead.
EAGER: dict[str, tuple[Callable[..., jax.Array], Callable[..., jax.Array]]] = {
    "hadamard": (hadamard_jax.hadamard, jnp.multiply),
    "swiglu": (hadamard_jax.swiglu, lambda g, v: jax.nn.silu(g) * v),
    "glu": (hadamard_jax.glu, lambda g, v: jax.nn.sigmoid(g) * v),
    "geglu": (hadamard_jax.geglu, lambda g, v: jax.nn.gelu(g, approximate=False) * v),
}


def eager_overhead(
    n: int = 32, dtype: str = "float32", *, rounds: int = 15, min_sample_s: float = 0.02
) -> dict[str, dict[str, float]]:
    """Time per eager call of each :data:`EAGER` op over its ``jnp`` composition, alternated.

    An eager call pays dispatch, not compute, at small sizes: this measures what the library
    adds to it (argument checks, which run once per trace: :func:`hadamard_jax._src.checks.
    checked_once`). Operands are two ``(n, n)`` arrays; each pair of calls is timed
    alternately in this process (:func:`~hadamard_jax.bench.timing.interleaved`).

    Returns:
      ``{name: {"ours_us", "plain_us": best microseconds per call, "ratio": best ours over
      best plain, "median_ratio": median of the per-round ratios}}``.

    Examples:
      >>> figures = eager_overhead(4, rounds=1, min_sample_s=0.0)
      >>> sorted(figures["hadamard"])
      ['median_ratio', 'ours_us', 'plain_us', 'ratio']
    """
    g = jax.random.normal(jax.random.key(0), (n, n), dtype)
    v = jax.random.normal(jax.random.key(1), (n, n), dtype)
    calls = {}
    for name, (ours, plain) in EAGER.items():
        calls[(name, "ours")] = Call(ours, (g, v))
        calls[(name, "plain")] = Call(plain, (g, v))
    samples = timing.interleaved(calls, rounds=rounds, min_sample_s=min_sample_s)
    figures = {}
    for name in EAGER:
        ours, plain = samples[(name, "ours")], samples[(name, "plain")]
        figures[name] = {
            "ours_us": timing.best(ours) * 1e6,
            "plain_us": timing.best(plain) * 1e6,
            "ratio": timing.best_ratio(ours, plain),
            "median_ratio": timing.median_ratio(ours, plain),
        }
    return figures


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    parser = _args.parser(_PROG, _DESCRIPTION, rounds=("--rounds", 15))
    parser.add_argument("--sizes", default="1024,2048,4096", help="comma-separated sides n")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes")
    parser.add_argument(
        "--eager", action="store_true", help="eager call time over jnp instead (n = --sizes)"
    )
    args = parser.parse_args(argv)
    if args.eager:
        for n in [int(n) for n in args.sizes.split(",")]:
            for dtype in args.dtypes.split(","):
                for name, f in eager_overhead(n, dtype, rounds=args.rounds).items():
                    print(
                        f"{dtype:9s} {n:<5d} {name:9s} ours {f['ours_us']:6.1f} us  plain "
                        f"{f['plain_us']:6.1f} us  best {f['ratio']:.3f}  median "
                        f"{f['median_ratio']:.3f}",
                        flush=True,
                    )
        return
    sizes = [int(n) for n in args.sizes.split(",")]
    for line in ratio_table(sizes, args.dtypes.split(","), rounds=args.rounds):
        print(line, flush=True)


_PROG = "python -m hadamard_jax.bench.gating"
_DESCRIPTION = (
    "Gating ops, fwd+bwd: time over the plain jax.nn composition (alternated) "
    "and transcendentals per element."
)


if __name__ == "__main__":  # pragma: no cover
    main()
