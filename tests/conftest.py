"""Shared fixtures: few-shot datasets featurized once per test session into a temporary cache, a CLI-trained model,
float64 as the default dtype for one test; figures closed after every test."""
import os
import sys
import tempfile

import pytest

# Featurized caches of the test session go to a fresh folder, so tests never read a stale cache. The
# xdist workers inherit the folder from the controlling process and share it (cache writes are atomic).
os.environ.setdefault("PINTUNING_CACHE_DIR", tempfile.mkdtemp(prefix="pintuning-test-cache-"))

# The suite runs in two pytest-xdist workers (setup.cfg): one torch thread each, inherited by the
# subprocesses tests start, so two workers on two cores do not oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


@pytest.fixture
def float64():
    """Float64 as torch's default dtype for one test (exact comparisons of two computation paths)."""
    import torch
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test drew (matplotlib warns once more than 20 are open in a session)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def tox21():
    from deepchem_pintuning.data import load_fewshot
    return load_fewshot("tox21")


@pytest.fixture(scope="session")
def cld():
    """ToxCast CLD group: 305 molecules x 19 properties, the smallest shipped benchmark."""
    from deepchem_pintuning.data import load_fewshot
    return load_fewshot("toxcast-CLD")


@pytest.fixture(scope="session")
def assay(cld, tmp_path_factory):
    """A model trained for one step through the CLI, a support CSV and a 21-row library CSV."""
    import contextlib
    import io

    import pandas as pd

    from deepchem_pintuning.cli import main
    from deepchem_pintuning.episodes import evaluation_episode

    folder = tmp_path_factory.mktemp("assay")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--dataset", "toxcast-CLD", "--shots", "5", "--steps", "1",
                     "--model-dir", str(folder / "model"), "--threads", "1"]) == 0
    (folder / "train.log").write_text(printed.getvalue())
    episode = evaluation_episode(cld, cld.test_tasks[1], n_shot=5, seed=0)
    pd.DataFrame({"SMILES": [cld.smiles[i] for i in episode.support],
                  "active": episode.support_labels.astype(int)}).to_csv(folder / "support.csv", index=False)
    library = [cld.smiles[i] for i in episode.query[:18]] + ["C1CC(broken", "", cld.smiles[episode.query[0]]]
    pd.DataFrame({"compound": [f"c{i}" for i in range(len(library))], "SMILES": library}).to_csv(
        folder / "library.csv", index=False)
    return folder
