"""``python -m hadamard_jax``: runs the benchmark report (see :mod:`hadamard_jax.bench`)."""

from hadamard_jax.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m hadamard_jax"))
