"""Sphinx configuration of ntmdist's documentation: ``make docs`` builds it into
``docs/_build/html`` with warnings as errors."""

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the source tree, installed or not

project = "ntmdist"
author = "the ntmdist authors"
copyright = "2026, the ntmdist authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Google-style sections of the docstrings: Arguments:, Returns:, Raises:, Example:, References:
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# ntmdist.integrations.sbi subclasses a class of the optional sbi package (its extra): the
# reference documents it without installing sbi
autodoc_mock_imports = ["sbi"]

# design.md, ablations.md and benchmarks.md are Markdown with $...$ and $$...$$ mathematics
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "ntmdist"


def _canonical(name: str) -> str | None:
    """Where a public name is documented: ``ntmdist.NTM.iwae`` -> ``ntmdist.model.NTM.iwae``
    (re-exported classes and functions are documented in the module that defines them)."""
    parts = name.split(".")
    obj, found = importlib.import_module(parts[0]), None
    for i, part in enumerate(parts[1:], start=2):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
        if isinstance(getattr(obj, "__module__", None), str) and hasattr(obj, "__qualname__"):
            found = (f"{obj.__module__}.{obj.__qualname__}", i)
    if found is None:
        return None
    prefix, used = found
    return ".".join([prefix, *parts[used:]])


def _resolve_reexport(app, env, node, contnode):  # noqa: ANN001, ANN202 (Sphinx's event)
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("ntmdist."):
        return None
    canonical = _canonical(target)
    if canonical is None or canonical == target:
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                             node["reftype"], canonical, node, contnode)


def setup(app):  # noqa: ANN001, ANN201 (Sphinx's entry point)
    app.connect("missing-reference", _resolve_reexport)
