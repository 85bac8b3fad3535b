"""Pin-Tuning model: parameter counts, freezing, adapters, Emb-BWC, context graph, training, I/O."""
import numpy as np
import pytest
import torch

import deepchem_pintuning as pt
from deepchem_pintuning.adapters import MPAdapterStack
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.context_graph import ACTIVE, INACTIVE, MISSING, ContextEncoder, label_edges
from deepchem_pintuning.emb_bwc import IMPORTANCES, EmbBWC, estimate_fisher, inner_step_penalty
from deepchem_pintuning.encoder import (CheckpointMismatchError, PretrainedGNN, build_encoder,
                                        load_pretrained_weights)
from deepchem_pintuning.episodes import EpisodeSampler, evaluation_episode
from deepchem_pintuning.meta_training import episode_inputs, meta_loss
from deepchem_pintuning.model import PinTuningModel
from deepchem_pintuning.pintuning import PinTuningConfig

D, D2, L = 300, 50, 5
TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder="gin_scratch",
            encoder_dropout=0.0, context_dropout=0.0, n_shot=5, inner_lr=0.1, meta_lr=3e-3,
            tasks_per_step=3, episodes_per_task=2)


def count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter counts (spec formulas)
def test_gin_encoder_size_matches_pretrain_gnns():
    gin = PretrainedGNN("gin")
    n_atom, n_bond = 120 + 3, 6 + 3
    expected = n_atom * D + L * (n_bond * D + (D * 2 * D + 2 * D) + (2 * D * D + D) + 2 * D)
    assert count(gin) == expected == 1_857_900
    assert sum(p.numel() for p in gin.embedding_tables().values()) == 50_400


def test_adapter_counts_paper_and_official():
    official = MPAdapterStack(L, D, D2, context_layers="first", context_projection="separate")
    layer0 = 3 * (D * D2 + D2) + (3 * D2 * D + D)
    plain = (D * D2 + D2) + (D2 * D + D)
    assert count(official) == layer0 + (L - 1) * plain + L * 2 * D == 214_850
    paper = MPAdapterStack(L, D, D2, context_layers="all", context_projection="dense")
    assert count(paper) == L * ((3 * D * D2 + D2) + (D2 * D + D) + 2 * D) == 304_750
    assert count(MPAdapterStack(L, D, D2, context_layers="none", layer_norm=False)) == L * plain


def test_context_encoder_and_classifier_counts():
    per_layer = (D * 200 + 400 + 200 * 100 + 200 + 100 + 1) + (2 * (D * D + D) + 4 * D + 2 * D)
    assert count(ContextEncoder(D, num_layers=2, top_k=9)) == 2 * per_layer == 526_202
    net = pt.PinTuningModel(n_tasks=12, test_task_ids=[9, 10, 11], encoder="gin_scratch").model
    assert count(net.classifier) == (4 * D * D + D) + 2 * D + (D + 1) == 361_201
    summary = net.parameter_summary()
    assert summary["encoder_frozen_part"] == 1_857_900 - 50_400
    assert summary["trainable"] == 50_400 + 304_750 + 526_202 + 13 * D + 361_201


# ---------------------------------------------------------------- encoder loading
def test_shipped_gcn_checkpoint_loads_and_embeds(tox21):
    gcn = build_encoder("gcn_supervised_contextpred").eval()
    state = torch.load(pt.data.project_data_dir() / "pretrain_gnns" / "gcn_supervised_contextpred.pth",
                       map_location="cpu", weights_only=True)
    assert torch.equal(gcn.x_embedding1.weight, state["x_embedding1.weight"])
    vectors = gcn.embed(collate_graphs(tox21.graphs[:8]))
    assert vectors.shape == (8, D) and torch.isfinite(vectors).all()


def test_user_gin_checkpoint_round_trip(tmp_path, tox21):
    source = PretrainedGNN("gin").eval()
    torch.save(source.state_dict(), tmp_path / "supervised_contextpred.pth")
    loaded = build_encoder("gin_supervised_contextpred", encoder_path=tmp_path / "supervised_contextpred.pth").eval()
    batch = collate_graphs(tox21.graphs[:4])
    assert torch.allclose(source.embed(batch), loaded.embed(batch))


def test_missing_gin_checkpoint_explains_where_to_get_it():
    with pytest.raises(FileNotFoundError, match="pretrain-gnns"):
        build_encoder("gin_supervised_contextpred")


def test_mismatched_checkpoint_lists_keys():
    gcn_file = pt.data.project_data_dir() / "pretrain_gnns" / "gcn_supervised_contextpred.pth"
    with pytest.raises(CheckpointMismatchError, match=r"missing gnns\.0\.mlp\.0\.weight"):
        load_pretrained_weights(PretrainedGNN("gin"), gcn_file)
    with pytest.raises(CheckpointMismatchError, match=r"x_embedding1.weight: checkpoint \(120, 300\) vs model \(120, 64\)"):
        load_pretrained_weights(PretrainedGNN("gcn", emb_dim=64), gcn_file)


# ---------------------------------------------------------------- adapters
def test_adapters_start_near_identity_but_their_layer_norms_do_not(tox21):
    encoder = build_encoder("gcn_supervised_contextpred").eval()
    batch = collate_graphs(tox21.graphs[:16])
    stack = MPAdapterStack(L, D, D2, context_layers="all", layer_norm=False)
    n_atoms = batch.x.size(0)
    context = torch.randn(n_atoms, D)
    with torch.no_grad():
        plain = encoder.embed(batch)
        adapted = encoder.embed(batch, stack.hook(context, context))
        # the paper's LayerNorm after each adapter renormalises the atoms ahead of the frozen BatchNorm
        normalised = encoder.embed(batch, MPAdapterStack(L, D, D2, context_layers="all").hook(context, context))
    relative = (adapted - plain).norm() / plain.norm()
    assert relative < 0.05
    assert (normalised - plain).norm() / plain.norm() > 0.3
    with torch.no_grad():
        for p in stack.parameters():
            p.mul_(100.0)
        far = encoder.embed(batch, stack.hook(context, context))
    assert (far - plain).norm() / plain.norm() > 10 * relative


def test_official_adapters_take_context_only_in_layer_zero():
    stack = MPAdapterStack(3, 8, 2, context_layers="first", context_projection="separate")
    assert stack.uses_context == [True, False, False]
    h = torch.randn(4, 8)
    hook_a, hook_b = stack.hook(torch.zeros(4, 8), torch.zeros(4, 8)), stack.hook(torch.ones(4, 8), torch.ones(4, 8))
    assert not torch.allclose(hook_a(0, h), hook_b(0, h))
    assert torch.allclose(hook_a(1, h), hook_b(1, h))


# ---------------------------------------------------------------- Emb-BWC
@pytest.mark.parametrize("importance", ["identity", "fisher", "embedding_fisher"])
def test_emb_bwc_zero_at_anchor_and_grows(importance):
    torch.manual_seed(0)
    anchor = {"a": torch.randn(6, 4), "b": torch.randn(3, 4)}
    fisher = {k: torch.rand_like(v) + 0.1 for k, v in anchor.items()}
    bwc = EmbBWC(anchor, importance, fisher)
    assert float(bwc(anchor)) == 0.0
    direction = {k: torch.ones_like(v) for k, v in anchor.items()}
    values = [float(bwc({k: anchor[k] + s * direction[k] for k in anchor})) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(0 < a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(4 * values[2], rel=1e-5)  # quadratic


def test_emb_bwc_fisher_formulas():
    anchor = {"a": torch.zeros(2, 3)}
    fisher = {"a": torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])}
    moved = {"a": torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.0, 0.0]])}
    # entries normalised by their mean 7/6, the zeros raised to the floor 0.1
    assert float(EmbBWC(anchor, "fisher", fisher)(moved)) == pytest.approx(0.5 * (6 / 7 + 12 / 7 + 0.1 * 4))
    # embedding-wise: row importances 6 and 1 normalised by their mean 3.5; row sums 0 and 2
    assert float(EmbBWC(anchor, "embedding_fisher", fisher)(moved)) == pytest.approx(0.5 * (1 / 3.5) * 4)
    assert float(inner_step_penalty([anchor["a"]], [moved["a"]])) == pytest.approx(np.sqrt(6))
    with pytest.raises(ValueError, match="Fisher"):
        EmbBWC(anchor, "fisher")


@pytest.fixture(scope="module")
def shipped_fisher(tox21):
    """The Fisher of the shipped GCN on 128 Tox21 molecules, with its encoder."""
    encoder = build_encoder("gcn_supervised_contextpred")
    batches = [collate_graphs(tox21.graphs[i:i + 32]) for i in range(0, 128, 32)]
    return encoder, estimate_fisher(encoder, batches, probe_steps=20)


def test_fisher_penalties_regularise_on_the_identity_scale(shipped_fisher):
    """Raw Fisher penalties were ~1e5x (FIM) and ~400x (EFIM) below IM; normalised, all three agree within 10x."""
    encoder, fisher = shipped_fisher
    zeros = sum(int((f == 0).sum()) for f in fisher.values()) / sum(f.numel() for f in fisher.values())
    assert zeros > 0.5                                                 # most raw importances are exactly zero
    anchors = {n: t.detach() for n, t in encoder.embedding_tables().items()}
    generator = torch.Generator().manual_seed(0)
    direction = {n: torch.randn(t.shape, generator=generator) for n, t in anchors.items()}
    penalties = {}
    for importance in IMPORTANCES:
        bwc = EmbBWC(anchors, importance, fisher)
        penalties[importance] = [float(bwc({n: anchors[n] + s * direction[n] for n in anchors})) for s in (0.01, 0.1)]
        assert penalties[importance][1] > 10 * penalties[importance][0]    # grows with the displacement
    for importance in ("fisher", "embedding_fisher"):
        ratio = penalties[importance][1] / penalties["identity"][1]
        assert 0.1 < ratio < 10, (importance, ratio)


def test_fisher_estimate_is_positive_where_atoms_occur(tox21):
    encoder = PretrainedGNN("gin", num_layer=2, emb_dim=16)
    batches = [collate_graphs(tox21.graphs[i:i + 16]) for i in range(0, 64, 16)]
    fisher = estimate_fisher(encoder, batches, probe_steps=20)
    atom = fisher["x_embedding1.weight"]
    assert set(fisher) == set(encoder.embedding_tables())
    assert atom[5].sum() > 0  # carbon
    assert atom[117].sum() == 0  # oganesson never occurs
    before = encoder.x_embedding1.weight.detach().clone()
    assert torch.equal(before, encoder.x_embedding1.weight)


# ---------------------------------------------------------------- context graph
def test_label_edges_of_toy_episode():
    nan = float("nan")
    support = torch.tensor([[1.0, 0.0, nan], [0.0, 1.0, 1.0]])  # target, aux1, aux2
    query_aux = torch.tensor([[1.0, 0.0]])
    edges = label_edges(support, query_aux)
    pairs = {(int(s), int(d)): int(t) for (s, d), t in zip(edges.edge_index.t().tolist(), edges.edge_type)}
    # nodes: properties 0,1,2; support 3,4; query 5
    assert pairs[(3, 0)] == ACTIVE and pairs[(3, 1)] == INACTIVE and pairs[(3, 2)] == MISSING
    assert pairs[(4, 0)] == INACTIVE and pairs[(4, 1)] == ACTIVE
    assert pairs[(5, 1)] == ACTIVE and pairs[(5, 2)] == INACTIVE and (5, 0) not in pairs
    assert all(pairs[(d, s)] == t for (s, d), t in pairs.items())  # both directions
    assert edges.edge_index.shape[1] == 2 * (2 * 3 + 2)


def test_official_off_by_one_wiring():
    support = torch.ones(2, 3)
    query_aux = torch.tensor([[1.0, 0.0]])
    edges = label_edges(support, query_aux, query_aux_offset=-1)
    pairs = {(int(s), int(d)): int(t) for (s, d), t in zip(edges.edge_index.t().tolist(), edges.edge_type)}
    assert pairs[(5, 0)] == ACTIVE      # aux 1's label lands on the target node
    assert pairs[(5, 1)] == INACTIVE    # aux 2's label lands on aux 1
    assert (5, 2) not in pairs          # the last auxiliary node gets no query edge


def test_similarity_edges_top_k():
    encoder = ContextEncoder(dim=8, top_k=2).eval()
    index, weight = encoder.similarity[0](torch.randn(6, 8), top_k=2)
    assert index.shape == (2, 12) and (index[0] != index[1]).all()
    assert ((weight > 0) & (weight < 1)).all()


# ---------------------------------------------------------------- training
def _tiny_model(data, **overrides):
    return PinTuningModel.for_dataset(data, seed=0, **{**TINY, **overrides})


def test_frozen_parameters_stay_and_tuned_ones_move(tox21):
    model = _tiny_model(tox21)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    model.fit(tox21, steps=1, seed=0, progress=False)
    for name, p in model.model.named_parameters():
        changed = not torch.equal(before[name], p)
        if p.requires_grad:
            assert changed or "property_embedding" in name, name
        else:
            assert not changed, name
    frozen_names = {n for n, p in model.model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("frozen_encoder.") for n in frozen_names)
    assert "encoder.gnns.0.mlp.0.weight" in frozen_names and "encoder.x_embedding1.weight" not in frozen_names


def test_meta_training_lowers_query_loss(tox21):
    model = _tiny_model(tox21)
    held_out = [(0, episode_inputs(tox21, EpisodeSampler(tox21, 5, seed=100 + i).sample(t)))
                for i, t in enumerate(tox21.train_tasks[:6])]

    def loss():
        model.model.train()
        return meta_loss(model.model, held_out, model.regularizer)[1]["query_bce"]

    before = loss()
    model.fit(tox21, steps=15, seed=0, progress=False)
    after = loss()
    assert after < before - 0.02, (before, after)


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_official_preset_runs_with_contrastive_and_inner_step_penalty(cld, device):
    # On a GPU this once failed: the contrastive term compared CUDA vectors with CPU group ids.
    model = PinTuningModel.for_dataset(cld, protocol="official", seed=0, device=torch.device(device), kekulize=False,
                                       **TINY)
    assert model.config.context_layers == "first" and model.config.query_aux_offset == -1
    model.fit(cld, steps=1, seed=0, progress=False)
    history = model.history
    assert {"nt_xent", "emb_bwc", "query_bce"} <= set(history[-1])
    assert history[-1]["emb_bwc"] > 0


def test_fisher_variant_estimates_on_moses(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, emb_bwc="embedding_fisher", fisher_molecules=64, **TINY)
    model.fit(cld, steps=1, seed=0, progress=False)
    assert model.regularizer.importance == "embedding_fisher"


_SEEDED_FIT = """
import sys, torch
from deepchem_pintuning.data import load_fewshot
from deepchem_pintuning.model import PinTuningModel
settings = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, encoder="gin_scratch", n_shot=5,
                tasks_per_step=3, episodes_per_task=2, encoder_dropout=0.2, context_dropout=0.2)
model = PinTuningModel.for_dataset(load_fewshot("toxcast-CLD"), seed=int(sys.argv[2]), **settings)
model.fit(load_fewshot("toxcast-CLD"), steps=2)
torch.save({n: p.detach() for n, p in model.model.state_dict().items()}, sys.argv[1])
"""


def test_meta_training_is_reproducible_for_a_seed_across_processes(tmp_path):
    """Same data, settings and seed -> bit-identical weights and BatchNorm buffers, dropout on, each run in
    its own process (so no state of a process, e.g. Python's per-process string hashing, leaks in)."""
    import os
    import subprocess
    import sys
    weights = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        subprocess.run([sys.executable, "-c", _SEEDED_FIT, str(tmp_path / run), str(seed)], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"})
        weights[run] = torch.load(tmp_path / run)
    assert all(torch.equal(weights["a"][n], weights["b"][n]) for n in weights["a"])
    assert not all(torch.equal(weights["a"][n], weights["c"][n]) for n in weights["a"])


def test_save_restore_gives_identical_predictions(cld, tmp_path):
    model = PinTuningModel.for_dataset(cld, model_dir=str(tmp_path), seed=0, **TINY)
    model.fit(cld, steps=2, seed=0, progress=False)
    first = model.evaluate_fewshot(cld, seed=1)
    restored = PinTuningModel.load(str(tmp_path))
    again = restored.evaluate_fewshot(cld, seed=1)
    assert first["per_task"] == again["per_task"]
    different = PinTuningModel.for_dataset(cld, seed=5, **TINY).evaluate_fewshot(cld, seed=1)
    assert different["per_task"] != first["per_task"]


def test_honest_evaluation_restores_batchnorm_statistics(cld):
    model = _tiny_model(cld)
    model.fit(cld, steps=1, seed=0, progress=False)
    stats = {n: b.clone() for n, b in model.model.named_buffers()}
    model.evaluate_fewshot(cld, seed=0)
    assert all(torch.equal(stats[n], b) for n, b in model.model.named_buffers())
    leaky = PinTuningModel.for_dataset(cld, seed=0, restore_batchnorm_after_eval=False, **TINY)
    stats = {n: b.clone() for n, b in leaky.model.named_buffers()}
    leaky.evaluate_fewshot(cld, seed=0)
    assert any(not torch.equal(stats[n], b) for n, b in leaky.model.named_buffers())


def test_predict_smiles_for_a_new_assay(cld):
    model = _tiny_model(cld)
    episode = evaluation_episode(cld, cld.test_tasks[0], n_shot=5, seed=0)
    support = [cld.smiles[i] for i in episode.support]
    query = [cld.smiles[i] for i in episode.query[:10]] + ["not a smiles"]
    scores = model.predict_smiles(support, episode.support_labels.tolist(), query)
    assert scores.shape == (11,) and np.isnan(scores[-1])
    assert ((scores[:-1] > 0) & (scores[:-1] < 1)).all()
    with pytest.raises(ValueError, match="at least 2 actives"):
        model.predict_smiles(support[:6], [1, 0, 0, 0, 0, 0], query)


def test_registered_on_deepchem():
    import deepchem as dc
    pt.register()
    assert dc.models.PinTuningModel is PinTuningModel


def test_unknown_setting_is_rejected():
    with pytest.raises(TypeError):
        PinTuningConfig(adapter_width=3)
    with pytest.raises(ValueError, match="protocol"):
        PinTuningModel(n_tasks=3, protocol="fast")
