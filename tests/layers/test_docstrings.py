"""The Flax modules' docstrings (``hadamard_jax._layers.docstrings``): the choices listed from
the gate table in both front ends, every argument documented in both."""

import dataclasses
import inspect
import re

import pytest
from flax import linen as nn

import hadamard_jax.linen as hl
import hadamard_jax.nnx as hn


@pytest.mark.parametrize("front", [hn, hl])
def test_docstrings_list_every_gate_of_the_gate_table(front):
    """A gate added to the table appears in every docstring that lists the choices, NNX and
    Linen alike, and no placeholder is left unfilled."""
    from hadamard_jax._src import gates

    for cls in (front.GLU, front.GatedMLP):
        for name in gates.NAMES:
            assert f'``"{name}"``' in cls.__doc__, (cls, name)
    plain = [g.name for g in gates.GATES.values() if not g.clamps_value]
    clamped = [g.name for g in gates.GATES.values() if g.clamps_value]
    doc = front.GatedRMSNorm.__doc__
    assert all(f'``"{n}"``' in doc for n in plain) and not any(f'``"{n}"``' in doc for n in clamped)
    for name in ("GLU", "GatedMLP", "Highway", "GatedResidual", "GatedRMSNorm"):
        assert "{{" not in getattr(front, name).__doc__, name
    assert '``"headwise"``' in front.GatedMultiHeadAttention.__doc__


def _documented(doc: str, section: str) -> set[str]:
    """The names an ``Args:``/``Attributes:`` section describes (``a, b: text`` names both; an
    entry may wrap onto indented lines before its colon)."""
    body = doc.split(f"\n{section}:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=  \S)", body)
    return {name.strip() for entry in entries for name in entry.split(":", 1)[0].split(",")}


MODULES = sorted(
    name
    for name in set(hn.__all__) & set(hl.__all__)
    if inspect.isclass(getattr(hn, name)) and issubclass(getattr(hl, name), nn.Module)
)


@pytest.mark.parametrize("name", MODULES)
def test_every_argument_is_documented_in_both_front_ends(name):
    """Each NNX constructor argument is in its ``Args``, each Linen field in its ``Attributes``
    (the docstrings of the two front ends are filled from one text per family, or refer to
    it), so a new option cannot land undocumented in one of them."""
    nnx_args = set(inspect.signature(getattr(hn, name).__init__).parameters) - {
        "self",
        "rngs",
        "kwargs",
    }
    linen_fields = {f.name for f in dataclasses.fields(getattr(hl, name))} - {"parent", "name"}
    assert nnx_args <= _documented(inspect.getdoc(getattr(hn, name)) or "", "Args"), name
    assert linen_fields <= _documented(inspect.getdoc(getattr(hl, name)) or "", "Attributes"), name
