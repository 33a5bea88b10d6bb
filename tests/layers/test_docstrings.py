"""The Flax modules' docstrings (``hadamard_jax._layers.docstrings``): the choices listed from
the gate table in both front ends, every Linen attribute documented."""

import dataclasses

import pytest

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


@pytest.mark.parametrize(
    "cls",
    [
        hl.GLU,
        hl.GatedMLP,
        hl.Highway,
        hl.GatedResidual,
        hl.Mask,
        hl.MaskedLinear,
        hl.HardConcreteGate,
    ],
)
def test_linen_classes_document_their_attributes(cls):
    doc = cls.__doc__ or ""
    assert "Attributes:" in doc, cls.__name__
    for field in (f.name for f in dataclasses.fields(cls)):  # ClassVars (_options) left out
        if field not in ("parent", "name"):
            assert field in doc.split("Attributes:")[1], (cls.__name__, field)
