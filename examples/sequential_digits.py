"""Classify scikit-learn's digits read one pixel at a time with a gated linear recurrence.

Each 8x8 image (1797 of them, 10 classes, bundled with scikit-learn: nothing is downloaded) is
a sequence of 64 steps of one feature, read row by row: the model sees the image only through
its recurrence. The split is stratified, 80/20, ``random_state=0`` (``--seed`` changes the
initialisation and the batches, not the split). The model is Flax NNX, built from
:mod:`hadamard_jax.nnx` modules and ops:

    x [B, 64, 1] -> Linear(1, width)
      -> depth x [ h + Recurrence(RMSNorm(h)),  h + GatedMLP(width, hidden)(RMSNorm(h)) ]
      -> RMSNorm -> mean over time -> Linear(width, 10)

where ``Recurrence`` is Griffin's recurrent block: ``out(gelu(x W_g) * RGLRU(conv4(x W_x)))``
(``hadamard_jax.geglu`` for the product, a causal depthwise convolution over 4 steps).
``--cell mingru`` puts a ``MinGRU(width, width)`` in place of the ``RGLRU`` (lower accuracy
with the default settings). Trained with AdamW (warm-up, cosine decay, gradient clipping).

Run ``python examples/sequential_digits.py`` (``--help`` for the flags).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import hadamard_jax as hj
from hadamard_jax.bench.progress import StepProgress
from hadamard_jax.nnx import RGLRU, GatedMLP, MinGRU

CELLS = ("rglru", "mingru")


class Recurrence(nnx.Module):
    """Griffin's recurrent block: ``out(gelu(x W_g) * rnn(conv(x W_x)))``.

    ``rnn`` is ``RGLRU(width)`` or ``MinGRU(width, width)``; ``conv`` a causal depthwise
    convolution over 4 steps; the product is :func:`hadamard_jax.geglu`.
    """

    def __init__(self, cell: str, width: int, *, rngs: nnx.Rngs):
        self.gate = nnx.Linear(width, width, rngs=rngs)
        self.inp = nnx.Linear(width, width, rngs=rngs)
        self.conv = nnx.Conv(
            width, width, (4,), padding=((3, 0),), feature_group_count=width, rngs=rngs
        )
        if cell == "rglru":
            self.rnn: RGLRU | MinGRU = RGLRU(width, rngs=rngs)
        else:
            self.rnn = MinGRU(width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h, _ = self.rnn(self.conv(self.inp(x)))
        return self.out(hj.geglu(self.gate(x), h))


class Block(nnx.Module):
    """A residual recurrence followed by a residual SwiGLU feed-forward block (pre-norm)."""

    def __init__(self, cell: str, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.RMSNorm(width, rngs=rngs)
        self.mix = Recurrence(cell, width, rngs=rngs)
        self.norm2 = nnx.RMSNorm(width, rngs=rngs)
        self.mlp = GatedMLP(width, hidden, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        h = h + self.mix(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class SequenceClassifier(nnx.Module):
    """``[B, T, 1]`` pixel sequences to ``[B, 10]`` logits."""

    def __init__(self, cell: str, width: int, hidden: int, depth: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(1, width, rngs=rngs)
        self.blocks = nnx.List([Block(cell, width, hidden, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.RMSNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(jnp.mean(self.norm(h), axis=1))


def load_data(test_fraction: float = 0.2, split_seed: int = 0):
    """Digits as ``[N, 64, 1]`` pixel sequences in ``[0, 1]``, split 80/20 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.astype(np.float32) / 16.0)[:, :, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32)


@nnx.jit
def train_step(model, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x: jax.Array) -> jax.Array:
    return jnp.argmax(model(x), axis=-1)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(predict(model, jnp.asarray(x))) == y))


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="rglru", choices=CELLS, help="the recurrence")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128, help="GatedMLP hidden size")
    parser.add_argument("--depth", type=int, default=2, help="residual blocks")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batches")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Runs the example; returns the test accuracy, the final loss and the seconds taken."""
    args = parse_args(argv)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data()
    model = SequenceClassifier(
        args.cell, args.width, args.hidden, args.depth, rngs=nnx.Rngs(args.seed)
    )
    steps_per_epoch = max(1, len(x_train) // args.batch)
    total = args.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, min(steps_per_epoch, total // 2), total
    )
    optimizer = nnx.Optimizer(
        model,
        optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(schedule, weight_decay=args.weight_decay),
        ),
        wrt=nnx.Param,
    )
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(
        f"sequential digits: {len(x_train)} train / {len(x_test)} test sequences of 64 pixels; "
        f"{args.cell}, depth {args.depth}, width {args.width}, {params} parameters"
    )
    progress = StepProgress(args.epochs, emit=print, live=sys.stdout)
    rng = np.random.default_rng(args.seed)
    loss = float("nan")
    for epoch in range(args.epochs):
        progress.start(f"epoch {epoch + 1}")
        t0 = time.perf_counter()
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            losses.append(
                train_step(model, optimizer, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))
            )
        loss = float(np.mean(jax.device_get(losses)))
        progress.done(f"loss {loss:.4f}", seconds=time.perf_counter() - t0)
    test_acc = accuracy(model, x_test, y_test)
    train_acc = accuracy(model, x_train, y_train)
    seconds = time.perf_counter() - start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"test accuracy: {test_acc:.4f} (train {train_acc:.4f}); {seconds:.1f} s on "
        f"{os.cpu_count()} CPU cores (load average {load:.1f})"
    )
    print(f"seed {args.seed}, {versions()}")
    return {
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "loss": loss,
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
