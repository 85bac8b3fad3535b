"""The runnable examples in the schnet_transfer docstrings (they use the shipped data)."""

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = ["conformers", "xtb_labels", "pretraining_set", "target_similar", "labelling", "datasets",
           "normalizer", "calibration", "finetune", "baselines", "target_labels", "kfold",
           "paper", "report", "plotting"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # examples read data/...
    module = importlib.import_module(f"schnet_transfer.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
