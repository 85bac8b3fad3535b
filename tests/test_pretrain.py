"""Self-supervised GIN pre-training (attribute masking, context prediction) on real MOSES molecules."""
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from deepchem_pintuning.cli import main
from deepchem_pintuning.batching import graph_to_data
from deepchem_pintuning.encoder import PretrainedGNN, build_encoder, load_pretrained_weights
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
from deepchem_pintuning.molecule_graph import MASK_ATOM_TYPE, MASK_BOND_TYPE
from deepchem_pintuning.pretrain import (PretrainConfig, evaluate_objectives, init_models, load_molecule_graphs,
                                         pretrain, recalibrate_batch_norm)
from deepchem_pintuning.pretrain_objectives import context_pairs, mask_attributes

TINY = dict(num_layer=2, emb_dim=32, batch_size=16, log_every=1)


@pytest.fixture(scope="module")
def molecules():
    graphs, skipped = load_molecule_graphs(molecules=64)
    assert len(graphs) == 64 and not skipped
    return graphs[:48], graphs[48:]  # training molecules, held-out molecules


def test_masking_replaces_atoms_and_incident_bonds(molecules):
    graphs = molecules[0][:8]
    masked = mask_attributes(graphs, 0.15, torch.Generator().manual_seed(1), mask_edge=True)
    assert len(masked.atom_index) == sum(int(g.num_nodes * 0.15 + 1) for g in graphs)
    original = torch.cat([g.x for g in graphs])
    assert torch.equal(masked.atom_labels, original[masked.atom_index, 0])
    assert (masked.batch.x[masked.atom_index] == torch.tensor([MASK_ATOM_TYPE, 0])).all()
    untouched = torch.ones(len(original), dtype=torch.bool)
    untouched[masked.atom_index] = False
    assert torch.equal(masked.batch.x[untouched], original[untouched])
    src, dst = masked.batch.edge_index
    is_masked = torch.isin(src, masked.atom_index) | torch.isin(dst, masked.atom_index)
    assert (masked.batch.edge_attr[is_masked, 0] == MASK_BOND_TYPE).all()
    assert (masked.batch.edge_attr[~is_masked, 0] != MASK_BOND_TYPE).all()
    assert len(masked.bond_index) * 2 == int(is_masked.sum())  # each bond predicted once
    assert set(masked.bond_labels.tolist()) <= {0, 1, 2, 3}


def test_context_pairs_on_a_carbon_chain():
    """Chain of 12 atoms: substructure = atoms within 5 bonds of the centre, context = 5..7 bonds."""
    chain = graph_to_data(PretrainGNNFeaturizer().featurize(["C" * 12])[0])
    expected = set()
    for c in range(12):
        hops = np.abs(np.arange(12) - c)
        n_context, n_anchor = int(((hops > 4) & (hops <= 7)).sum()), int((hops == 5).sum())
        if n_context:
            expected.add((int((hops <= 5).sum()), n_context, n_anchor))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        pairs = context_pairs([chain], k=5, r1=4, r2=7, generator=generator)
        if pairs is None:
            continue
        seen = (pairs.substructs.num_nodes, pairs.contexts.num_nodes, len(pairs.anchors))
        assert seen in expected
        n = pairs.contexts.num_nodes  # the context is one or two chain segments (either side of the centre)
        assert pairs.contexts.edge_index.shape[1] in (2 * (n - 1), 2 * (n - 2))


def test_attrmask_lowers_held_out_masked_atom_loss(molecules, tmp_path):
    train, held_out = molecules
    config = PretrainConfig(objective="attrmask", epochs=4, lr=1e-2, seed=0, **TINY)
    before = evaluate_objectives(*init_models(config), held_out, seed=7)["attrmask"][0]
    run = pretrain(config, tmp_path, progress=False, graphs=train)
    after = evaluate_objectives(run.encoder, run.heads, held_out, seed=7)["attrmask"][0]
    assert run.step == 12
    assert after < 0.5 * before, (before, after)


def test_checkpoint_is_a_plain_encoder_state_dict(molecules, tmp_path):
    train, held_out = molecules
    config = PretrainConfig(objective="attrmask", epochs=1, calibration_molecules=0, **TINY)
    run = pretrain(config, tmp_path, progress=False, graphs=train)
    state = torch.load(tmp_path / "encoder.pth", weights_only=True)
    assert set(state) == set(PretrainedGNN("gin", num_layer=2, emb_dim=32).state_dict())
    loaded = load_pretrained_weights(PretrainedGNN("gin", num_layer=2, emb_dim=32), tmp_path / "encoder.pth")
    batch = Batch.from_data_list(held_out)
    with torch.no_grad():
        assert torch.allclose(loaded.eval().embed(batch), run.encoder.eval().embed(batch))


def test_written_encoder_has_batch_norm_statistics_of_whole_molecules(molecules, tmp_path):
    train, _ = molecules
    run = pretrain(PretrainConfig(objective="both", epochs=1, **TINY), tmp_path, progress=False, graphs=train)
    written = torch.load(tmp_path / "encoder.pth", weights_only=True)
    expected = recalibrate_batch_norm(run.encoder, train).state_dict()  # one batch: order does not matter
    for key, value in run.encoder.state_dict().items():
        if "running" in key:
            assert torch.allclose(written[key], expected[key], atol=1e-5), key
            assert not torch.allclose(written[key], value, atol=1e-3), key  # training statistics differ
        else:
            assert torch.equal(written[key], value), key


def test_resume_continues_exactly(molecules, tmp_path):
    train = molecules[0]
    config = dict(objective="both", seed=3, checkpoint_every=2, **TINY)
    full = pretrain(PretrainConfig(epochs=2, **config), tmp_path / "full", progress=False, graphs=train)
    pretrain(PretrainConfig(epochs=1, **config), tmp_path / "cut", progress=False, graphs=train)
    resumed = pretrain(PretrainConfig(epochs=2, **config), tmp_path / "cut", resume=True, progress=False,
                       graphs=train)
    assert resumed.step == full.step == 6
    assert [row["step"] for row in resumed.log] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([r["loss"] for r in resumed.log], [r["loss"] for r in full.log], rtol=1e-6)
    for key, value in full.encoder.state_dict().items():
        assert torch.allclose(value, resumed.encoder.state_dict()[key], atol=1e-6), key


def test_resume_refuses_changed_settings_and_missing_state(molecules, tmp_path):
    train = molecules[0]
    with pytest.raises(FileNotFoundError, match="resume.pt"):
        pretrain(PretrainConfig(**TINY), tmp_path, resume=True, progress=False, graphs=train)
    pretrain(PretrainConfig(**TINY), tmp_path, progress=False, graphs=train)
    with pytest.raises(ValueError, match="seed"):
        pretrain(PretrainConfig(seed=1, epochs=2, **TINY), tmp_path, resume=True, progress=False, graphs=train)


def test_context_prediction_training_loss_decreases(molecules, tmp_path):
    """Training loss of the first vs the last 9 steps (each log row averages 3 steps).

    Eval-mode losses are not compared: an untrained encoder with fresh BatchNorm statistics gives
    near-zero logits, i.e. exactly chance loss 2 ln 2, which a barely trained model does not beat.
    """
    config = PretrainConfig(objective="contextpred", epochs=20, seed=0, **{**TINY, "log_every": 3})
    run = pretrain(config, tmp_path, progress=False, graphs=molecules[0])
    losses = [row["contextpred_loss"] for row in run.log]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_cli_pretrain_and_resume(tmp_path, capsys):
    args = ["pretrain", "--molecules", "12", "--batch-size", "6", "--out", str(tmp_path), "--log-every", "1"]
    assert main(args) == 0
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert "4 steps" in capsys.readouterr().out
    load_pretrained_weights(PretrainedGNN("gin"), tmp_path / "encoder.pth")


def test_shipped_offline_gin_loads_by_name():
    gnn = build_encoder("gin_attrmask_contextpred_offline").eval()
    assert gnn.gnn_type == "gin" and sum(p.numel() for p in gnn.parameters()) == 1_857_900
    scratch = build_encoder("gin_scratch")
    assert not torch.allclose(gnn.x_embedding1.weight, scratch.x_embedding1.weight)
    batch = Batch.from_data_list(load_molecule_graphs(molecules=4)[0])
    with torch.no_grad():
        assert torch.isfinite(gnn.embed(batch)).all()
