"""The command line: summary, train -> predict on a user's assay (CSV or SDF), user errors as one line."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from deepchem_pintuning.cli import main


def test_summary(capsys):
    assert main(["summary", "--dataset", "toxcast-CLD", "--shots", "5", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "toxcast-CLD: 302 molecules, 19 properties (14 meta-train, 5 meta-test)" in out
    assert "skipped at featurization: 3" in out
    assert out.count("support 10 (5 active)") == 2


def _predict(assay, *extra, out="scores.csv", library="library.csv"):
    return ["predict", "--model-dir", str(assay / "model"), "--support", str(assay / "support.csv"),
            "--library", str(assay / library), "--out", str(assay / out), "--smiles-column", "SMILES",
            "--label-column", "active", "--quiet", *extra]


def test_train_prints_scores_and_saves_the_model(assay):
    assert "mean over 5 meta-test properties: ROC-AUC" in (assay / "train.log").read_text()
    assert (assay / "model" / "pintuning_config.json").exists()


def test_predict_keeps_every_row_in_order_with_reasons(assay, capsys):
    assert main(_predict(assay)) == 0
    assert "scored 19 of 21 molecules (2 could not be featurized" in capsys.readouterr().out
    scores = pd.read_csv(assay / "scores.csv", keep_default_na=False)
    assert list(scores.columns) == ["compound", "SMILES", "score", "reason"]
    assert scores["compound"].tolist() == [f"c{i}" for i in range(21)]
    valid = scores["reason"] == ""
    assert valid.sum() == 19 and pd.to_numeric(scores.loc[valid, "score"]).between(0, 1).all()
    assert scores.loc[18, "reason"] == "RDKit could not parse the SMILES" and scores.loc[19, "reason"] == "empty SMILES"
    assert scores.loc[0, "score"] == scores.loc[20, "score"]           # the same molecule twice


def test_predict_in_small_chunks_writes_the_same_file(assay):
    """Chunks of 4 rows: featurized one chunk ahead, written as they come, header once."""
    assert main(_predict(assay, out="whole.csv")) == 0
    assert main(_predict(assay, "--chunk-size", "4", out="chunked.csv")) == 0
    whole, chunked = (pd.read_csv(assay / name, keep_default_na=False) for name in ("whole.csv", "chunked.csv"))
    assert chunked.drop(columns="score").equals(whole.drop(columns="score"))   # rows, order, reasons, header once
    scored = whole["reason"] == ""
    # batches of other sizes round differently in the last float32 digits (written with 6 decimals)
    assert np.allclose(pd.to_numeric(chunked.loc[scored, "score"]), pd.to_numeric(whole.loc[scored, "score"]),
                       atol=2e-6, rtol=0)


def test_uncertainty_column_is_the_spread_over_adaptations(assay):
    assert main(_predict(assay, "--uncertainty", "3", out="uncertain.csv")) == 0
    scores = pd.read_csv(assay / "uncertain.csv", keep_default_na=False)
    assert list(scores.columns) == ["compound", "SMILES", "score", "score_sd", "reason"]
    spread = pd.to_numeric(scores.loc[scores["reason"] == "", "score_sd"])
    assert (spread >= 0).all() and spread.max() > 0 and spread.max() < 0.5
    assert scores.loc[18, "score_sd"] == ""
    assert main(_predict(assay, "--uncertainty", "1", out="bad.csv")) == 2


def test_eval_mode_adaptation_does_not_depend_on_the_seed(assay):
    assert main(_predict(assay, "--adaptation", "eval", "--uncertainty", "2", out="eval.csv")) == 0
    scores = pd.read_csv(assay / "eval.csv", keep_default_na=False)
    assert (pd.to_numeric(scores.loc[scores["reason"] == "", "score_sd"]) == 0).all()


def test_predict_is_reproducible_in_another_process(assay):
    assert main(_predict(assay, out="first.csv")) == 0
    command = [sys.executable, "-m", "deepchem_pintuning.cli", *_predict(assay, out="second.csv")]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert (assay / "first.csv").read_text() == (assay / "second.csv").read_text()


def test_predict_reads_every_sdf_record(assay, cld):
    smiles = pd.read_csv(assay / "library.csv")["SMILES"].dropna().tolist()[:5]
    with Chem.SDWriter(str(assay / "library.sdf")) as writer:
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            mol.SetProp("_Name", f"mol{i}")
            mol.SetProp("vendor_id", f"V{i}")
            writer.write(mol)
    assert main(_predict(assay, "--id-column", "vendor_id", out="sdf_scores.csv", library="library.sdf")) == 0
    scores = pd.read_csv(assay / "sdf_scores.csv", keep_default_na=False)
    assert scores["name"].tolist() == [f"mol{i}" for i in range(5)] and scores["vendor_id"].tolist()[-1] == "V4"
    assert (scores["reason"] == "").all()


@pytest.mark.parametrize("change,message", [
    ({"library": "missing.csv"}, "--library .*missing.csv does not exist"),
    ({"out": "."}, "is a directory"),
    ({"out": "no_such_folder/scores.csv"}, "folder .*no_such_folder does not exist"),
    ({"support_rows": "C,yes\n"}, "row 12: label 'yes' is not 0 or 1"),
    ({"support_rows": "C,\n"}, "row 12: label '' is not 0 or 1"),
    ({"smiles_column": "smi"}, "no column 'smi'"),
    ({"model_dir": "no_model"}, "not a saved PinTuningModel"),
])
def test_user_errors_are_one_line_with_status_2(assay, tmp_path, capsys, change, message):
    support = tmp_path / "support.csv"
    support.write_text((assay / "support.csv").read_text() + change.get("support_rows", ""))
    argv = ["predict", "--model-dir", str(tmp_path / change["model_dir"]) if "model_dir" in change else
            str(assay / "model"), "--support", str(support),
            "--library", str(tmp_path / change["library"]) if "library" in change else str(assay / "library.csv"),
            "--out", str(tmp_path / change.get("out", "scores.csv")), "--smiles-column",
            change.get("smiles_column", "SMILES"), "--label-column", "active", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pintuning: error:")
    assert re.search(message, err), err
    assert not (tmp_path / "scores.csv").exists()


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--steps", "-5"], "--steps must be at least 1, got -5"),
    (["--shots", "0"], "--shots must be at least 1, got 0"),
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--model-dir", "FILE"], "is a file, not a folder"),
])
def test_train_refuses_bad_arguments_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    assert main(["train", "--dataset", "toxcast-CLD", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize("code", ["import deepchem_pintuning", "from deepchem_pintuning.cli import main; main(['--help'])"])
def test_import_and_help_print_no_upstream_noise(code):
    """DeepChem's ~16 warnings about missing optional dependencies are muted while it is imported."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr == ""
    assert "Skipped loading" not in done.stdout and "No normalization" not in done.stdout


def test_ctrl_c_while_scoring_leaves_no_output_and_no_worker(assay, capsys, monkeypatch):
    from deepchem_pintuning.assay_scoring import AssayScoring
    score_smiles, calls = AssayScoring.score_smiles, []

    def interrupted_on_the_second_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score_smiles(self, *args, **kwargs)

    monkeypatch.setattr(AssayScoring, "score_smiles", interrupted_on_the_second_chunk)
    assert main(_predict(assay, "--chunk-size", "5", out="interrupted.csv")) == 130
    assert capsys.readouterr().err.strip() == "pintuning: interrupted (an unfinished --out is not written)"
    assert not list(assay.glob("interrupted.csv*"))
    children = " ".join(Path(f"/proc/{pid}/cmdline").read_text() for task in Path(f"/proc/{os.getpid()}/task").iterdir()
                        for pid in (task / "children").read_text().split() if Path(f"/proc/{pid}").exists())
    assert "molecule_graph" not in children   # the featurizer process was ended
