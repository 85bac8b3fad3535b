"""Sphinx configuration of the documentation site.

Build (offline, warnings are errors)::

    .venv/bin/python -m sphinx -W --keep-going -E -b html docs docs/_build/html
"""
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

project = "deepchem-pintuning"
author = "deepchem-pintuning contributors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "percent_scripts",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}   # .py tutorials: percent_scripts
exclude_patterns = ["_build", "_ext", "conf.py"]
root_doc = "index"

# MyST: links to "page.md#a-heading" resolve for headings down to level 3
myst_heading_anchors = 3

# numpydoc docstrings through napoleon; signatures show the type hints, the text does not repeat them
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_inherit_docstrings = False   # only this project's docstrings (base classes' are other projects' RST)

# Every reference of the pages must resolve: a broken link, page or API name is a warning, and the
# build runs with -W. Docstrings and signatures name other projects' objects (no intersphinx: no
# network at build time) and use short module-relative names the Python domain cannot always
# resolve: there an unresolved Python name stays plain text (see setup).
nitpicky = True

html_theme = "alabaster"
html_title = "deepchem-pintuning"
html_static_path = []


def _quiet_in_docstrings(app, domain, node) -> bool:
    """True (no warning) for an unresolved Python name of a docstring or of a signature (which has no source)."""
    source = node.source or ""
    return domain is not None and domain.name == "py" and (not source or "docstring of" in source)


def setup(app):
    app.connect("warn-missing-reference", _quiet_in_docstrings)
