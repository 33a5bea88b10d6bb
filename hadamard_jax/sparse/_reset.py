"""Resetting the wrapped optimizer's per-parameter state where RigL/SET regrow weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _reset_leaf(leaf: Any, r: Any) -> Any:
    """``leaf`` with zeros where ``r`` is True, if it is a per-parameter leaf of ``r``'s shape."""
    if r is None or not hasattr(leaf, "shape") or tuple(leaf.shape) != tuple(r.shape):
        return leaf
    return jnp.where(r, jnp.zeros((), leaf.dtype), leaf)


def _reset_by_optax(tx: Any, inner_state: Any, index: Any, regrown: list[Any]) -> Any:
    """The reset through ``optax.tree_utils.tree_map_params``: optax's own notion of which
    subtrees of the state are copies of the parameters (it inits ``tx`` on a placeholder), with
    ``optax.MaskedNode`` (``masked``, ``multi_transform``) taken as a leaf and left alone."""

    def reset(value: Any, i: Any) -> Any:
        return value if _is_masked_node(value) else _reset_leaf(value, regrown[i])

    return optax.tree_utils.tree_map_params(tx, reset, inner_state, index, is_leaf=_is_masked_node)


def _reset_by_path(inner_state: Any, index: Any, regrown: list[Any]) -> Any:
    """The reset by key paths: a state leaf whose key path ends with a parameter's key path
    (the longest such) and has its shape is that parameter's state (``...mu['dense']['kernel']``
    for ``['dense']['kernel']``), whatever wrappers lie above it."""
    owner = {tuple(path): i for path, i in jax.tree_util.tree_flatten_with_path(index)[0]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(inner_state, is_leaf=_is_masked_node)
    out = []
    for path, leaf in flat:
        path = tuple(path)
        i = next((owner[path[k:]] for k in range(len(path) + 1) if path[k:] in owner), None)
        out.append(leaf if i is None else _reset_leaf(leaf, regrown[i]))
    return treedef.unflatten(out)


def reset_where(
    inner_state: Any, params_treedef: Any, regrown: Sequence[Any], *, tx: Any = None
) -> Any:
    """Zeroes the wrapped optimizer's per-parameter state at ``regrown`` positions.

    A leaf of ``inner_state`` that belongs to parameter ``i`` (adam's ``mu``/``nu``, momentum's
    ``trace``, ``MultiSteps``' accumulated gradients, ...) and has its shape is set to zero
    where ``regrown[i]`` is True. Other leaves (counts, hyperparameters, factored second
    moments of another shape) are left as they are. Which leaf belongs to which parameter
    survives optax's wrappers (``chain``, ``masked``, ``multi_transform``, ``MultiSteps``,
    ``inject_hyperparams``, ``apply_if_finite``, ...):

    * with ``tx`` (the optimizer whose state it is): ``optax.tree_utils.tree_map_params``,
      optax's own map over the copies of the parameters inside a state (``MaskedNode``
      entries of ``masked``/``multi_transform`` skipped);
    * without ``tx``, or if ``tx.init`` cannot run on optax's placeholder: by key path, a state
      leaf whose path ends with parameter ``i``'s path (``...mu['dense']['kernel']``).

    A state that keeps no per-parameter tree (``optax.flatten``'s one flat vector) is left as
    it is.

    Args:
      inner_state: the wrapped optimizer's state.
      params_treedef: the parameters' tree structure (``jax.tree.structure(params)``) or the
        parameters themselves.
      regrown: one entry per parameter leaf (``jax.tree.leaves`` order): a bool array of the
        parameter's shape, or ``None`` (nothing to reset).
      tx: optional, the optimizer (``GradientTransformation``) that made ``inner_state``.

    Returns:
      ``inner_state`` with the same structure.
    """
    if not isinstance(params_treedef, jax.tree_util.PyTreeDef):
        params_treedef = jax.tree.structure(params_treedef)
    regrown = list(regrown)
    index = params_treedef.unflatten(range(params_treedef.num_leaves))
    if tx is not None:
        try:
            return _reset_by_optax(tx, inner_state, index, regrown)
        except Exception:  # an init that does not run on optax's placeholder: by path
            pass
    return _reset_by_path(inner_state, index, regrown)
