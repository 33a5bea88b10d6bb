"""Which parameters are pruned, and how much of each: filters, uniform and ERK distributions.

A distribution turns one target sparsity ``s`` into one sparsity per prunable parameter. The
shapes it sees are *layer* shapes: a stacked kernel ``[*stack, in, out]`` (``nnx.scan``) is
``stack`` layers of shape ``(in, out)``, each pruned to its own sparsity.

* ``"uniform"``: every prunable parameter gets ``s``.
* ``"erk"`` (Erdős–Rényi-Kernel, Evci et al. 2020, "Rigging the Lottery", appendix): the density
  of a layer of shape :math:`(d_1, \\dots, d_k)` is proportional to
  :math:`\\sum_i d_i / \\prod_i d_i`, scaled by one :math:`\\epsilon` so that the kept entries
  of all prunable layers together are :math:`(1 - s) N`. A layer whose density would exceed 1
  is made dense, and :math:`\\epsilon` is solved again over the others (repeatedly).
* overrides: ``{regex: sparsity}``; a parameter whose path (``"block/up_kernel"``, keys joined
  by ``/``) matches a pattern (``re.search``, first match wins) gets that sparsity, and the
  distribution shares the target among the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hadamard_jax._src import checks
from hadamard_jax._src.checks import Shape

#: ``filter(path, shape) -> bool``: whether a parameter is pruned.
Filter = Callable[[str, Shape], bool]

DISTRIBUTIONS = ("uniform", "erk")
_NEVER = ("bias", "scale", "norm")


def default_filter(path: str, shape: Shape) -> bool:
    """Kernels only: rank >= 2 and no ``bias``/``scale``/``norm`` in the parameter's name.

    The filter sees paths and shapes; :func:`~hadamard_jax.sparse.sparsify` asks it only about
    inexact (floating or complex) parameters: integer and boolean leaves (index tables,
    frozen lookups, flags) are never pruned, whatever the filter says.

    Rank 1 parameters (biases, norm scales) are never pruned; the name test also skips stacked
    biases and norm scales (rank 2 under ``nnx.scan``) and ``LayerNorm``'s parameters.

    Examples:
      >>> default_filter("block/up_kernel", (64, 128)), default_filter("inp/bias", (128,))
      (True, False)
      >>> default_filter("layers/norm/scale", (4, 128))
      False
    """
    name = path.lower()
    return len(shape) >= 2 and not any(word in name for word in _NEVER)


def erk_densities(
    shapes: Sequence[Shape], sparsity: float, layers: Sequence[int] | None = None
) -> list[float]:
    """ERK densities of layers of ``shapes`` (layer shapes) for a global ``sparsity``.

    ``layers[i]`` (default 1) is how many stacked layers of ``shapes[i]`` a parameter holds:
    they share one density and count ``layers[i]`` times in the global budget.

    Args:
      shapes: the layer shapes, one tuple of ints per parameter.
      sparsity: the global target, a static number in ``[0, 1]`` (``1``: every density 0).
      layers: optional count of stacked layers per shape (default 1 each).

    Returns:
      One density in ``[0, 1]`` per layer; sum of ``density * size`` is ``(1 - sparsity) *
      sum of sizes`` (up to float rounding) unless every layer is dense.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``; ``layers`` of another length than
        ``shapes``.
      TypeError: ``sparsity`` not a static number.

    Examples:
      >>> [round(d, 4) for d in erk_densities([(64, 128), (128, 10)], 0.9)]
      [0.0673, 0.3095]
    """
    op = "erk_densities"
    sparsity = checks.static_fraction(sparsity, "sparsity", op)
    counts = [1] * len(shapes) if layers is None else list(layers)
    if len(counts) != len(shapes):
        raise ValueError(
            f"{op}: layers needs one count per shape, got {len(counts)} for {len(shapes)} shapes."
        )
    sizes = [math.prod(s) * c for s, c in zip(shapes, counts)]
    raw = [sum(s) / math.prod(s) if math.prod(s) else 0.0 for s in shapes]
    total_kept = (1.0 - sparsity) * sum(sizes)
    dense: set[int] = set()
    while True:
        budget = total_kept - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in range(len(shapes)) if i not in dense)
        if weight <= 0:
            return [1.0 if i in dense or sizes[i] == 0 else 0.0 for i in range(len(shapes))]
        eps = budget / weight
        over = {i for i in range(len(shapes)) if i not in dense and eps * raw[i] > 1.0}
        if not over:
            return [1.0 if i in dense else max(0.0, eps * raw[i]) for i in range(len(shapes))]
        dense |= over


def check_overrides(overrides: Any, op: str) -> dict[str, float]:
    """``{regex: sparsity}`` with each sparsity a static number in ``[0, 1]``."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"{op}: overrides must be a mapping {{path regex: sparsity}}, got "
            f"{type(overrides).__name__}."
        )
    out = {}
    for pattern, value in overrides.items():
        if not isinstance(pattern, str):
            raise TypeError(f"{op}: overrides keys must be path regexes (str), got {pattern!r}.")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"{op}: overrides key {pattern!r} is not a valid regular expression ({err})."
            ) from None
        out[pattern] = checks.static_fraction(value, f"overrides[{pattern!r}]", op)
    return out


def layer_sparsities(
    paths: Sequence[str],
    shapes: Sequence[Shape],
    sparsity: float,
    distribution: str,
    overrides: Mapping[str, float],
    layers: Sequence[int] | None = None,
) -> list[float]:
    """Per-parameter sparsities of prunable parameters (layer ``shapes``) for a target ``sparsity``.

    ``overrides`` maps path regexes to the sparsity of the matching parameters (already scaled
    to this level by the caller); the distribution shares ``sparsity`` among the others. A
    target of 0 is dense everywhere.
    """
    out: list[float | None] = [None] * len(paths)
    if sparsity == 0.0:
        return [0.0] * len(paths)
    for i, path in enumerate(paths):
        for pattern, value in overrides.items():
            if re.search(pattern, path):
                out[i] = value
                break
    rest = [i for i in range(len(paths)) if out[i] is None]
    if distribution == "uniform":
        for i in rest:
            out[i] = sparsity
    else:
        counts = [1] * len(paths) if layers is None else list(layers)
        densities = erk_densities([shapes[i] for i in rest], sparsity, [counts[i] for i in rest])
        for i, d in zip(rest, densities):
            out[i] = min(1.0, max(0.0, 1.0 - d))
    return [float(v) for v in out if v is not None]
