"""The test suite of hadamard_jax; its layout mirrors the package's.

Tests: where a new test goes (helpers stay beside the tests that use them; a helper used by
several modules goes into ``tests/utils.py``).

* an op (``hadamard_jax/_src/<op>.py``): ``tests/test_<op>.py``, its hardening and regression
  tests included; a check shared by every op, as a table over the ops: ``tests/test_checks.py``.
* a mask maker or pattern (``hadamard_jax/_src/sparsity/<module>.py``):
  ``tests/sparsity/test_<module>.py``.
* a layer family (``hadamard_jax/_layers/<family>.py`` with ``nnx/_<family>.py`` and
  ``linen/_<family>.py``): ``tests/layers/test_<family>.py``, both front ends in one module; a
  module in both front ends also gets a row in ``tests/test_parity.py`` (NNX == Linen); a model
  mixing families (Flax transforms, state round trips, a mesh): ``tests/layers/test_front_ends.py``.
* the sparse training package (``hadamard_jax/sparse/_<module>.py``):
  ``tests/sparse/test_<module>.py``.
* the benchmarks (``hadamard_jax/bench/``, ``benchmarks/``): ``tests/test_bench.py``.
* docs and docstrings: ``tests/test_docs.py`` (the pages' code), ``tests/test_readme.py``,
  ``tests/test_docstrings.py`` (the filler), ``tests/layers/test_docstrings.py`` (the Flax
  modules' docstrings), ``tests/test_public_api.py`` (no public name or parameter lost).
* an example (``examples/<name>.py``): ``tests/examples/test_<name>.py``.
"""
