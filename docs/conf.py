"""Sphinx configuration of ntmdist's documentation: ``make docs`` builds it into
``docs/_build/html`` with warnings as errors."""

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

# design.md, ablations.md and benchmarks.md are Markdown with $...$ and $$...$$ mathematics
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "ntmdist"
