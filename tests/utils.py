"""Helpers for the tests."""

from __future__ import annotations

import jax
import jax.ad_checkpoint
import numpy as np


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
