"""The command line: summary, train -> predict on a user's assay CSV."""
import pandas as pd

from deepchem_pintuning.cli import main
from deepchem_pintuning.episodes import evaluation_episode


def test_summary(capsys):
    assert main(["summary", "--dataset", "toxcast-CLD", "--shots", "5", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "toxcast-CLD: 302 molecules, 19 properties (14 meta-train, 5 meta-test)" in out
    assert "skipped at featurization: 3" in out
    assert out.count("support 10 (5 active)") == 2


def test_train_then_predict_user_assay(cld, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["train", "--dataset", "toxcast-CLD", "--shots", "5", "--steps", "1", "--model-dir", str(model_dir),
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean over 5 meta-test properties: ROC-AUC" in out
    episode = evaluation_episode(cld, cld.test_tasks[1], n_shot=5, seed=0)
    pd.DataFrame({"smiles": [cld.smiles[i] for i in episode.support],
                  "label": episode.support_labels.astype(int)}).to_csv(tmp_path / "support.csv", index=False)
    library = [cld.smiles[i] for i in episode.query[:20]] + ["C1CC(broken"]
    pd.DataFrame({"smiles": library}).to_csv(tmp_path / "library.csv", index=False)
    assert main(["predict", "--model-dir", str(model_dir), "--support", str(tmp_path / "support.csv"),
                 "--library", str(tmp_path / "library.csv"), "--out", str(tmp_path / "scores.csv")]) == 0
    assert "scored 20 of 21 molecules (1 could not be featurized" in capsys.readouterr().out
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["score"].iloc[:20].between(0, 1).all() and scores["score"].isna().iloc[20]
