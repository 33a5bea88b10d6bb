"""Sparse training on scikit-learn's digits: dense, one-shot, gradual magnitude, RigL and SET.

The model and data are those of ``examples/digits.py`` (a residual SwiGLU classifier, Flax NNX;
the digits ship with scikit-learn, nothing is downloaded). Every run trains for the same number
of steps with AdamW and a cosine learning rate, wrapped in :func:`hadamard_jax.sparse.sparsify`:

* ``dense``: no pruning;
* ``one-shot``: dense for 60% of the steps, then magnitude-pruned once (``one_shot``) and
  fine-tuned;
* ``gradual``: magnitude pruning on Zhu & Gupta's cubic schedule (``polynomial``) from 10% to
  60% of the steps, masks updated twice an epoch;
* ``rigl`` / ``set``: sparse from the first step (random masks), drop-and-grow every
  ``--update-every`` steps until 75% of the steps, growth by gradient (RigL) or at random (SET).

Each sparse run is done at every ``--sparsities`` value (default 0.9 and 0.95) with the
``--distribution`` of sparsity over layers (default ERK). The table gives test accuracy, the
sparsity reached (pruned kernel entries, counted on the weights: they are exactly zero), and the
wall time. Run ``python examples/sparse_training.py`` (``--help`` for the flags).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from digits import Classifier, accuracy, load_data, train_step  # noqa: E402

from hadamard_jax import sparse  # noqa: E402
from hadamard_jax.bench.progress import StepProgress  # noqa: E402

METHODS = ("dense", "one-shot", "gradual", "rigl", "set")


def make_tx(
    method: str, sparsity: float, steps: int, steps_per_epoch: int, args
) -> optax.GradientTransformation:
    """AdamW with cosine decay, wrapped in ``sparsify`` for every sparse method."""
    adamw = optax.adamw(optax.cosine_decay_schedule(args.lr, steps), weight_decay=args.weight_decay)
    if method == "dense":
        return adamw
    if method == "one-shot":
        kw = dict(method="magnitude", schedule=sparse.one_shot(sparsity, step=int(0.6 * steps)))
    elif method == "gradual":
        schedule = sparse.polynomial(
            sparsity,
            begin_step=int(0.1 * steps),
            end_step=int(0.6 * steps),
            every=max(1, steps_per_epoch // 2),
        )
        kw = dict(method="magnitude", schedule=schedule)
    else:
        schedule = sparse.periodic(sparsity, args.update_every, end_step=int(0.75 * steps))
        kw = dict(method=method, schedule=schedule, drop_fraction=args.drop_fraction)
    return sparse.sparsify(adamw, distribution=args.distribution, seed=args.seed, **kw)


def kernel_sparsity(model: Classifier, state) -> tuple[float, bool]:
    """Fraction of pruned kernel entries (by the masks), and whether all are exactly zero."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    masks = sparse.masks_of(state, params)
    pruned = total = 0
    zero = True
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
        if m is None:
            continue
        p, m = np.asarray(p), np.asarray(m)
        pruned += int((~m).sum())
        total += m.size
        zero &= bool((p[~m] == 0).all())
    return pruned / total, zero


def run(method: str, sparsity: float, data, args) -> dict[str, float]:
    x_train, y_train, x_test, y_test = data
    start = time.perf_counter()
    model = Classifier(args.width, args.hidden, args.dropout, rngs=nnx.Rngs(args.seed))
    steps_per_epoch = max(1, len(x_train) // args.batch)
    steps = args.epochs * steps_per_epoch
    tx = make_tx(method, sparsity, steps, steps_per_epoch, args)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.epochs):
        order = rng.permutation(len(x_train))
        for i in range(steps_per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            train_step(model, optimizer, x_train[idx], y_train[idx])
    acc = accuracy(model, x_test, y_test)
    if method == "dense":
        reached, zero = 0.0, True
    else:
        reached, zero = kernel_sparsity(model, nnx.as_pure(optimizer.opt_state))
    return {
        "accuracy": acc,
        "sparsity": reached,
        "zero": float(zero),
        "seconds": time.perf_counter() - start,
    }


def format_table(rows: list[dict], seeds: int) -> str:
    """A Markdown table: one row per method and target sparsity, means over seeds."""
    acc_head = "test accuracy" + (f" (mean ± sd, {seeds} seeds)" if seeds > 1 else "")
    lines = [
        f"| method | target sparsity | {acc_head} | vs dense (points) | sparsity reached | "
        "pruned weights zero | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    dense_accs = [r["accuracy"] for r in rows if r["method"] == "dense"]
    dense = statistics.mean(dense_accs) if dense_accs else None
    keys = list(dict.fromkeys((r["method"], r["target"]) for r in rows))
    for method, target in keys:
        group = [r for r in rows if r["method"] == method and r["target"] == target]
        accs = [100 * r["accuracy"] for r in group]
        acc = f"{statistics.mean(accs):.2f}" + (
            f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        )
        delta = "n/a" if dense is None else f"{statistics.mean(accs) - 100 * dense:+.2f}"
        lines.append(
            f"| {method} | {target:.2f} | {acc} | {delta} | "
            f"{statistics.mean(r['sparsity'] for r in group):.4f} | "
            f"{'yes' if all(r['zero'] for r in group) else 'NO'} | "
            f"{statistics.mean(r['seconds'] for r in group):.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95])
    parser.add_argument("--distribution", default="erk", choices=["uniform", "erk"])
    parser.add_argument("--epochs", type=int, default=100, help="epochs of every run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--update-every", type=int, default=50, help="RigL/SET update period")
    parser.add_argument("--drop-fraction", type=float, default=0.3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs every method; prints and returns the rows (one per method, target and seed)."""
    args = parse_args(argv)
    plan = [(m, 0.0) for m in args.methods if m == "dense"] + [
        (m, s) for m in args.methods if m != "dense" for s in args.sparsities
    ]
    first = args.seed
    seeds = list(range(first, first + args.seeds))
    bar = StepProgress(len(plan) * len(seeds))
    rows = []
    for seed in seeds:
        args.seed = seed
        data = load_data(seed)
        for method, target in plan:
            bar.start(f"{method} {target:.2f} seed {seed}")
            result = run(method, target, data, args)
            rows.append({"method": method, "target": target, "seed": seed, **result})
            bar.done(
                f"accuracy {100 * result['accuracy']:.2f}%, sparsity {result['sparsity']:.4f}",
                seconds=result["seconds"],
            )
    args.seed = first
    print(format_table(rows, len(seeds)))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
