"""Parameter-efficient fine-tuning on scikit-learn's digits: LoRA, LoHa, HiRA, DoRA, (IA)^3.

The data set (1797 8x8 images, 10 classes) ships with scikit-learn: nothing is downloaded.

1. Pretrain an MLP ``64 -> 128 -> 128 -> 10`` (``nnx.Linear`` layers, ReLU) on the digits.
2. Shift the task: the same digits rotated by 90 degrees (``np.rot90`` of each 8x8 image).
3. Adapt the pretrained model to the rotated digits with each method, the base weights frozen
   (except for full fine-tuning): every ``nnx.Linear`` is wrapped by the adapter layer
   (``base_module=``) and only the adapter's variables are trained (``AdapterParam``; Flax's
   ``nnx.LoRA`` uses ``nnx.LoRAParam``), the same as ``nnx.Optimizer(model, tx,
   wrt=AdapterParam)``. Ranks are matched to about the same trainable-parameter budget as
   LoRA at rank ``--rank`` (LoHa has ``2 r (in + out)`` parameters per layer, so half the rank;
   (IA)^3 has one scale per output and no rank).

For each method it prints the test accuracy on the rotated digits (mean and spread over the
seeds), the number of trainable parameters and the compiled temp bytes of one training step.

Run ``python examples/adapters.py`` (``--quick`` for a short run, ``--help`` for the flags).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hadamard_jax.nnx import AdapterParam, DoRALinear, HiRALinear, IA3Linear, LoHaLinear

METHODS = ("none", "full", "lora", "loha", "hira", "dora", "ia3")


class MLP(nnx.Module):
    """``64 -> width -> width -> 10`` with ReLU: the model to pretrain and adapt."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.l1(x))
        h = jax.nn.relu(self.l2(h))
        return self.head(h)


def load_data(seed: int, test_fraction: float = 0.2):
    """Standardised digits (train/test, stratified) and the same images rotated by 90 degrees."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    rotated = np.rot90(x.reshape(-1, 8, 8), axes=(1, 2)).reshape(-1, 64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y
    )
    mean, std = x[idx_train].mean(0), x[idx_train].std(0) + 1e-3
    rmean, rstd = rotated[idx_train].mean(0), rotated[idx_train].std(0) + 1e-3

    def norm(a, m, s):
        return jax.device_put((a - m) / s)

    original = (
        norm(x[idx_train], mean, std),
        y[idx_train],
        norm(x[idx_test], mean, std),
        y[idx_test],
    )
    shifted = (
        norm(rotated[idx_train], rmean, rstd),
        y[idx_train],
        norm(rotated[idx_test], rmean, rstd),
        y[idx_test],
    )
    return original, shifted


def wrap(model: MLP, method: str, rank: int, seed: int) -> tuple[MLP, Any]:
    """Wraps each layer of ``model`` in ``method``'s adapter; returns ``(model, filter)``."""
    rngs = nnx.Rngs(1000 + seed)
    if method in ("none", "full"):
        return model, nnx.Param
    for name in ("l1", "l2", "head"):
        base = getattr(model, name)
        n_in, n_out = base.kernel.shape
        if method == "lora":
            layer = nnx.LoRA(n_in, rank, n_out, base_module=base, rngs=rngs)
        elif method == "loha":
            layer = LoHaLinear(base_module=base, rank=max(1, rank // 2), alpha=rank, rngs=rngs)
        elif method == "hira":
            layer = HiRALinear(base_module=base, rank=rank, rngs=rngs)
        elif method == "dora":
            layer = DoRALinear(base_module=base, rank=rank, alpha=2 * rank, rngs=rngs)
        else:
            layer = IA3Linear(base_module=base, rngs=rngs)
        setattr(model, name, layer)
    return model, (nnx.LoRAParam if method == "lora" else AdapterParam)


def make_step(graphdef, tx) -> Callable:
    """A jitted training step over the trainable state (the rest is a frozen argument)."""

    @jax.jit
    def step(trainable, opt_state, rest, x, y):
        def loss_fn(t):
            logits = nnx.merge(graphdef, t, rest)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    return step


def train(model: nnx.Module, wrt: Any, data, *, steps: int, lr: float) -> dict[str, Any]:
    """Full-batch Adam on the ``wrt`` variables of ``model``; returns figures and the model."""
    x, y = data
    graphdef, trainable, rest = nnx.split(model, wrt, ...)
    tx = optax.adam(lr)
    opt_state = tx.init(trainable)
    step = make_step(graphdef, tx)
    compiled = step.lower(trainable, opt_state, rest, x, y).compile()  # compiled once
    temp = compiled.memory_analysis()
    for _ in range(steps):
        trainable, opt_state, _ = compiled(trainable, opt_state, rest, x, y)
    return {
        "model": nnx.merge(graphdef, trainable, rest),
        "params": int(sum(np.size(a) for a in jax.tree.leaves(trainable))),
        "temp_bytes": int(temp.temp_size_in_bytes) if temp is not None else 0,
    }


def accuracy(model: nnx.Module, x, y) -> float:
    return float((np.asarray(jnp.argmax(model(x), -1)) == y).mean())


def run(
    methods: Sequence[str] = METHODS,
    *,
    seeds: int = 3,
    width: int = 128,
    rank: int = 4,
    pretrain_steps: int = 300,
    adapt_steps: int = 300,
    lr: float = 1e-2,
    full_lr: float = 1e-3,
) -> dict[str, dict[str, Any]]:
    """Pretrains, adapts with each method, and returns ``{method: figures}`` over the seeds.

    Returns:
      ``{method: {"acc": [per seed], "params": int, "temp_bytes": int}}`` plus
      ``"pretrained"``: the accuracy on the original test digits.
    """
    results: dict[str, dict[str, Any]] = {m: {"acc": []} for m in methods}
    results["pretrained"] = {"acc": []}
    for seed in range(seeds):
        original, shifted = load_data(seed)
        base = MLP(width, rngs=nnx.Rngs(seed))
        base = train(base, nnx.Param, original[:2], steps=pretrain_steps, lr=full_lr * 3)["model"]
        results["pretrained"]["acc"].append(accuracy(base, *original[2:]))
        state = nnx.state(base)
        for method in methods:
            model = MLP(width, rngs=nnx.Rngs(seed))
            nnx.update(model, state)  # a fresh copy of the pretrained weights
            model, wrt = wrap(model, method, rank, seed)
            if method == "none":
                fig = {"model": model, "params": 0, "temp_bytes": 0}
            else:
                fig = train(
                    model,
                    wrt,
                    shifted[:2],
                    steps=adapt_steps,
                    lr=full_lr if method == "full" else lr,
                )
            results[method]["acc"].append(accuracy(fig["model"], *shifted[2:]))
            results[method]["params"] = fig["params"]
            results[method]["temp_bytes"] = fig["temp_bytes"]
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rank", type=int, default=4, help="LoRA/HiRA/DoRA rank (LoHa: half)")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, width 32, 40 steps: a smoke test"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.width, args.pretrain_steps, args.adapt_steps = 1, 32, 40, 40
    start = time.perf_counter()
    results = run(
        args.methods.split(","),
        seeds=args.seeds,
        width=args.width,
        rank=args.rank,
        pretrain_steps=args.pretrain_steps,
        adapt_steps=args.adapt_steps,
    )
    pre = np.asarray(results["pretrained"]["acc"])
    print(f"pretrained on the digits: test accuracy {pre.mean():.3f} +- {pre.std():.3f}")
    print("adapted to the digits rotated by 90 degrees:")
    print(f"{'method':8s} {'accuracy':>16s} {'trainable':>10s} {'step temp KiB':>14s}")
    for method in args.methods.split(","):
        r = results[method]
        acc = np.asarray(r["acc"])
        print(
            f"{method:8s} {acc.mean():9.3f} +- {acc.std():.3f} {r['params']:10d} "
            f"{r['temp_bytes'] / 1024:14.1f}"
        )
    print(f"({args.seeds} seeds, {time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
