"""Sphinx configuration of the hadamard_jax documentation site.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are MyST markdown; the API reference is autodoc with napoleon (Google-style ``Args:`` /
``Returns:``); math renders with MathJax. The command-line help shown on the API pages is
generated here at build time from the commands themselves, so it cannot go stale; the gate
functions' entries and the gate table are generated from the gate table (``_ext/gate_docs.py``).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not some other installed copy
sys.path.insert(0, str(DOCS / "_ext"))  # this site's own extensions

import hadamard_jax  # noqa: E402

project = "hadamard_jax"
author = "hadamard_jax authors"
copyright = "2026, hadamard_jax authors"  # noqa: A001
release = hadamard_jax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax served from the built site, so the pages render math offline too.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    # The gate functions' API entries and the gate table, generated from the gate table.
    "gate_docs",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated/*.txt"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types only for documented parameters (and a return type only under Returns:), so the NNX
# modules' metaclass `(*args: Any, **kwargs: Any) -> Any` adds nothing.
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The modules annotate with `from __future__ import annotations`; show these names as written
# instead of expanding the aliases (ArrayLike is a union of eight types).
autodoc_type_aliases = {
    "ArrayLike": "jax.typing.ArrayLike",
    "DTypeLike": "jax.typing.DTypeLike",
    "Dtype": "Dtype",
    "PrecisionLike": "PrecisionLike",
    "Initializer": "Initializer",
    "Shape": "Shape",
}

html_theme = "furo"
html_title = f"hadamard_jax {release}"
html_static_path: list[str] = []

# Some annotations name types Sphinx cannot resolve (jax.typing.ArrayLike aliases, optax
# protocols); they are shown as written, not linked.
nitpicky = False


def _module_signature(app, what, name, obj, options, signature, return_annotation):
    """Flax NNX modules are built through a metaclass whose ``__call__(*args, **kwargs)`` hides
    the constructor's arguments from autodoc; show ``__init__``'s signature instead (its types
    go into the parameter list, as for every other signature here)."""
    if what == "class" and signature and signature.replace(": Any", "") == "(*args, **kwargs)":
        import inspect

        init = inspect.signature(obj.__init__)
        params = [
            p.replace(annotation=inspect.Parameter.empty)
            for p in list(init.parameters.values())[1:]  # without self
        ]
        text = str(init.replace(parameters=params, return_annotation=inspect.Signature.empty))
        return re.sub(r" at 0x[0-9a-f]+>", ">", text), None  # default initialisers' reprs
    return None


def setup(app):
    app.connect("autodoc-process-signature", _module_signature)


# --- the commands' --help, generated at build time -------------------------------------------
# `python -m <module> --help` for each command; the API page includes the text literally.
COMMANDS = {
    "bench": "hadamard_jax.bench",
    "gating": "hadamard_jax.bench.gating",
    "ffn_stack": "hadamard_jax.bench.ffn_stack",
    "flax_stack": "hadamard_jax.bench.flax_stack",
    "recurrence": "hadamard_jax.bench.recurrence",
    "sparse_step": "hadamard_jax.bench.sparse_step",
}


def _write_help() -> None:
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, COLUMNS="88", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    running = {  # in parallel: each one imports JAX
        name: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name, module in COMMANDS.items()
    }
    for name, process in running.items():
        text, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"python -m {COMMANDS[name]} --help exited {process.returncode}")
        path = out / f"{name}_help.txt"
        if not path.exists() or path.read_text() != text:  # unchanged: no rebuild of the page
            path.write_text(text)


_write_help()
