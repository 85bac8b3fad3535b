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
# build runs with -W. Names of other projects cannot resolve without intersphinx (no network at build
# time); docstrings name objects by their short, module-relative names, which the Python domain
# cannot always resolve, so an unresolved Python name in a docstring stays plain text (see setup).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|torchmetrics|np|numpy|pd|pandas|dc|deepchem|schnetpack|spk|ase|nn|pytorch_lightning|pl|"
               r"lightning|matplotlib|plt|dask|distributed|sklearn|scipy|rdkit|Chem|torch_geometric|hydra|"
               r"omegaconf|tblite|dscribe|typing|collections|pathlib|os|argparse|concurrent)(\..*)?"),
    (r"py:class", r"(Path|Figure|Axes|Tensor|Module|DataFrame|ndarray|Generator|Batch|Data|Atoms|Client|Namespace|"
                  r"ArgumentParser|ASEAtomsData|AtomsDataModule|AtomisticTask|Transform|ModelOutput|GraphData|"
                  r"Dataset|NumpyDataset|MetaLearner|TorchModel|Metric|Callback|Any|Union|Optional|Callable|"
                  r"Iterator|Iterable|Sequence|Dict|List|Tuple)"),
    # numpydoc type fields written as prose ("int, default 5", "array [n_support]", "tensors")
    (r"py:class", r".*[\s,\[\]>-].*|[a-z_]+|[A-Z]"),
]

html_theme = "alabaster"
html_title = "deepchem-pintuning"
html_static_path = []


def _quiet_in_docstrings(app, domain, node) -> bool:
    """Let an unresolved Python reference of a docstring render as plain text without a warning."""
    return domain is not None and domain.name == "py" and "docstring of" in str(node.source or "docstring of")


def setup(app):
    app.connect("warn-missing-reference", _quiet_in_docstrings)
