"""Helpers for the tests."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import types

import jax
import jax.ad_checkpoint
import jax.test_util
import numpy as np


def _put(x: np.ndarray, dtype) -> jax.Array:
    # jax.device_put, not jnp.asarray: asarray compiles a copy program per shape and dtype.
    return jax.device_put(np.asarray(x).astype(dtype))


def normal(seed: int, shape, dtype=np.float32, scale: float = 1.0, loc: float = 0.0) -> jax.Array:
    """``loc + scale * N(0, 1)`` test data of ``shape``, drawn by NumPy (complex: both parts).

    NumPy rather than ``jax.random``: a ``jax.random`` draw compiles one XLA program per shape
    and dtype (about 0.1 s each), and the suite draws a few hundred; the tests only need fixed,
    reproducible values.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return _put(loc + scale * x, dtype)


def uniform(seed: int, shape, lo: float = 0.0, hi: float = 1.0, dtype=np.float32) -> jax.Array:
    """Uniform ``[lo, hi)`` test data of ``shape``, drawn by NumPy (see ``normal``)."""
    return _put(np.random.default_rng(seed).uniform(lo, hi, shape), dtype)


def bernoulli(seed: int, p: float, shape, dtype=np.bool_) -> jax.Array:
    """``True`` (1) with probability ``p``, else ``False`` (0), of ``shape``; drawn by NumPy."""
    return _put(np.random.default_rng(seed).random(shape) < p, dtype)


def integers(seed: int, shape, lo: int, hi: int, dtype=np.int32) -> jax.Array:
    """Integers in ``[lo, hi)`` of ``shape``, drawn by NumPy."""
    return _put(np.random.default_rng(seed).integers(lo, hi, shape), dtype)


def check_grads(f, args, order, **kwargs) -> None:
    """``jax.test_util.check_grads`` with ``jax.jit`` disabled (the ops run primitive by primitive).

    The derivative rules are the same code with or without ``jit``. Under ``jit`` every
    transformed program (the jvp, the vjp, their second-order forms, at each shape and dtype)
    compiles on its own, about 15 programs per call at order 2; with ``jit`` disabled each
    primitive compiles once per shape and dtype for the whole run, which makes the gradient
    checks about twice as fast. The jitted forms of the same derivatives (``jit`` of ``grad``,
    ``jvp``, ``hessian``, ...) are compared with the plain ``jax.numpy`` composition in each
    op's transform tests.
    """
    with jax.disable_jit():
        jax.test_util.check_grads(f, args, order, **kwargs)


def saved_residuals(capsys, fn, *args) -> list[str]:
    """The lines ``jax.ad_checkpoint.print_saved_residuals`` prints for ``fn(*args)``."""
    capsys.readouterr()
    jax.ad_checkpoint.print_saved_residuals(fn, *args)
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def only_arguments_saved(lines: list[str]) -> bool:
    """Whether every saved residual is one of the function's arguments."""
    return all("from the argument" in line for line in lines)


def assert_tree_allclose(actual, expected, rtol=1e-6, atol=1e-6):
    """Leafwise ``np.testing.assert_allclose`` with equal dtypes and shapes."""
    actual_leaves, actual_def = jax.tree.flatten(actual)
    expected_leaves, expected_def = jax.tree.flatten(expected)
    assert actual_def == expected_def, (actual_def, expected_def)
    for a, e in zip(actual_leaves, expected_leaves):
        assert np.shape(a) == np.shape(e), (np.shape(a), np.shape(e))
        assert np.asarray(a).dtype == np.asarray(e).dtype, (
            np.asarray(a).dtype,
            np.asarray(e).dtype,
        )
        if np.asarray(e).dtype == jax.dtypes.float0:
            continue
        np.testing.assert_allclose(
            np.asarray(a, dtype=np.asarray(a).dtype if np.iscomplexobj(a) else np.float64),
            np.asarray(e, dtype=np.asarray(e).dtype if np.iscomplexobj(e) else np.float64),
            rtol=rtol,
            atol=atol,
        )


def run_on_8_cpu_devices(script: str, marker: str) -> None:
    """Runs ``script`` with 8 CPU devices; asserts that it succeeds and prints ``marker``.

    The root ``conftest.py`` gives the test process 8 CPU devices, so the script runs here, in
    this process (a fresh Python costs seconds of imports and compiles). Where the process has
    fewer devices (``XLA_FLAGS`` set by the caller without a device count, or a non-CPU backend)
    it runs in a fresh Python with 8, because ``XLA_FLAGS`` must be set before JAX initialises
    its backends.
    """
    if jax.default_backend() == "cpu" and jax.device_count() >= 8:
        # A module of its own in sys.modules, as a script has: dataclasses (Linen modules) look
        # their module up there.
        module = types.ModuleType("_eight_device_script")
        sys.modules[module.__name__] = module
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(script, "<8-device script>", "exec"), module.__dict__)
        finally:
            del sys.modules[module.__name__]
        assert marker in out.getvalue(), out.getvalue()[-2000:]
        return
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert marker in result.stdout


def nnx_rngs(seed: int = 0):
    """``nnx.Rngs(seed)``: the streams every NNX module in the layer tests is built with."""
    from flax import nnx  # here, not at the top: the op tests do not import Flax

    return nnx.Rngs(seed)


def affine(x, kernel, bias=None):
    """``x @ kernel (+ bias)``: the plain dense layer the module tests compare against."""
    y = x @ kernel
    return y if bias is None else y + bias[None, :]


def raises_in_both_front_ends(make_nnx, make_linen, error: type[Exception], match: str) -> None:
    """``make_nnx()`` and ``make_linen()`` raise ``error`` matching ``match`` at construction
    (Linen: when the module is constructed, before ``init``); ``make_linen=None`` for an argument
    only NNX takes. The runner of the families' bad-arguments tables."""
    import pytest

    with pytest.raises(error, match=match):
        make_nnx()
    if make_linen is not None:
        with pytest.raises(error, match=match):
            make_linen()
