"""Sphinx source parser for the tutorials: jupytext percent-format scripts rendered as Markdown.

A tutorial is a plain Python script (``# %%`` code cells, ``# %% [markdown]`` text cells) that the
test suite runs; the site shows its cells as Markdown text and Python code blocks. Nothing is
executed at build time.
"""
from __future__ import annotations

from typing import Dict

import jupytext
from docutils import nodes
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.application import Sphinx


def percent_script_to_markdown(text: str) -> str:
    """Markdown of a percent-format script: text cells as they are, code cells as ``python`` blocks.

    Examples
    --------
    >>> print(percent_script_to_markdown("# %% [markdown]\\n# # Title\\n\\n# %%\\nx = 1\\n"))
    # Title
    <BLANKLINE>
    ```python
    x = 1
    ```
    <BLANKLINE>
    """
    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata = {"jupytext": {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}}
    return jupytext.writes(notebook, fmt="md")


class PercentScriptParser(MystParser):
    """MyST parser fed with :func:`percent_script_to_markdown` of the source."""

    supported = ("jupytext-percent",)

    def parse(self, inputstring: str, document: nodes.document) -> None:
        super().parse(percent_script_to_markdown(inputstring), document)


def setup(app: Sphinx) -> Dict[str, bool]:
    app.add_source_suffix(".py", "jupytext-percent")
    app.add_source_parser(PercentScriptParser)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
