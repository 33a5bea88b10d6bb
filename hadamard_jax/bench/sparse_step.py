"""Workload: one optimizer step of sparse training against the dense optax step.

The parameters are the stacked gated-FFN weights of :mod:`hadamard_jax.bench.ffn_stack`
(``w1, w2: (layers, d, h)``, ``w3: (layers, h, d)``; the report's size is ``layers=8, d=512,
h=2048``, 25M float32 weights). Three jitted steps, each ``(params, opt_state), grads ->
(params, opt_state)`` with the first argument donated:

* ``"dense"``: ``optax.adamw`` and ``optax.apply_updates``;
* ``"sparse"``: the same wrapped in :func:`hadamard_jax.sparse.sparsify` at 90% sparsity on a
  step that is *not* an update step (masked gradients, the select ``where(mask, u, -p)``, the
  ``lax.cond`` that keeps the masks);
* ``"sparse_update"``: a step that recomputes every mask (per-layer magnitude ranking: a sort
  of each layer of each kernel), the cost paid once every ``every`` steps.

They are timed alternately in one process (:func:`hadamard_jax.bench.timing.interleaved`);
the ratio ``sparse / dense`` is the median of the per-round ratios (target <= 1.15).
``python -m hadamard_jax.bench.sparse_step [--layers L --d D --h H --repeats R]`` prints them.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import optax

from hadamard_jax import sparse
from hadamard_jax.bench import args as _args
from hadamard_jax.bench import ffn_stack, timing

IMPLS = ("dense", "sparse", "sparse_update")
#: The report's FFN size (``ffn_stack.SIZE``) without the batch: only weights matter here.
SIZE = {"layers": 8, "d": 512, "h": 2048}
SPARSITY = 0.9
_NEVER = 2**30  # a step the schedule never reaches


def make_tx(impl: str, method: str = "magnitude") -> optax.GradientTransformation:
    """The optimizer of ``impl``: adamw, or adamw under ``sparsify`` (updates never/always)."""
    adamw = optax.adamw(1e-3, weight_decay=1e-2)
    if impl == "dense":
        return adamw
    if impl == "sparse":
        schedule = sparse.periodic(SPARSITY, _NEVER, begin_step=_NEVER)
    else:
        schedule = sparse.periodic(SPARSITY, 1)
    return sparse.sparsify(adamw, method=method, schedule=schedule)


@functools.cache
def cached_step(impl: str, method: str = "magnitude") -> tuple[Any, Any]:
    """``(tx, jitted step)`` for ``impl``; built once per process (asv re-runs ``setup``)."""
    tx = make_tx(impl, method)

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return tx, jax.jit(step, donate_argnums=0)


def make_call(impl: str, *, layers: int, d: int, h: int, method: str = "magnitude", seed: int = 0):
    """A blocking, chained :class:`~hadamard_jax.bench.timing.Call` of one optimizer step."""
    kp, kg = jax.random.split(jax.random.key(seed))
    params = ffn_stack.init_params(kp, layers=layers, d=d, h=h)
    grads = ffn_stack.init_params(kg, layers=layers, d=d, h=h)
    tx, step = cached_step(impl, method)
    device = jax.devices()[0]
    carry = jax.device_put((params, tx.init(params)), device)
    return timing.Call(step, (carry, jax.device_put(grads, device)), chain=True)


def measure(
    *, layers: int, d: int, h: int, repeats: int = 5, min_sample_s: float = 0.05
) -> dict[str, Any]:
    """Seconds per step of each impl (alternated) and the ratios to the dense step.

    Returns:
      ``{"<impl>_s": [samples], "ratio": sparse/dense (median of rounds), "best_ratio",
      "update_ratio": sparse_update/dense (median)}``.
    """
    calls = {impl: make_call(impl, layers=layers, d=d, h=h) for impl in IMPLS}
    samples = timing.interleaved(calls, rounds=repeats, min_sample_s=min_sample_s)
    out: dict[str, Any] = {f"{impl}_s": samples[impl] for impl in IMPLS}
    out["ratio"] = timing.median_ratio(samples["sparse"], samples["dense"])
    out["best_ratio"] = timing.best_ratio(samples["sparse"], samples["dense"])
    out["update_ratio"] = timing.median_ratio(samples["sparse_update"], samples["dense"])
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:  # pragma: no cover - by hand
    parser = _args.parser(
        "python -m hadamard_jax.bench.sparse_step",
        f"An adamw step on {SPARSITY:.0%}-sparse weights (hadamard_jax.sparse) against the dense "
        "step, timed alternately; prints the ratio (target <= 1.15).",
    )
    for name, value in SIZE.items():
        parser.add_argument(f"--{name}", type=int, default=value, help=_args.SIZE_HELP[name])
    parser.add_argument("--repeats", type=int, default=5, help="alternation rounds")
    args = parser.parse_args(argv)
    size = {name: getattr(args, name) for name in SIZE}
    n = 2 * size["layers"] * size["d"] * size["h"] + size["layers"] * size["h"] * size["d"]
    r = measure(**size, repeats=args.repeats)
    med = {impl: statistics.median(r[f"{impl}_s"]) * 1e3 for impl in IMPLS}
    print(
        f"optimizer step, adamw, {n / 1e6:.1f}M float32 weights ({size}), sparsity {SPARSITY}, "
        f"{jax.devices()[0].platform}:"
    )
    print(
        f"  dense {med['dense']:.2f} ms, sparse {med['sparse']:.2f} ms, "
        f"sparse with mask update {med['sparse_update']:.1f} ms"
    )
    print(
        f"  sparse/dense = {r['ratio']:.3f} (median of {args.repeats} alternations; best "
        f"{r['best_ratio']:.3f}; target <= 1.15); update step/dense = {r['update_ratio']:.1f}"
    )
    return r


if __name__ == "__main__":  # pragma: no cover
    main()
