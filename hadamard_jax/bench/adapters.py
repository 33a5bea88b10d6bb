"""Adapter training steps: the library's ops against the form-the-update way of HF peft.

``python -m hadamard_jax.bench.adapters`` measures, for LoHa, HiRA and DoRA at one size
(default ``in = out = 4096``, ``r = 8``, batch 2048, float32), a training step (loss and the
gradients of the adapter parameters; the base kernel and the input are fixed) in two forms:

* ``ours``: :func:`hadamard_jax.loha_matmul` (Khatri-Rao path), :func:`hadamard_jax.hira_matmul`
  (``"hira"``: ``path="auto"``, which forms ``W0 * (A B)``; ``"hira_sum"``: ``path="sum"``,
  ``r`` matmuls and no ``[in, out]`` array) and :func:`hadamard_jax.dora_matmul`, each with its
  own derivative rule;
* ``peft``: the formulas of peft's ``tuners/loha/layer.py`` (``x @ ((A1 B1) * (A2 B2))``),
  ``tuners/hira/layer.py`` (``x @ (W0 * (A B))``) and ``tuners/lora/dora.py`` (the ``[in, out]``
  LoRA weight formed for the detached norm, ``(m / n - 1) x W + (m / n) s x A B + x W``), in
  plain JAX with JAX's autodiff.

Figures: compiled ``temp_size_in_bytes`` (from abstract shapes), XLA's flop count, the step
time of each (timed alternately in one process, :func:`hadamard_jax.bench.timing.interleaved`)
and the residuals reverse mode keeps (``jax.ad_checkpoint.print_saved_residuals``).
:func:`rows` returns them for the report.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np

from hadamard_jax._src.adapters import dora_matmul, hira_matmul, loha_matmul
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import timing

OPS = ("loha", "hira", "hira_sum", "dora")
#: The ops :func:`rows` measures by default (``"hira_sum"`` takes 12x HiRA's flops: CLI only).
REPORT_OPS = ("loha", "hira", "dora")
IMPLS = ("ours", "peft")
SCALE = 2.0  # alpha / r with alpha = 2 r


def _peft_loha(x, a1, b1, a2, b2):
    return x @ (((a1 @ b1) * (a2 @ b2)) * SCALE)


def _peft_hira(x, w0, a, b):
    return x @ (w0 * (a @ b))


def _peft_dora(x, w, a, b, m):
    lora_weight = jax.lax.stop_gradient(a @ b)
    norm = jax.lax.stop_gradient(jnp.linalg.norm(w + SCALE * lora_weight, axis=0))
    c = (m / norm)[None, :]
    base = x @ w
    return (c - 1) * base + c * ((x @ a) @ b) * SCALE + base


def _ours(op: str) -> Callable[..., jax.Array]:
    if op == "loha":
        return lambda x, a1, b1, a2, b2: loha_matmul(x, a1, b1, a2, b2, scale=SCALE)
    if op == "hira":
        return hira_matmul
    if op == "hira_sum":
        return lambda x, w0, a, b: hira_matmul(x, w0, a, b, path="sum")
    return lambda x, w, a, b, m: dora_matmul(x, w, a, b, m, scale=SCALE)


def forward(op: str, impl: str) -> Callable[..., jax.Array]:
    """``(x, *frozen, *adapters) -> y`` of ``op`` in ``impl``."""
    if op not in OPS or impl not in IMPLS:
        raise ValueError(f"unknown op {op!r} or impl {impl!r}; ops {OPS}, impls {IMPLS}")
    if impl == "ours":
        return _ours(op)
    return {"loha": _peft_loha, "hira": _peft_hira, "hira_sum": _peft_hira, "dora": _peft_dora}[op]


def shapes(op: str, *, n: int, r: int, batch: int) -> tuple[list[tuple], list[tuple]]:
    """``(frozen shapes (x first), adapter shapes)`` of ``op`` at ``in = out = n``."""
    if op == "loha":
        return [(batch, n)], [(n, r), (r, n), (n, r), (r, n)]
    if op in ("hira", "hira_sum"):
        return [(batch, n), (n, n)], [(n, r), (r, n)]
    return [(batch, n), (n, n)], [(n, r), (r, n), (n,)]


def train_step(op: str, impl: str) -> Any:
    """``jit(value_and_grad)`` of ``sum(y * ct)`` over the adapters: ``(adapters, ct, *frozen)``."""
    fn = forward(op, impl)

    def loss(adapters, ct, *frozen):
        return jnp.vdot(fn(*frozen, *adapters), ct)

    return jax.jit(jax.value_and_grad(loss))


def _abstract(op: str, n: int, r: int, batch: int, dtype: Any):
    frozen, adapters = shapes(op, n=n, r=r, batch=batch)
    spec = lambda s: jax.ShapeDtypeStruct(s, jnp.dtype(dtype))  # noqa: E731
    return [spec(s) for s in adapters], spec((batch, n)), [spec(s) for s in frozen]


def compiled(op: str, impl: str, *, n: int, r: int, batch: int, dtype: Any = "float32"):
    """The compiled training step, from abstract shapes (nothing of that size is allocated)."""
    adapters, ct, frozen = _abstract(op, n, r, batch, dtype)
    return train_step(op, impl).lower(adapters, ct, *frozen).compile()


def temp_and_flops(op: str, impl: str, **size: Any) -> tuple[int, float]:
    """``(temp bytes, flops)`` of the compiled training step.

    Examples:
      >>> from hadamard_jax.bench.adapters import temp_and_flops
      >>> ours, _ = temp_and_flops("loha", "ours", n=256, r=4, batch=64)
      >>> peft, _ = temp_and_flops("loha", "peft", n=256, r=4, batch=64)
      >>> ours < peft
      True
    """
    c = compiled(op, impl, **size)
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return int(c.memory_analysis().temp_size_in_bytes), float(cost.get("flops", 0.0))


def saved_residuals(op: str, impl: str, *, n: int = 64, r: int = 4, batch: int = 16) -> list[str]:
    """The lines of ``print_saved_residuals`` for ``op`` (arguments: x, frozen, adapters)."""
    frozen, adapters = shapes(op, n=n, r=r, batch=batch)
    args = [jnp.ones(s, jnp.float32) for s in frozen + adapters]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(forward(op, impl), *args)
    return [line.strip() for line in out.getvalue().splitlines() if line.strip()]


def _operands(op: str, n: int, r: int, batch: int, dtype: Any):
    rng = np.random.default_rng(0)
    frozen, adapters = shapes(op, n=n, r=r, batch=batch)

    def put(s, scale=1.0, loc=0.0):
        return jax.device_put((loc + scale * rng.standard_normal(s)).astype(dtype))

    a = [put(s, 0.05, 1.0 if len(s) == 1 else 0.0) for s in adapters]
    return a, put((batch, n)), [put(s, 1.0 / np.sqrt(s[0])) for s in frozen]


def rows(
    ops: Sequence[str] = REPORT_OPS,
    *,
    n: int = 4096,
    r: int = 8,
    batch: int = 2048,
    dtype: str = "float32",
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """One row per op: temp bytes, flops and step seconds of ours and peft's way, and ratios.

    Returns:
      ``[{"op", "n", "r", "batch", "dtype", "temp_ours", "temp_peft", "temp_ratio",
      "flops_ours", "flops_peft", "time_ours_s", "time_peft_s", "time_ratio",
      "residuals_ours", "residuals_peft"}]``; times are the best of ``rounds`` alternated
      samples, ``time_ratio`` the median of the per-round ratios.
    """
    out = []
    for op in ops:
        size = dict(n=n, r=r, batch=batch, dtype=dtype)
        (t_o, f_o), (t_p, f_p) = (temp_and_flops(op, impl, **size) for impl in IMPLS)
        adapters, ct, frozen = _operands(op, n, r, batch, dtype)
        calls = {impl: timing.Call(train_step(op, impl), (adapters, ct, *frozen)) for impl in IMPLS}
        samples = timing.interleaved(calls, rounds=rounds, min_sample_s=0.0, warm_up_calls=1)
        out.append(
            {
                "op": op,
                "n": n,
                "r": r,
                "batch": batch,
                "dtype": dtype,
                "temp_ours": t_o,
                "temp_peft": t_p,
                "temp_ratio": t_o / t_p,
                "flops_ours": f_o,
                "flops_peft": f_p,
                "time_ours_s": timing.best(samples["ours"]),
                "time_peft_s": timing.best(samples["peft"]),
                "time_ratio": timing.median_ratio(samples["ours"], samples["peft"]),
                "residuals_ours": saved_residuals(op, "ours"),
                "residuals_peft": saved_residuals(op, "peft"),
            }
        )
    return out


def format_rows(table: Sequence[dict[str, Any]]) -> list[str]:
    """A Markdown table of :func:`rows`, then the residual lists (at a small size)."""
    mib = 2.0**20
    lines = [
        "| op | temp MiB ours / peft | ratio | GFLOP ours / peft | step s ours / peft | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['op']} | {row['temp_ours'] / mib:.1f} / {row['temp_peft'] / mib:.1f} | "
            f"{row['temp_ratio']:.3f} | {row['flops_ours'] / 1e9:.1f} / "
            f"{row['flops_peft'] / 1e9:.1f} | {row['time_ours_s']:.3f} / "
            f"{row['time_peft_s']:.3f} | {row['time_ratio']:.3f} |"
        )
    for row in table:
        for impl in IMPLS:
            lines.append(f"{row['op']} {impl} saves: " + "; ".join(row[f"residuals_{impl}"]))
    return lines


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a report, run by hand
    parser = _args.parser(_PROG, _DESCRIPTION, rounds=("--rounds", 3))
    parser.add_argument("--n", type=int, default=4096, help="in = out features")
    parser.add_argument("--r", type=int, default=8, help="rank")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--ops", default=",".join(OPS))
    args = parser.parse_args(argv)
    table = rows(
        args.ops.split(","),
        n=args.n,
        r=args.r,
        batch=args.batch,
        dtype=args.dtype,
        rounds=args.rounds,
    )
    print(
        f"in = out = {args.n}, r = {args.r}, batch {args.batch}, {args.dtype}, "
        f"{jax.devices()[0].platform}"
    )
    for line in format_rows(table):
        print(line)


_PROG = "python -m hadamard_jax.bench.adapters"
_DESCRIPTION = (
    "Adapter training steps (LoHa, HiRA, DoRA): temp bytes, flops and time, "
    "ours against peft's form-the-update formulas (alternated)."
)


if __name__ == "__main__":  # pragma: no cover
    main()
