"""Pre-train then fine-tune through the real ``spktrain`` CLI on tiny real databases.

Runs from a temporary working directory with no config path flags, so it also
checks that the Hydra search-path plugin finds the extension's configs.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from schnetpack.data import ASEAtomsData

from schnet_transfer.datasets import convert_hopv
from schnet_transfer.evaluate import predict
from schnet_transfer.labelling import label_molecules
from schnet_transfer.pretraining_set import from_smiles_table
from schnet_transfer.xtb_labels import XtbSettings

ROOT = Path(__file__).resolve().parents[1]
SPKTRAIN = str(Path(sys.executable).parent / "spktrain")
TINY = ["trainer.max_epochs=2", "model.representation.n_atom_basis=8",
        "model.representation.n_interactions=2", "model.representation.radial_basis.n_rbf=8",
        "data.batch_size=8", "logger=csv", "seed=3"]
LR = 5e-4


def _spktrain(cwd, env, *overrides):
    done = subprocess.run([SPKTRAIN, *overrides, *TINY], cwd=cwd, env={**env, "PWD": str(cwd)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("spk")
    dbs = work / "dbs"
    items = from_smiles_table(ROOT / "data" / "qm9" / "qm9_small_sample.csv.gz",
                              id_column="mol_id")[:24]
    label_molecules(items, str(dbs / "qm9_xtb.db"), XtbSettings(), n_workers=2,
                    processes=False, progress=False)
    convert_hopv(ROOT / "data" / "hopv", dbs / "hopv.db", limit=30)
    env = {**os.environ, "SCHNET_TRANSFER_DATA": str(dbs)}
    cwd = work / "elsewhere"
    cwd.mkdir()
    pre_log = _spktrain(cwd, env, "experiment=pretrain_xtb")
    ft_log = _spktrain(cwd, env, "experiment=finetune_hopv", "task=finetune_discriminative",
                       "task.freeze_embedding=true", "run.id=finetune")
    return {"runs": cwd / "runs", "dbs": dbs, "pre_log": pre_log, "ft_log": ft_log}


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False).state_dict()


def test_finetuned_model_starts_from_pretrained_weights(runs):
    pre = _state(runs["runs"] / "pretrain_xtb_gap" / "best_model")
    ft = _state(runs["runs"] / "finetune" / "best_model")
    assert "loaded" in runs["ft_log"] and "pre-trained tensors" in runs["ft_log"]
    # frozen embedding: bit-identical to the pre-trained one (a fresh init would differ)
    for key in ("representation.embedding.weight", "representation.filter_net.weight"):
        assert torch.equal(ft[key], pre[key]), key
    # trained levels moved away from the checkpoint
    for prefix in ("output_modules.", "representation.interactions.1.", "representation.mixing.0."):
        changed = [k for k in ft if k.startswith(prefix) and not torch.equal(ft[k], pre[k])]
        assert changed, f"no parameter under {prefix} changed"


def test_layerwise_learning_rates_follow_the_schedule(runs):
    ckpt = torch.load(runs["runs"] / "finetune" / "checkpoints" / "last.ckpt",
                      map_location="cpu", weights_only=False)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in groups}
    # head lr, then halved per level; embedding frozen, so not optimised at all
    assert lrs == pytest.approx({"head": LR, "interaction_1": LR / 2, "interaction_0": LR / 4})
    task = torch.load(runs["runs"] / "finetune" / "best_model.task", map_location="cpu",
                      weights_only=False)
    assert not task.model.representation.embedding.weight.requires_grad


def test_finetuned_model_predicts_in_target_units(runs):
    run = runs["runs"] / "finetune"
    norm = torch.load(run / "best_model", weights_only=False).postprocessors[-1]
    pre_norm = torch.load(runs["runs"] / "pretrain_xtb_gap" / "best_model",
                          weights_only=False).postprocessors[-1]
    data = ASEAtomsData(str(runs["dbs"] / "hopv.db"))
    gaps = np.array([float(data[i]["gap"][0]) for i in range(len(data))])
    split = np.load(run / "split.npz")
    train = gaps[split["train_idx"]]
    # target statistics of the HOPV training split, not those of the xTB pre-training set
    assert float(norm.mean) == pytest.approx(train.mean(), abs=1e-9)
    assert float(norm.stddev) == pytest.approx(train.std(), abs=1e-9)
    assert float(pre_norm.mean) != pytest.approx(float(norm.mean), abs=1e-3)
    pred, ref = predict(run / "best_model", runs["dbs"] / "hopv.db", split["test_idx"], "gap", trust_pickle=True)
    raw, _ = predict(run / "best_model", runs["dbs"] / "hopv.db", split["test_idx"], "gap",
                     postprocess=False, trust_pickle=True)
    assert np.allclose(pred, raw * float(norm.stddev) + float(norm.mean), atol=1e-5)
    assert np.all((pred > 0.5) & (pred < 8.0))  # eV, not z-scores

