"""The paper protocol on small real data: folds, leakage, v1 correction, Delta-learning.

The end-to-end fixture runs :class:`schnet_transfer.paper.Protocol` on 30 FreeSolv
molecules (calculated label, real GFN2-xTB labels at their geometries) with 3
folds, a tiny PaiNN pre-trained for one epoch on 20 real xTB-labelled QM9
molecules (plus 3 target molecules that the pre-training split must leave out),
and one fold of the v1 fine-tuning and Delta-learning cells through the real
``spktrain``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from schnet_transfer.calibration import fit_linear_calibration
from schnet_transfer.datasets import convert_freesolv, read_freesolv_table
from schnet_transfer.evaluate import predict
from schnet_transfer.kfold import kfold_splits, subsample_train, write_split_file
from schnet_transfer.labelling import label_molecules
from schnet_transfer.paper import BASELINES, Protocol, inchikeys, v1_statistics
from schnet_transfer.pretraining_set import MoleculeInput, from_smiles_table
from schnet_transfer.target_labels import label_target, with_cheap_labels
from schnet_transfer.xtb_labels import XtbSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.representation.n_atom_basis=8", "model.representation.n_interactions=2",
        "model.representation.radial_basis.n_rbf=8"]
PROP = "hydration_free_energy"


def test_folds_partition_the_set_and_are_reproducible(tmp_path):
    folds = kfold_splits(349)
    tests = np.concatenate([f["test_idx"] for f in folds])
    vals = np.concatenate([f["val_idx"] for f in folds])
    assert sorted(tests.tolist()) == list(range(349)) == sorted(vals.tolist())
    for f in folds:
        parts = [set(f[k].tolist()) for k in ("train_idx", "val_idx", "test_idx")]
        assert sum(map(len, parts)) == 349 and not (parts[0] & parts[1] or parts[0] & parts[2]
                                                     or parts[1] & parts[2])
    again = kfold_splits(349)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(folds, again) for k in a)
    assert not np.array_equal(folds[0]["test_idx"], kfold_splits(349, seed=1)[0]["test_idx"])
    small, smaller = subsample_train(folds[0], 50), subsample_train(folds[0], 25)
    assert set(smaller["train_idx"]) < set(small["train_idx"]) < set(folds[0]["train_idx"])
    assert np.array_equal(small["test_idx"], folds[0]["test_idx"])
    path = write_split_file(folds[0], tmp_path / "fold0.npz")
    write_split_file(folds[0], path)  # same indices: kept
    with pytest.raises(ValueError, match="other indices"):
        write_split_file(folds[1], path)


def test_freesolv_calc_label_is_the_papers_file():
    import pandas as pd

    table = read_freesolv_table(ROOT / "data" / "freesolv" / "database.txt")
    paper = pd.read_csv(ROOT / "data" / "freesolv" / "kirschbaum_freesolv.csv.gz").set_index("mobley_id")
    assert np.allclose(table.loc[paper.index, "calc"], paper["hfe"], atol=1e-9)
    assert np.abs(table["calc"] - table["expt"]).mean() > 0.5   # two different labels


def test_v1_statistics_use_the_training_fold_only(tmp_path):
    table = read_freesolv_table(ROOT / "data" / "freesolv" / "database.txt")
    cheap, y = table["calc"].to_numpy(), table["expt"].to_numpy()   # real labels, 642 molecules
    fold = kfold_splits(len(y))[0]
    model = tmp_path / "state.pt"
    torch.save({"postprocessors.1.mean": torch.tensor(-5.0, dtype=torch.float64),
                "postprocessors.1.stddev": torch.tensor(2.0, dtype=torch.float64)}, model)
    stats = v1_statistics(model, cheap, y, fold["train_idx"])
    slope, intercept = fit_linear_calibration(cheap[fold["train_idx"]], y[fold["train_idx"]])
    assert stats["label_mean"] == pytest.approx(slope * -5.0 + intercept)
    assert stats["label_stddev"] == pytest.approx(slope * 2.0)
    leaked = y.copy()
    leaked[fold["test_idx"]] += 100.0        # test and validation labels do not matter
    leaked[fold["val_idx"]] -= 50.0
    assert v1_statistics(model, cheap, leaked, fold["train_idx"]) == stats
    moved = y.copy()
    moved[fold["train_idx"][:20]] += 5.0
    assert v1_statistics(model, cheap, moved, fold["train_idx"])["label_mean"] != stats["label_mean"]


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper")
    dbs = work / "dbs"
    convert_freesolv(ROOT / "data" / "freesolv", dbs / "freesolv.db", limit=30, label="calc")
    label_target(dbs / "freesolv.db", dbs / "freesolv_xtb.db", n_workers=2, processes=False,
                 progress=False)
    with_cheap_labels(dbs / "freesolv.db", dbs / "freesolv_xtb.db", dbs / "freesolv_with_xtb.db",
                      {PROP: f"xtb_{PROP}"})
    # 20 QM9 molecules and 3 of the target's own molecules, which pre-training must leave out
    items = from_smiles_table(ROOT / "data" / "qm9" / "qm9_small_sample.csv.gz", id_column="mol_id")[:20]
    table = read_freesolv_table(ROOT / "data" / "freesolv" / "database.txt")
    items += [MoleculeInput(index=10_000 + i, name=name, smiles=row.smiles)
              for i, (name, row) in enumerate(table.iloc[:3].iterrows())]
    label_molecules(items, str(dbs / "qm9.db"), XtbSettings(), n_workers=2, processes=False,
                    progress=False)
    run = Protocol("freesolv", work, work / "cells", epochs=1, pretrain_epochs=1, k=3,
                   overrides=TINY)
    model = run.pretrain("qm9", dbs / "qm9.db")
    cells = {m: run.run_painn(m, 0, None, ("qm9", model))
             for m in ("painn_finetune_v1", "painn_delta_finetune")}
    cells.update(run.run_baselines(0))
    cells.update(run.run_zero_shot(0, ("qm9", model)))
    return {"run": run, "cells": cells, "model": model, "work": work}


def test_every_method_uses_the_same_fold(protocol):
    cells, run = protocol["cells"], protocol["run"]
    assert set(cells) == {"painn_finetune_v1", "painn_delta_finetune", "painn_pretrained_v1",
                          "painn_pretrained_v2", *BASELINES}
    fold = run.folds[0]
    for name, cell in cells.items():
        assert cell["test_idx"] == fold["test_idx"].tolist(), name
        assert (cell["n_train"], cell["n_val"]) == (len(fold["train_idx"]), len(fold["val_idx"]))
        assert np.allclose(cell["y_true"], run.y[fold["test_idx"]])
    for name in ("painn_finetune_v1", "painn_delta_finetune"):
        config = OmegaConf.load(protocol["work"] / "train" / f"freesolv_{name}@qm9_fold0_nall" /
                                "config.yaml")
        used = np.load(config.data.split_file)
        assert all(np.array_equal(used[k], fold[k]) for k in fold), name


def test_a_finished_pretraining_of_another_budget_or_set_is_refused(protocol):
    run, dbs = protocol["run"], protocol["work"] / "dbs"
    assert run.pretrain("qm9", dbs / "qm9.db") == protocol["model"]          # same budget and set: reused
    for epochs, db in ((run.pretrain_epochs + 1, dbs / "qm9.db"), (run.pretrain_epochs, dbs / "freesolv.db")):
        other = Protocol("freesolv", protocol["work"], protocol["work"] / "cells", epochs=1, pretrain_epochs=epochs,
                         k=3, overrides=TINY)
        with pytest.raises(ValueError, match="is a pre-training of"):
            other.pretrain("qm9", db)


def test_no_target_molecule_in_pretraining(protocol):
    work = protocol["work"]
    target = set(inchikeys(work / "dbs" / "freesolv.db"))
    keys = inchikeys(work / "dbs" / "qm9.db")
    assert len(keys) == 23 and len(set(keys) & target) == 3      # the planted target molecules
    record = json.loads((work / "train" / f"pretrain_qm9_{PROP}.json").read_text())
    assert record["overlap_with_target"] == 3 and record["n_train"] + record["n_val"] == 20
    used = np.load(record["split"])
    rows = np.concatenate([used["train_idx"], used["val_idx"]])
    assert len(set(rows.tolist())) == 20 and not {keys[i] for i in rows} & target
    config = OmegaConf.load(work / "train" / f"pretrain_qm9_{PROP}" / "config.yaml")
    assert config.data.split_file == record["split"]   # the run used this split


def test_pretrained_cells_record_their_pretraining_set(protocol):
    cells = protocol["cells"]
    for name in ("painn_finetune_v1", "painn_delta_finetune", "painn_pretrained_v1", "painn_pretrained_v2"):
        info = cells[name]["details"]["pretraining"]
        # 23 molecules in the set, the 3 target molecules left out; no cut rule: a random draw
        assert (info["name"], info["molecules"], info["selection"], info["epochs"]) == ("qm9", 20, "random", 1)
    assert not any("pretraining" in cells[m]["details"] for m in BASELINES)


def test_v1_finetuning_normalizer_holds_the_mapped_statistics(protocol):
    run, cell = protocol["run"], protocol["cells"]["painn_finetune_v1"]
    details = cell["details"]
    best = torch.load(protocol["work"] / "train" / "freesolv_painn_finetune_v1@qm9_fold0_nall" /
                      "best_model", map_location="cpu", weights_only=False)
    norm = best.postprocessors[1]
    assert float(norm.mean) == pytest.approx(details["label_mean"])
    assert float(norm.stddev) == pytest.approx(details["label_stddev"])
    train = run.folds[0]["train_idx"]
    slope, intercept = fit_linear_calibration(run.cheap[train], run.y[train])
    assert details["slope"] == pytest.approx(slope) and details["intercept"] == pytest.approx(intercept)


def test_delta_model_adds_the_calibrated_baseline_back(protocol):
    run, work = protocol["run"], protocol["work"]
    model = work / "train" / "freesolv_painn_delta_finetune@qm9_fold0_nall" / "best_model"
    db = work / "dbs" / "freesolv_with_xtb.db"
    fold = run.folds[0]
    extra = [f"xtb_{PROP}"]
    pred, ref = predict(model, db, fold["test_idx"], PROP, trust_pickle=True, extra_properties=extra)
    raw, _ = predict(model, db, fold["test_idx"], PROP, postprocess=False, trust_pickle=True,
                     extra_properties=extra)
    best = torch.load(model, map_location="cpu", weights_only=False)
    norm, residual = best.postprocessors[1], best.postprocessors[2]
    slope, intercept = fit_linear_calibration(run.cheap[fold["train_idx"]], run.y[fold["train_idx"]])
    assert float(residual.slope) == pytest.approx(slope)
    assert float(residual.intercept) == pytest.approx(intercept)
    baseline = slope * run.cheap[fold["test_idx"]] + intercept
    assert np.allclose(pred, baseline + raw * float(norm.stddev) + float(norm.mean), atol=1e-4)
    assert np.allclose(protocol["cells"]["painn_delta_finetune"]["y_pred"], pred, atol=1e-6)
    # the normalizer was fitted on training residuals, not on the target itself
    resid = run.y[fold["train_idx"]] - (slope * run.cheap[fold["train_idx"]] + intercept)
    assert float(norm.stddev) == pytest.approx(resid.std(), rel=1e-5)
    assert np.allclose(ref, run.y[fold["test_idx"]])


def test_cli_folds_writes_the_protocols_split_files(protocol, tmp_path, capsys):
    from schnet_transfer.cli import main

    db = protocol["work"] / "dbs" / "freesolv.db"
    assert main(["folds", str(db), str(tmp_path / "folds"), "--k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == [[10, 10, 10]] * 3
    for path, fold in zip(out["splits"], protocol["run"].folds):
        written = np.load(path)
        assert all(np.array_equal(written[k], fold[k]) for k in fold)
    assert main(["folds", str(tmp_path / "none.db"), str(tmp_path / "f")]) == 2
    assert "no such database" in capsys.readouterr().err


def test_zero_shot_cells_map_the_pretrained_output(protocol):
    run, model, cells = protocol["run"], protocol["model"], protocol["cells"]
    fold = run.folds[0]
    z, _ = predict(model, run.db, fold["test_idx"], PROP, postprocess=False, trust_pickle=True)
    stats = v1_statistics(model, run.cheap, run.y, fold["train_idx"])
    v1 = z * stats["label_stddev"] + stats["label_mean"]
    assert np.allclose(cells["painn_pretrained_v1"]["y_pred"], v1)
    train = run.y[fold["train_idx"]]
    assert np.allclose(cells["painn_pretrained_v2"]["y_pred"], z * train.std() + train.mean())
    cheap_z = (run.cheap[fold["test_idx"]] - stats["pretrain_mean"]) / stats["pretrain_stddev"]
    assert cells["painn_pretrained_v1"]["details"]["cheap_z_mean"] == pytest.approx(cheap_z.mean())
