"""``python -m hadamard_jax.bench``: the benchmark report (see :mod:`hadamard_jax.bench.report`)."""

from hadamard_jax.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
