"""Inductive (per-molecule) scoring: same numbers as the reference network, deterministic, library-independent."""
import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call

from deepchem_pintuning import batched_context
from deepchem_pintuning.batched_network import ParamView
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.context_graph import label_edges
from deepchem_pintuning.episode_batch import LabelGraph, dense_label_graph
from deepchem_pintuning.episodes import evaluation_episode
from deepchem_pintuning.inductive import adapt_to_support, score_molecules
from deepchem_pintuning.inductive_context import SupportContext, molecule_context
from deepchem_pintuning.meta_training import inner_adapt
from deepchem_pintuning.model import PinTuningModel
from deepchem_pintuning.pintuning import EpisodeInputs

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder_dropout=0.0,
            context_dropout=0.0, n_shot=5, inner_lr=0.1, meta_lr=3e-3)


@pytest.fixture(scope="module")
def trained(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, encoder="gcn_scratch", **TINY)
    model.fit(cld, steps=2, seed=0, progress=False)
    return model


def _support(cld, episode):
    labels = np.full((len(episode.support), 1 + len(episode.aux_task_indices)), np.nan)
    labels[:, 0] = episode.support_labels
    return [cld.graphs[i] for i in episode.support], labels


def _inputs(model, graphs, labels, task, aux, n_query):
    """Reference context graph: support + ``n_query`` molecules, no auxiliary labels anywhere."""
    net = model.model
    net.frozen_encoder.eval()
    batch = collate_graphs(graphs)
    with torch.no_grad():
        frozen = net.frozen_encoder.embed(batch)
    support_labels = torch.as_tensor(labels, dtype=torch.float32)
    query_aux = torch.full((n_query, labels.shape[1] - 1), float("nan"))
    return EpisodeInputs(graphs=batch, frozen=frozen, property_ids=torch.as_tensor([task, *aux]),
                         label_edges=label_edges(support_labels, query_aux, net.config.query_aux_offset),
                         n_support=len(labels), support_labels=support_labels[:, 0])


@pytest.mark.parametrize("mode, pair_block_elements", [("train", None), ("train", 1), ("eval", None)])
def test_inductive_scores_equal_the_reference_network(cld, trained, mode, pair_block_elements, monkeypatch):
    """``pair_block_elements=1``: the similarity pairs of one molecule at a time."""
    if pair_block_elements is not None:
        monkeypatch.setattr(batched_context, "PAIR_BLOCK_ELEMENTS", pair_block_elements)
    net = trained.model
    episode = evaluation_episode(cld, cld.test_tasks[0], n_shot=5, seed=0)
    graphs, labels = _support(cld, episode)
    task, aux = episode.task_index, list(episode.aux_task_indices)
    adapted = adapt_to_support(net, graphs, labels, task, aux, seed=0, mode=mode)

    reference = copy.deepcopy(net).train(mode == "train")
    fast = inner_adapt(reference, _inputs(trained, graphs, labels, task, aux, 0), reference.trainable_parameters(),
                       trained.config.inner_lr, trained.config.inner_steps, create_graph=False)
    for name, value in fast.items():
        assert torch.allclose(adapted.fast[name], value, atol=1e-5), name

    queries = list(episode.query[:6])
    scores = score_molecules(net, adapted, [cld.graphs[i] for i in queries], batch_size=4)
    reference = copy.deepcopy(net).eval()   # the reference adaptation moved its copy's BatchNorm statistics
    with torch.no_grad():
        for molecule, score in zip(queries, scores):
            inputs = _inputs(trained, graphs + [cld.graphs[molecule]], labels, task, aux, 1)
            logits, _ = functional_call(reference, {k: v.detach() for k, v in fast.items()}, (inputs,))
            assert score == pytest.approx(float(torch.sigmoid(logits[-1])), abs=1e-5)


def test_scores_are_deterministic_and_independent_of_the_library(cld, trained):
    smiles = [cld.smiles[i] for i in range(40)]
    episode = evaluation_episode(cld, cld.test_tasks[1], n_shot=5, seed=0)
    support = [cld.smiles[i] for i in episode.support]
    buffers = {n: b.clone() for n, b in trained.model.named_buffers()}
    first = trained.predict_smiles(support, episode.support_labels, smiles, seed=3)
    assert np.array_equal(first, trained.predict_smiles(support, episode.support_labels, smiles, seed=3))
    order = np.random.default_rng(0).permutation(len(smiles))
    shuffled = trained.predict_smiles(support, episode.support_labels, [smiles[i] for i in order], seed=3)
    assert np.allclose(shuffled, first[order], atol=1e-6, rtol=0)
    twice = trained.predict_smiles(support, episode.support_labels, [smiles[5]] * 3 + smiles[:2], seed=3)
    assert twice[0] == twice[1] == twice[2] and twice[0] == pytest.approx(first[5], abs=1e-6)
    alone = trained.predict_smiles(support, episode.support_labels, [smiles[7]], seed=3)
    assert alone[0] == pytest.approx(first[7], abs=1e-6)
    assert all(torch.equal(buffers[n], b) for n, b in trained.model.named_buffers())   # the model is untouched


def test_given_frozen_vectors_are_those_computed_per_chunk(cld, trained):
    """The deployment protocol passes the dataset's cached frozen-encoder vectors: same scores as computing them."""
    net = trained.model
    episode = evaluation_episode(cld, cld.test_tasks[0], n_shot=5, seed=0)
    graphs, labels = _support(cld, episode)
    adapted = adapt_to_support(net, graphs, labels, episode.task_index, list(episode.aux_task_indices), seed=0)
    queries = [cld.graphs[i] for i in episode.query[:40]]
    computed = score_molecules(net, adapted, queries, batch_size=16)
    cached = trained._frozen(cld)[episode.query[:40]]
    np.testing.assert_allclose(score_molecules(net, adapted, queries, batch_size=16, frozen=cached), computed, atol=1e-6)
    shifted = score_molecules(net, adapted, queries, batch_size=16, frozen=cached.roll(1, dims=0))
    assert np.abs(shifted - computed).max() > 1e-3                     # the given vectors are the ones used


def test_eval_mode_adaptation_has_no_randomness(cld, trained):
    episode = evaluation_episode(cld, cld.test_tasks[0], n_shot=5, seed=0)
    graphs, labels = _support(cld, episode)
    task, aux = episode.task_index, list(episode.aux_task_indices)
    net = copy.deepcopy(trained.model)   # the fixture has no dropout: switch it on everywhere
    for module in net.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.5
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.5
    runs = {(mode, seed): adapt_to_support(net, graphs, labels, task, aux, seed=seed, mode=mode).fast
            for mode in ("train", "eval") for seed in (0, 1)}
    same = {mode: all(torch.equal(runs[mode, 0][n], runs[mode, 1][n]) for n in runs[mode, 0]) for mode in ("train", "eval")}
    assert same == {"train": False, "eval": True}
    with pytest.raises(ValueError, match="adaptation mode"):
        adapt_to_support(net, graphs, labels, task, aux, mode="test")


def test_deployment_protocol_hides_auxiliary_labels(cld, trained):
    deployment = trained.evaluate_fewshot(cld, seed=0, tasks=cld.test_tasks[:2], protocol="deployment")
    again = trained.evaluate_fewshot(cld, seed=0, tasks=cld.test_tasks[:2], protocol="deployment")
    assert deployment["per_task"] == again["per_task"]                 # deterministic
    assert set(deployment["per_task"]) == set(cld.test_tasks[:2])
    assert all(0 <= s["roc_auc"] <= 1 for s in deployment["per_task"].values())
    with pytest.raises(ValueError, match="protocol"):
        trained.evaluate_fewshot(cld, protocol="transductive")


@pytest.mark.parametrize("layers, top_k, query_aux", [(1, None, False), (2, None, False), (2, 2, True),
                                                      (3, None, True)])
def test_molecule_context_equals_the_batched_context_graph(cld, layers, top_k, query_aux):
    """The shortcuts of inductive_context (first layer computed once, last layer for two nodes only)
    against context_forward on the full ``support + molecule`` graphs, in float64."""
    model = PinTuningModel.for_dataset(cld, seed=1, encoder="gcn_scratch", context_num_layers=layers, top_k=top_k,
                                       **{**TINY, "context_dropout": 0.1})
    net = model.model.double().eval()
    for norm in net.context.norms:   # running statistics that are not the identity
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    rng = torch.Generator().manual_seed(0)
    n_props, n_support, n_mols, dim = 4, 6, 5, TINY["emb_dim"]
    support_labels = torch.randint(0, 2, (n_support, n_props), generator=rng).double()
    support_labels[torch.rand(n_support, n_props, generator=rng) < 0.3] = float("nan")
    aux = torch.randint(0, 2, (n_props - 1,), generator=rng).double() if query_aux else \
        torch.full((n_props - 1,), float("nan"), dtype=torch.float64)
    prop_x = torch.randn(n_props, dim, generator=rng, dtype=torch.float64)
    support_x = torch.randn(n_support, dim, generator=rng, dtype=torch.float64)
    molecules = torch.randn(n_mols, dim, generator=rng, dtype=torch.float64)
    params = ParamView(net, {})
    labels = dense_label_graph(support_labels[None], aux.view(1, 1, -1))
    with torch.no_grad():
        shared = SupportContext.build(net.context, params, "context.", prop_x, support_x, labels)
        prop_context, mol_context = molecule_context(net.context, params, "context.", shared, molecules)
        full = batched_context.context_forward(
            net.context, params, "context.", prop_x.expand(n_mols, -1, -1),
            torch.cat([support_x.expand(n_mols, -1, -1), molecules.unsqueeze(1)], dim=1),
            LabelGraph(*(t.expand(n_mols, *t.shape[1:]) for t in (labels.adjacency, labels.type_counts,
                                                                  labels.in_degree))), None)
    assert torch.allclose(prop_context, full[:, 0], atol=1e-10)
    assert torch.allclose(mol_context, full[:, -1], atol=1e-10)
    with pytest.raises(ValueError, match="eval"):
        molecule_context(net.context.train(), params, "context.", shared, molecules)
