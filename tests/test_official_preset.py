"""protocol="official" behaves like the official code: shuffled auxiliary order, kekulized molecules,
class-sorted evaluation chunks; and the published protocol's fresh supports per evaluation + best-of."""
import numpy as np
import pytest
import torch

from deepchem_pintuning.data import load_fewshot
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episode
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
from deepchem_pintuning.meta_training import episode_inputs, preserved_buffers
from deepchem_pintuning.fewshot_evaluation import best_of_evaluations
from deepchem_pintuning.model import PinTuningModel
from deepchem_pintuning.pintuning import PinTuningConfig

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder_dropout=0.0,
            context_dropout=0.0, n_shot=5, inner_lr=0.1, meta_lr=3e-3, encoder="gcn_scratch")


@pytest.fixture(scope="module")
def cld_kekulized():
    return load_fewshot("toxcast-CLD", featurizer=PretrainGNNFeaturizer(kekulize=True))


def test_official_preset_switches_the_official_behaviours():
    official, paper = PinTuningConfig.official(), PinTuningConfig()
    assert (official.shuffle_aux, official.kekulize, official.eval_query_order, official.separate_bn_batches) == \
        (True, True, "class_sorted", True)
    assert (paper.shuffle_aux, paper.kekulize, paper.eval_query_order, paper.separate_bn_batches) == \
        (False, False, "index", False)


def test_separate_batchnorm_batches_matter_in_train_mode_only(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, **TINY)
    episode = EpisodeSampler(cld, 5, seed=0).sample()
    inputs = episode_inputs(cld, episode)
    net = model.model
    assert len(net.batchnorm_parts(inputs)) == 1
    logits = {}
    for separate in (False, True):
        net.config.separate_bn_batches = separate
        with preserved_buffers(net, True), torch.no_grad():
            logits["eval", separate] = net.eval()(inputs)[0]     # running statistics: batching is irrelevant
            logits["train", separate] = net.train()(inputs)[0]   # batch statistics
    assert len(net.batchnorm_parts(inputs)) == 2
    assert (logits["train", True] - logits["train", False]).abs().max() > 1e-3
    assert torch.allclose(logits["eval", True], logits["eval", False], atol=1e-5)


def test_shuffled_auxiliary_order_per_episode(cld):
    fixed = [tuple(EpisodeSampler(cld, 5, seed=0).sample().aux_task_indices) for _ in range(3)]
    sampler = EpisodeSampler(cld, 5, seed=0, shuffle_aux=True)
    orders = [sampler.sample(cld.train_tasks[0]).aux_task_indices for _ in range(6)]
    assert len({tuple(o) for o in orders}) > 1                           # a fresh order per episode
    assert all(sorted(o) == sorted(orders[0]) for o in orders)            # of the same properties
    again = EpisodeSampler(cld, 5, seed=0, shuffle_aux=True)
    assert all(np.array_equal(o, again.sample(cld.train_tasks[0]).aux_task_indices) for o in orders)  # seeded
    assert len(set(fixed)) >= 1 and all(list(f) == sorted(f) for f in fixed)  # default: dataset order
    task = cld.test_tasks[0]
    plain, shuffled = (evaluation_episode(cld, task, 5, seed=1, shuffle_aux=s) for s in (False, True))
    assert set(plain.support) == set(shuffled.support)                   # same support set either way
    assert sorted(shuffled.aux_task_indices) == list(plain.aux_task_indices) != list(shuffled.aux_task_indices)


@pytest.mark.parametrize("offset,order_matters", [(0, False), (-1, True)])
def test_auxiliary_order_matters_only_through_the_off_by_one_wiring(cld, offset, order_matters):
    model = PinTuningModel.for_dataset(cld, seed=0, query_aux_offset=offset, **TINY)
    scores = {}
    for shuffle in (False, True):
        model.config.shuffle_aux = shuffle
        scores[shuffle] = model.evaluate_fewshot(cld, seed=0, tasks=cld.test_tasks[:2])["roc_auc"]
    assert (abs(scores[True] - scores[False]) > 1e-4) == order_matters, scores


def test_kekulized_data_is_required_by_a_kekulizing_model(cld, cld_kekulized):
    model = PinTuningModel.for_dataset(cld, protocol="official", seed=0, **TINY)
    with pytest.raises(ValueError, match="kekulize=True"):
        model.fit(cld, steps=1, progress=False)
    aromatic = sum(int((g.edge_features[:, 0] == 3).sum()) for g in cld_kekulized.graphs)
    assert cld_kekulized.kekulized and aromatic == 0
    assert sum(int((g.edge_features[:, 0] == 3).sum()) for g in cld.graphs) > 0
    model.fit(cld_kekulized, steps=1, progress=False)
    assert 0 <= model.evaluate_fewshot(cld_kekulized, seed=0, tasks=cld.test_tasks[:1])["roc_auc"] <= 1


def test_class_sorted_evaluation_chunks_change_the_transductive_scores(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, eval_query_chunk=32, **TINY)
    model.fit(cld, steps=1, progress=False)
    per_order = {}
    for order in ("index", "class_sorted"):
        model.config.eval_query_order = order
        per_order[order] = model.evaluate_fewshot(cld, seed=0, tasks=cld.test_tasks[:2])["per_task"]
    assert per_order["index"] != per_order["class_sorted"]


@pytest.mark.parametrize("resample", [False, True])
def test_published_protocol_resamples_supports_and_takes_the_best(cld, resample):
    model = PinTuningModel.for_dataset(cld, seed=0, **TINY)
    model.fit(cld, steps=3, eval_every=1, eval_seed=7, progress=False, resample_eval_support=resample,
              eval_tasks=cld.test_tasks[:2])
    history = model.history
    evaluations = [h for h in history if "eval_roc_auc" in h]
    assert [h["eval_seed"] for h in evaluations] == ([7, 8, 9] if resample else [7, 7, 7])
    supports = {tuple(evaluation_episode(cld, cld.test_tasks[0], 5, h["eval_seed"]).support) for h in evaluations}
    assert len(supports) == (3 if resample else 1)
    best = best_of_evaluations(history)
    assert best["eval_roc_auc"] == max(h["eval_roc_auc"] for h in evaluations)
