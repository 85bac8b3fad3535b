"""Every tutorial of docs/tutorials runs end to end on a tiny budget (TUTORIAL_BUDGET=tiny), on the shipped data."""
import runpy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import imread  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"


@pytest.fixture()
def run_tutorial(tmp_path, monkeypatch):
    """Run a tutorial script in a fresh folder with the tiny budget; returns its variables."""
    monkeypatch.setenv("TUTORIAL_BUDGET", "tiny")
    monkeypatch.chdir(tmp_path)

    def run(name: str) -> dict:
        return runpy.run_path(str(TUTORIALS / f"{name}.py"), run_name="__main__")
    return run


def _drawn(path: Path) -> bool:
    image = imread(path)
    return image.shape[0] > 100 and image.std() > 0


def test_fewshot_toxicity_tutorial(tox21, run_tutorial, tmp_path):
    tutorial = run_tutorial("pintuning_tox21")
    out = tmp_path / "pintuning_tutorial"
    for protocol in ("paper", "deployment"):
        result = tutorial[protocol]
        assert sorted(result["per_task"]) == sorted(tox21.test_tasks) and 0 <= result["roc_auc"] <= 1
    ranked = pd.read_csv(out / "scores.csv")
    assert len(ranked) == 501 and ranked["score"].isna().sum() == 1               # 500 library molecules + 1 typo
    assert ranked.loc[ranked["score"].isna(), "reason"].item() == "RDKit could not parse the SMILES"
    assert np.bincount(tutorial["embeddings"]["labels"].astype(int)).tolist() == [25, 25]
    for figure in ("learning_curve.png", "roc_pr.png", "embeddings.png"):
        assert _drawn(out / figure), figure
    assert (out / "model" / "training_history.csv").exists()


def test_own_assays_tutorial(run_tutorial, tmp_path):
    tutorial = run_tutorial("own_assays")
    out = tmp_path / "own_assays_tutorial"
    assert tutorial["status"] == 0                                                   # pintuning predict
    data = tutorial["data"]
    assert len(data.test_tasks) == 4 and not set(data.test_tasks) & set(data.train_tasks)
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == len(tutorial["episode"].query) and scores["score"].between(0, 1).all()
    assert sorted(tutorial["result"]["per_task"]) == sorted(data.test_tasks)
    assert _drawn(out / "roc_pr.png")
