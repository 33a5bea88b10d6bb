"""Benchmarks and the benchmark report (``python -m hadamard_jax.bench``)."""
