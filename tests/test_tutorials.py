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
    for protocol in ("honest", "deployment"):
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


def test_cheap_qc_transfer_tutorial(run_tutorial, tmp_path):
    tutorial = run_tutorial("cheap_qc_transfer")
    work = tmp_path / "cheap_qc_tutorial"
    n_test = len(tutorial["test"])
    assert n_test == 3
    assert tutorial["scored"].all()                                                 # xTB labelled every test molecule
    for name in ("finetuned", "scratch", "calibrated"):
        values = tutorial[name]
        assert values.shape == (n_test,) and np.all((values > 0.5) & (values < 8.0)), name   # eV, not z-scores
    assert np.allclose(tutorial["reference"], tutorial["gaps"][tutorial["test"]], atol=1e-6)   # float32 in the model
    assert np.isfinite(tutorial["slope"]) and tutorial["slope"] > 0                 # xTB and PBE0 gaps correlate
    for run in ("pretrain_xtb_gap", "finetune", "scratch"):
        assert (work / "runs" / run / "best_model").exists(), run
    assert (work / "runs" / "finetune" / "pretrained_model.json").exists()          # fine-tuned from the pre-training
    assert _drawn(work / "parity.png")
