"""Baselines run on the same fixed episodes as Pin-Tuning and learn something on real data."""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call

from deepchem_pintuning.baselines import BASELINES, _maml, _meta_train_maml, evaluate_baseline, evaluate_baseline_draws
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.encoder import build_encoder
from deepchem_pintuning.episode_batch import PackedGraphs
from deepchem_pintuning.episodes import evaluation_episodes


@pytest.mark.parametrize("method, options", [
    ("frozen", {}), ("finetune", {"finetune_steps": 5}), ("protonet", {"meta_steps": 5}), ("maml", {"meta_steps": 1, "meta_batch_size": 2}),
])
def test_baseline_scores_every_test_property(cld, method, options):
    scores = evaluate_baseline(method, cld, n_shot=5, seed=0, **options)
    assert set(scores["per_task"]) == set(cld.test_tasks)
    assert all(0.0 <= s["roc_auc"] <= 1.0 for s in scores["per_task"].values())
    assert scores["trainable_parameters"] > 0


def test_frozen_pretrained_encoder_beats_chance_on_tox21(tox21):
    scores = [evaluate_baseline("frozen", tox21, n_shot=10, seed=s)["roc_auc"] for s in (0, 1)]
    assert min(scores) > 0.6, scores


def test_unknown_baseline():
    with pytest.raises(ValueError, match="frozen"):
        evaluate_baseline("knn", None)
    assert BASELINES == ("frozen", "finetune", "protonet", "maml", "ecfp_rf", "ecfp_aux_rf")


def test_auxiliary_labels_are_what_the_aux_forest_adds(cld):
    """Same forest, same supports: the auxiliary labels (Pin-Tuning's extra information) change the scores."""
    plain = evaluate_baseline("ecfp_rf", cld, n_shot=5, seed=0)
    with_aux = evaluate_baseline("ecfp_aux_rf", cld, n_shot=5, seed=0)
    assert set(plain["per_task"]) == set(with_aux["per_task"]) == set(cld.test_tasks)
    assert plain["per_task"] != with_aux["per_task"] and plain["trainable_parameters"] == 0


@pytest.mark.parametrize("method, options", [
    ("frozen", {}), ("finetune", {"finetune_steps": 3}), ("protonet", {"meta_steps": 3}), ("ecfp_aux_rf", {}),
])
def test_draws_prepared_once_equal_draws_prepared_anew(cld, method, options):
    """The fast path (one preparation, several support draws) against its oracle (one call per draw)."""
    draws = evaluate_baseline_draws(method, cld, 5, 0, eval_seeds=[3, 4], **options)
    oracle = [evaluate_baseline(method, cld, n_shot=5, seed=0, eval_seed=e, **options) for e in (3, 4)]
    assert draws == oracle
    assert draws[0]["per_task"] != draws[1]["per_task"]


def test_maml_scores_are_the_adapted_learner_scores(cld):
    """MAML's test-time scoring (an adapted copy on the fast embedding path) against ``functional_call`` of the
    meta-learner with its one-step fast weights on a PyG batch (the oracle)."""
    learner = _meta_train_maml(build_encoder(), cld, 5, 0, meta_steps=1, meta_batch_size=2)
    episode = evaluation_episodes(cld, 5, 0)[0]
    # the adaptation step runs in train mode: same dropout draws and BatchNorm statistics for both paths
    weights, random_state = copy.deepcopy(learner.model.state_dict()), torch.get_rng_state()
    scores = _maml(learner, cld, episode, PackedGraphs(cld.graphs))
    learner.model.load_state_dict(weights)
    torch.set_rng_state(random_state)
    support = collate_graphs([cld.graphs[i] for i in episode.support])
    loss, _ = learner.compute_model([support, torch.as_tensor(episode.support_labels)], learner.variables, True)
    fast = [v - learner.inner_lr * g for v, g in zip(learner.variables, torch.autograd.grad(loss, learner.variables))]
    learner.model.eval()
    with torch.no_grad():
        logits = functional_call(learner.model, dict(zip(learner.names, fast)),
                                 (collate_graphs([cld.graphs[i] for i in episode.query]),))
    assert scores.shape == (len(episode.query),)
    np.testing.assert_allclose(scores, torch.sigmoid(logits).numpy(), atol=1e-5)


def test_speed_benchmark_compares_both_paths_and_reports_agreement(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import baseline_speed
    out = tmp_path / "speed.json"
    baseline_speed.main(["--dataset", "toxcast-CLD", "--shots", "5", "--draws", "2", "--rounds", "1",
                         "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"frozen", "protonet"}
    assert all(row["equal"] and len(row["per_draw_seconds"]) == 1 for row in result["methods"].values())
    rows = [line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| frozen")]
    assert len(rows) == 1 and rows[0].endswith("| True |")
    embedding = result["embedding"]
    assert len(embedding["pyg_seconds"]) == len(embedding["fast_seconds"]) == 1
    assert 0 <= embedding["max_abs_difference"] < 1e-4
    assert "| embed_molecules (s) |" in out.with_suffix(".md").read_text()
