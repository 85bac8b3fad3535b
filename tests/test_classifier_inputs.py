"""benchmarks/classifier_inputs.py: each condition replaces the block it names, and 'intact' is the honest protocol."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import classifier_inputs  # noqa: E402
from fewshot_table import eval_seeds  # noqa: E402

from deepchem_pintuning.model import PinTuningModel  # noqa: E402

TINY = dict(emb_dim=16, num_layer=2, adapter_dim=4, context_edge_hidden=8, n_shot=5, encoder="gcn_scratch")


def test_each_condition_replaces_only_the_block_it_names():
    blocks = [torch.full((6, 3), float(i)) + torch.arange(6.0)[:, None] for i in range(4)]
    features = torch.cat(blocks, dim=1)          # [frozen, molecule context, property context, adapted]
    parts = lambda f: [f[:, 3 * i:3 * i + 3] for i in range(4)]   # noqa: E731
    frozen, context, prop, adapted = parts(classifier_inputs.CONDITIONS["adapted -> frozen"](features))
    assert torch.equal(adapted, blocks[0]) and torch.equal(frozen, blocks[0]) and torch.equal(context, blocks[1])
    frozen, context, prop, adapted = parts(classifier_inputs.CONDITIONS["molecule_context -> mean"](features))
    assert torch.equal(context, torch.full((6, 3), 1 + 2.5)) and torch.equal(adapted, blocks[3])
    frozen, context, prop, adapted = parts(classifier_inputs.CONDITIONS["structure blocks -> mean"](features))
    assert torch.equal(frozen, torch.full((6, 3), 2.5)) and torch.equal(adapted, torch.full((6, 3), 3 + 2.5))
    assert torch.equal(context, blocks[1]) and torch.equal(prop, blocks[2])
    assert torch.equal(classifier_inputs.CONDITIONS["intact"](features), features)


@pytest.fixture(scope="module")
def trained(cld, tmp_path_factory):
    folder = tmp_path_factory.mktemp("meta_trained") / "toxcast-CLD-5shot-gcn_scratch-1steps-seed0"
    model = PinTuningModel.for_dataset(cld, seed=0, model_dir=str(folder), **TINY)
    model.fit(cld, steps=1, progress=False)
    return folder, model


def test_a_classifier_that_reads_only_the_molecule_context_ignores_the_structure_conditions(cld, trained):
    _, model = trained
    weight, inner_lr = model.model.classifier[0].weight, model.config.inner_lr
    model.config.inner_lr = 0.0                  # the adaptation step would give the zeroed columns weight again
    with torch.no_grad():
        saved = weight.clone()
        keep = torch.zeros_like(weight)
        keep[:, 16:32] = 1.0                     # the molecule context block (emb_dim 16)
        weight.mul_(keep)
    try:
        scores = classifier_inputs.scores_by_condition(model, cld, cld.test_tasks[0], eval_seeds(0, 1)[0])
    finally:
        model.config.inner_lr = inner_lr
        with torch.no_grad():
            weight.copy_(saved)
    for condition in ("adapted -> frozen", "adapted -> mean", "frozen -> mean", "structure blocks -> mean"):
        np.testing.assert_allclose(scores[condition], scores["intact"], atol=1e-6)
    assert np.abs(scores["molecule_context -> mean"] - scores["intact"]).max() > 1e-3


def test_intact_is_the_honest_protocol_and_each_checkpoint_is_one_resumable_cell(cld, trained, tmp_path):
    folder, model = trained
    seeds = eval_seeds(0, 2)
    honest = [model.evaluate_fewshot(cld, seed=s)["roc_auc"] for s in seeds]
    (tmp_path / "fewshot_table").mkdir()
    (tmp_path / "fewshot_table" / "toxcast-CLD-5shot-pintuning-1steps-seed0.json").write_text(
        json.dumps({"eval_seeds": seeds, "honest": honest}))
    argv = ["--checkpoint-dir", str(folder.parent), "--results", str(tmp_path), "--datasets", "toxcast-CLD",
            "--cell-dir", str(tmp_path / "cells"), "--out", str(tmp_path / "out.json"), "--draws", "2"]
    assert classifier_inputs.main(argv) == 0
    cell, = json.loads((tmp_path / "out.json").read_text())["cells"]
    assert cell["eval_seeds"] == seeds and cell["intact_vs_cell"] < 1e-4
    assert set(cell["roc_auc"]) == set(classifier_inputs.CONDITIONS)
    assert all(len(values) == 2 for values in cell["roc_auc"].values())
    assert all(len(values) == 2 and all(v > 0 for v in values) for values in cell["adapted_block"].values())
    table = (tmp_path / "out.md").read_text()
    assert "| toxcast-CLD | 5 | 1 | 1 | 2 | molecule_context -> mean |" in table
    spread = np.mean(cell["adapted_block"]["spread"])
    assert f"| {spread:.3f} ({spread:.3f} to {spread:.3f}) |" in table
    assert (tmp_path / "out.png").stat().st_size > 1000
    (tmp_path / "cells" / f"{folder.name}.json").write_text(json.dumps({**cell, "wall_seconds": -1.0}))
    classifier_inputs.main(argv)                 # a finished cell is not recomputed
    assert json.loads((tmp_path / "out.json").read_text())["cells"][0]["wall_seconds"] == -1.0


def test_the_adapted_block_is_measured_in_units_of_the_frozen_spread():
    frozen = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
    for scale in (0.0, 0.5, 2.0):
        units = classifier_inputs.spread_units(frozen + scale * (frozen - frozen.mean(0)), frozen)
        assert units["from_frozen"] == pytest.approx(scale) and units["spread"] == pytest.approx(1 + scale)
    units = classifier_inputs.spread_units(frozen.mean(0).expand(3, 2) + 7.0, frozen)   # one vector for all
    assert units["spread"] == pytest.approx(0.0, abs=1e-6) and units["from_frozen"] > 1.0
