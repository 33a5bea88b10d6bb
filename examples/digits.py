"""Train a GatedMLP classifier on scikit-learn's digits, prune it to 90% sparsity, fine-tune.

The data set (1797 8x8 images, 10 classes) ships with scikit-learn: nothing is downloaded.
The model is Flax NNX, built from :mod:`hadamard_jax.nnx` modules:

    x -> MaskedLinear(64, width) -> + GatedMLP(width, hidden, masked=True)(LayerNorm(.))
      -> MaskedLinear(width, 10)

Every kernel carries a fixed mask, so :func:`hadamard_jax.nnx.prune` (global magnitude by
default) prunes all of them; the pruned weights are exactly zero and stay zero while the
remaining ones are fine-tuned with optax.

Run ``python examples/digits.py`` (``--help`` for the flags); ``--seeds 5`` repeats the run for
seeds 0..4 (initialisation, batches, split and pruning) and prints each accuracy's mean and spread.
One seed's run is deterministic on one machine and one set of versions; across versions the
accuracies move by about a point (docs/figures.md has the figures and the versions).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hadamard_jax.nnx import GatedMLP, MaskedLinear, MaskVar, mask_sparsity, prune


class Classifier(nnx.Module):
    """A residual SwiGLU classifier whose kernels are all maskable."""

    def __init__(self, width: int, hidden: int, dropout_rate: float, *, rngs: nnx.Rngs):
        self.inp = MaskedLinear(64, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.block = GatedMLP(width, hidden, masked=True, dropout_rate=dropout_rate, rngs=rngs)
        self.out = MaskedLinear(width, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.inp(x)
        h = h + self.block(self.norm(h))
        return self.out(h)


def load_data(seed: int, test_fraction: float = 0.2):
    """Standardised digits features split into train and test sets (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=test_fraction, random_state=seed, stratify=y
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def progress(label: str, done: int, total: int, extra: str = "", width: int = 30) -> None:
    """A one-line text progress bar, redrawn in place on a terminal; elsewhere (a log, a pipe)
    only the finished bar is printed, with no carriage returns."""
    filled = int(width * done / max(total, 1))
    line = f"{label:>9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}"
    if sys.stdout.isatty():
        print("\r" + line, end="\n" if done >= total else "", flush=True)
    elif done >= total:
        print(line, flush=True)


@nnx.jit
def train_step(model: Classifier, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model: Classifier, x: jax.Array) -> jax.Array:
    return jnp.argmax(model(x), axis=-1)


def accuracy(model: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    acc = float(np.mean(np.asarray(predict(model, jnp.asarray(x))) == y))
    model.train()
    return acc


def train(
    model,
    x,
    y,
    *,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
    label: str,
    weight_decay: float = 1e-2,
) -> None:
    """Adam(W) with cosine decay over ``epochs`` of shuffled minibatches; a fresh optimizer."""
    steps_per_epoch = max(1, len(x) // batch)
    schedule = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)
    adamw = optax.adamw(schedule, weight_decay=weight_decay)
    optimizer = nnx.Optimizer(model, adamw, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            losses.append(train_step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx])))
        progress(label, epoch + 1, epochs, f"loss {float(np.mean(jax.device_get(losses))):.4f}")


def pruned_weights_are_zero(model: Classifier) -> bool:
    """Whether every masked-out kernel entry is exactly zero."""
    for path, mask in nnx.to_flat_state(nnx.state(model, MaskVar)):
        module = model
        for part in path[:-1]:
            module = getattr(module, part)
        kernel = getattr(module, str(path[-1])[: -len("mask")] + "kernel")[...]
        if np.any(np.asarray(kernel)[~np.asarray(mask[...])] != 0):
            return False
    return True


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(
        prog="python examples/digits.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=60, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=40, help="epochs after pruning")
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction of weights pruned")
    parser.add_argument(
        "--method",
        default="global_magnitude",
        choices=["magnitude", "global_magnitude", "random"],
        help="pruning criterion",
    )
    parser.add_argument("--width", type=int, default=128, help="model width")
    parser.add_argument("--hidden", type=int, default=256, help="GatedMLP hidden width")
    parser.add_argument("--dropout", type=float, default=0.3, help="GatedMLP dropout rate")
    parser.add_argument("--lr", type=float, default=3e-3, help="dense peak learning rate")
    parser.add_argument("--finetune-lr", type=float, default=3e-3, help="fine-tuning peak rate")
    parser.add_argument("--batch", type=int, default=64, help="minibatch size")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--seeds", type=int, default=1, help="runs, seeds --seed .. --seed + SEEDS - 1"
    )
    return parser.parse_args(argv)


def spread(values: Sequence[float], scale: float = 100.0) -> str:
    """``mean +- std (min .. max)`` of ``values`` times ``scale``; the value alone for one.

    Examples:
      >>> spread([0.975, 0.98, 0.985])
      '98.00 +- 0.41 (97.50 .. 98.50)'
      >>> spread([0.975])
      '97.50'
    """
    v = scale * np.asarray(values, dtype=np.float64)
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} +- {v.std():.2f} ({v.min():.2f} .. {v.max():.2f})"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the example for each seed; returns the mean accuracies, sparsity and seconds.

    With ``--seeds N`` the means over the N runs (``"runs"``: each run's figures), and a closing
    line with each figure's mean, standard deviation and range in percent.
    """
    args = parse_args(argv)
    print(versions())
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        if args.seeds > 1:
            print(f"seed {seed}:")
        runs.append(run(args, seed))
    if args.seeds == 1:
        return runs[0]
    keys = ("dense_accuracy", "pruned_accuracy", "pruned_accuracy_before_finetune")
    print(
        f"over {args.seeds} seeds ({args.seed}..{args.seed + args.seeds - 1}), percent, "
        "mean +- std (min .. max):"
    )
    print(f"  dense test accuracy:  {spread([r['dense_accuracy'] for r in runs])}")
    print(f"  pruned test accuracy: {spread([r['pruned_accuracy'] for r in runs])}")
    change = [r["pruned_accuracy"] - r["dense_accuracy"] for r in runs]
    print(f"  pruned - dense, points: {spread(change)}")
    result: dict[str, Any] = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    result["sparsity"] = float(np.mean([r["sparsity"] for r in runs]))
    result["pruned_weights_zero"] = float(min(r["pruned_weights_zero"] for r in runs))
    result["seconds"] = float(sum(r["seconds"] for r in runs))
    result["runs"] = runs
    return result


def run(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One run with ``seed``: train, prune, fine-tune; returns its accuracies, sparsity, seconds."""
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(seed)
    model = Classifier(args.width, args.hidden, args.dropout, rngs=nnx.Rngs(seed))
    train(
        model,
        x_train,
        y_train,
        epochs=args.epochs,
        lr=args.lr,
        batch=args.batch,
        seed=seed,
        label="dense",
    )
    dense_acc = accuracy(model, x_test, y_test)
    print(f"dense test accuracy: {dense_acc:.4f}")

    prune(model, args.sparsity, method=args.method, key=jax.random.key(seed))
    reached = mask_sparsity(model)
    pruned_acc_before = accuracy(model, x_test, y_test)
    print(
        f"pruned to sparsity {reached:.4f} ({args.method}); accuracy before fine-tuning: "
        f"{pruned_acc_before:.4f}"
    )
    train(
        model,
        x_train,
        y_train,
        epochs=args.finetune_epochs,
        lr=args.finetune_lr,
        batch=args.batch,
        seed=seed + 1,
        label="finetune",
    )
    pruned_acc = accuracy(model, x_test, y_test)
    zeros = pruned_weights_are_zero(model)
    seconds = time.perf_counter() - start
    print(
        f"pruned test accuracy: {pruned_acc:.4f} (dense {dense_acc:.4f}: "
        f"{100 * (pruned_acc - dense_acc):+.2f} points); sparsity {reached:.4f}; "
        f"pruned weights exactly zero: {zeros}; {seconds:.1f} s"
    )
    return {
        "dense_accuracy": dense_acc,
        "pruned_accuracy": pruned_acc,
        "pruned_accuracy_before_finetune": pruned_acc_before,
        "sparsity": reached,
        "pruned_weights_zero": float(zeros),
        "seconds": seconds,
    }


def versions() -> str:
    """The versions a figure depends on, as one line."""
    import flax
    import sklearn

    return (
        f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"backend {jax.default_backend()}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
