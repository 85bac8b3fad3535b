"""Parity and learning-curve plots on real FreeSolv labels, and ``schnet-transfer plot``.

The "models" are FreeSolv's calculated (GAFF) hydration free energy, raw and linearly
calibrated onto the experimental value on each training fold (5 folds, 642 molecules),
written as protocol cells, so the plots show real data with known content.
"""

import json

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from schnet_transfer.calibration import fit_linear_calibration
from schnet_transfer.cli import main
from schnet_transfer.datasets import read_freesolv_table
from schnet_transfer.kfold import kfold_splits, subsample_train
from schnet_transfer.paper import regression_metrics
from schnet_transfer.plotting import (cells_learning_curves, cells_parity, error_vs_size,
                                      parity_plot)

SIZES = (25, 100, None)


@pytest.fixture(scope="module")
def cells():
    from pathlib import Path

    table = read_freesolv_table(Path(__file__).resolve().parents[1] / "data" / "freesolv" / "database.txt")
    calc, expt = table["calc"].to_numpy(), table["expt"].to_numpy()
    out = []
    for fold, split in enumerate(kfold_splits(len(expt))):
        for size in SIZES:
            s = split if size is None else subsample_train(split, size)
            train, test = s["train_idx"], s["test_idx"]
            slope, intercept = fit_linear_calibration(calc[train], expt[train])
            for method, pred in (("calc_linear", slope * calc[test] + intercept), ("calc", calc[test])):
                out.append({"target": "freesolv", "unit": "kcal/mol", "method": method,
                            "pretrain": None, "fold": fold, "size": "all" if size is None else size,
                            "n_train": len(train), "test_idx": test.tolist(),
                            "y_true": expt[test].tolist(), "y_pred": pred.tolist(),
                            **regression_metrics(expt[test], pred)})
    return {"cells": out, "calc": calc, "expt": expt}


def test_parity_plot_shows_every_molecule_of_every_model(cells):
    y, preds, folds = cells_parity(cells["cells"])
    assert folds == [0, 1, 2, 3, 4]
    assert np.array_equal(y, cells["expt"])                 # 5 test folds = every molecule once
    assert np.array_equal(preds["calc"], cells["calc"])
    ax = parity_plot(y, preds, unit="kcal/mol")
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [642, 642]
    assert np.allclose(scatters[1].get_offsets(), np.column_stack([cells["expt"], cells["calc"]]))
    (diagonal,) = ax.lines
    low = min(cells["expt"].min(), cells["calc"].min(), preds["calc_linear"].min())
    assert diagonal.get_xdata()[0] == pytest.approx(low)
    assert ax.get_xlabel() == "reference (kcal/mol)" and ax.get_ylabel() == "predicted (kcal/mol)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    mae = np.abs(cells["calc"] - cells["expt"]).mean()
    assert f"calc (MAE {mae:.3g})" in labels
    with pytest.raises(ValueError, match="predictions"):
        parity_plot(y, {"short": y[:10]})
    # a model with fewer folds restricts the pooled folds of every model
    partial = [c for c in cells["cells"] if c["method"] == "calc" or c["fold"] in (1, 3)]
    y2, preds2, folds2 = cells_parity(partial)
    expected = sum(len(kfold_splits(642)[f]["test_idx"]) for f in (1, 3))
    assert folds2 == [1, 3]
    assert len(y2) == expected == len(preds2["calc_linear"]) == len(preds2["calc"])


def test_error_vs_size_draws_one_curve_per_model(cells):
    curves = cells_learning_curves(cells["cells"])
    sizes, mean, sd = curves["calc_linear"]
    assert sizes[:2] == [25, 100] and 385 <= sizes[2] <= 386   # whole training fold: 385-386
    by_size = [[c["mae"] for c in cells["cells"] if c["method"] == "calc_linear" and c["size"] == s]
               for s in (25, 100, "all")]
    assert mean == pytest.approx([np.mean(v) for v in by_size])
    assert sd == pytest.approx([np.std(v, ddof=1) for v in by_size])
    ax = error_vs_size(curves, unit="kcal/mol")
    assert ax.get_xscale() == "log"
    data = {bars.get_label(): bars.lines[0] for bars in ax.containers}   # one errorbar per model
    assert set(data) == {"calc", "calc_linear"}
    assert np.allclose(data["calc_linear"].get_ydata(), mean)
    assert np.allclose(data["calc_linear"].get_xdata(), sizes)
    assert ax.get_ylabel() == "test MAE (kcal/mol)" and ax.get_xlabel() == "training molecules"


def test_cli_plot_writes_both_plots_and_refuses_bad_input(cells, tmp_path, capsys):
    folder = tmp_path / "freesolv"
    folder.mkdir()
    for i, c in enumerate(cells["cells"]):
        (folder / f"{i:03d}.json").write_text(json.dumps(c))
    assert main(["plot", "parity", str(folder), str(tmp_path / "p.png"), "--methods", "calc"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == ["calc"]
    assert main(["plot", "curve", str(folder), str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "c.png").stat().st_size > 1000
    assert main(["plot", "curve", str(tmp_path / "missing"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


def test_report_summarizes_folds_and_pairs_models(cells, tmp_path):
    from scipy import stats

    from schnet_transfer.report import paired_comparison, write_report

    folder = tmp_path / "cells" / "freesolv"
    folder.mkdir(parents=True)
    for i, c in enumerate(cells["cells"]):
        (folder / f"{i:03d}.json").write_text(json.dumps(c))
    report = write_report(tmp_path / "cells", tmp_path / "report")
    per_fold = [c["mae"] for c in sorted(cells["cells"], key=lambda c: c["fold"])
                if c["method"] == "calc_linear" and c["size"] == "all"]
    row = next(r for r in report["summary"] if r["model"] == "calc_linear" and r["size"] == "all")
    assert row["n_folds"] == 5 and row["mae"]["per_fold"] == pytest.approx(per_fold)
    assert row["mae"]["mean"] == pytest.approx(np.mean(per_fold))
    assert row["mae"]["sd"] == pytest.approx(np.std(per_fold, ddof=1))
    raw = [c["mae"] for c in sorted(cells["cells"], key=lambda c: c["fold"])
           if c["method"] == "calc" and c["size"] == "all"]
    pair = paired_comparison(cells["cells"], "freesolv", "calc", "calc_linear")
    assert pair["differences"] == pytest.approx(np.subtract(per_fold, raw).tolist())
    assert pair["better_in"] == int(np.sum(np.subtract(per_fold, raw) < 0))
    assert pair["t_test_p"] == pytest.approx(stats.ttest_rel(per_fold, raw).pvalue)
    text = (tmp_path / "report.md").read_text()
    assert f"| `calc_linear` | all ({row['n_train']:.0f}) | 5 | - | {np.mean(per_fold):.3f} ± " in text
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == report["summary"]
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_size_study_pairs_each_further_pretraining_set_with_the_main_one():
    from schnet_transfer.report import comparisons

    def cell(method, pretrain, fold, mae):
        return {"target": "hopv", "method": method, "pretrain": pretrain, "fold": fold, "size": "all", "mae": mae}

    cells = [cell("painn_scratch", None, f, 0.30) for f in range(3)]
    cells += [cell(m, "main_set", f, 0.25) for f in range(3) for m in ("painn_finetune_v2", "painn_pretrained_v2")]
    cells += [cell("painn_finetune_v2", "similar_10k", f, 0.20 + 0.01 * f) for f in range(3)]
    cells += [cell("painn_pretrained_v2", "similar_10k", f, 0.5) for f in range(3)]
    size_rows = [(p["reference"], p["model"]) for p in comparisons(cells) if "@" in p["reference"]]
    assert size_rows == [("painn_finetune_v2@main_set", "painn_finetune_v2@similar_10k")]
    pair = next(p for p in comparisons(cells) if p["reference"] == "painn_finetune_v2@main_set")
    assert pair["differences"] == pytest.approx([-0.05, -0.04, -0.03]) and pair["better_in"] == 3


def test_size_study_rows_carry_each_sets_size_selection_and_folds(tmp_path):
    from schnet_transfer.report import comparisons, size_study, write_report

    def cell(method, pretrain, fold, mae, molecules=None, selection="random"):
        details = {} if molecules is None else {"pretraining": {"name": pretrain, "molecules": molecules,
                                                                "selection": selection}}
        return {"target": "hopv", "unit": "eV", "method": method, "pretrain": pretrain, "fold": fold,
                "size": "all", "n_train": 209, "mae": mae, "rmse": mae, "r2": 0.5, "details": details,
                "test_idx": [fold], "y_true": [1.0], "y_pred": [1.0 + mae]}

    cells = [cell("painn_scratch", None, f, 0.30) for f in range(3)]
    cells += [cell("painn_finetune_v2", "small", f, 0.25 + 0.01 * f, 1352) for f in range(3)]
    cells += [cell("painn_finetune_v2", "big", f, 0.20, 10_000) for f in range(2)]
    cells += [cell("painn_finetune_v2", "similar", f, 0.22, 10_000, "hopv_similar") for f in range(3)]
    cells += [cell("painn_finetune_v1", "old", f, 0.9) for f in range(3)]       # no record of its set: left out
    rows = size_study(cells)
    assert [(r["pretrain"], r["molecules"], r["selection"], r["folds"]) for r in rows] == [
        ("small", 1352, "random", [0, 1, 2]), ("big", 10_000, "random", [0, 1]),
        ("similar", 10_000, "hopv_similar", [0, 1, 2])]
    assert rows[0]["mae"]["mean"] == pytest.approx(0.26) and rows[0]["mae"]["sd"] == pytest.approx(0.01)
    folder = tmp_path / "cells" / "hopv"
    folder.mkdir(parents=True)
    for i, c in enumerate(cells):
        (folder / f"{i:03d}.json").write_text(json.dumps(c))
    cells[0]["budget"] = {"epochs": 25, "threads": "1"}     # a run given 25 epochs trained 30
    cells[0]["details"] = {"epochs": 30}
    (folder / "000.json").write_text(json.dumps(cells[0]))
    cells[-1]["budget"] = {"epochs": 40, "threads": "2", "pretrain_sets": ["old", "x"]}
    (folder / f"{len(cells) - 1:03d}.json").write_text(json.dumps(cells[-1]))
    report = write_report(tmp_path / "cells", tmp_path / "report")
    assert report["budget"] == {"epochs": [30], "threads": ["1", "2"],
                                "pretrain_sets": ["big", "old", "similar", "small"]}
    text = (tmp_path / "report.md").read_text()
    assert "| `big` | random | 10,000 | 0.200 ± 0.000 (2) |" in text
    assert "| `similar` | hopv_similar | 10,000 | 0.220 ± 0.000 (3) |" in text
    assert "`painn_scratch` 0.300 ± 0.000 (3)" in text
    # the similar set against the random set of its size, on the folds both have
    twins = [(p["reference"], p["model"], p["folds"]) for p in comparisons(cells)
             if p["model"].endswith("@similar") and "@" in p["reference"]]
    assert twins == [("painn_finetune_v2@big", "painn_finetune_v2@similar", [0, 1])]
    # a random set against the next smaller random one (here: small, 1,352 -> big, 10,000)
    growth = [(p["reference"], p["model"], p["folds"]) for p in comparisons(cells)
              if p["model"].endswith("@big") and "@" in p["reference"]]
    assert growth == [("painn_finetune_v2@small", "painn_finetune_v2@big", [0, 1])]
