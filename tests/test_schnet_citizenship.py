"""schnet_transfer used the way stock SchNetPack components are used (docs' calls as written)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from schnetpack.data import ASEAtomsData, AtomsDataModule
import schnetpack.transform as trn

from schnet_transfer.normalizer import StandardizeProperty

ZMAX = 100


@pytest.fixture(scope="module")
def energy_db(tmp_path_factory):
    """30 random H/C/N/O molecules whose 'energy' is dominated by atom references (as U0)."""
    rng = np.random.default_rng(0)
    atomrefs = np.zeros(ZMAX)
    atomrefs[[1, 6, 7, 8]] = [-13.6, -1029.8, -1485.3, -2042.6]
    path = tmp_path_factory.mktemp("atomrefs") / "energy.db"
    data = ASEAtomsData.create(str(path), distance_unit="Ang", property_unit_dict={"energy": "eV"},
                               atomrefs={"energy": atomrefs.tolist()})
    mols, props = [], []
    for _ in range(30):
        n = int(rng.integers(3, 12))
        z = rng.choice([1, 6, 7, 8], size=n)
        mols.append(Atoms(numbers=z, positions=rng.normal(scale=1.5, size=(n, 3))))
        props.append({"energy": np.array([atomrefs[z].sum() - 0.4 * n + rng.normal(scale=0.3)])})
    data.add_systems(props, mols)
    return str(path)


def _datamodule(db, tmp_path, transforms):
    dm = AtomsDataModule(db, batch_size=8, num_train=20, num_val=5, num_test=5,
                         transforms=transforms, split_file=str(tmp_path / "split.npz"),
                         num_workers=0)
    dm.prepare_data()
    dm.setup()
    return dm


def _train_labels(dm):
    return torch.cat([batch["energy"] for batch in dm.train_dataloader()])


def _round_trip(dm, postprocessors):
    """Apply the model postprocessors to the normalized labels: physical values again?"""
    for pp in postprocessors:
        pp.datamodule(dm)
    raw = ASEAtomsData(dm.datapath)
    for batch in dm.train_dataloader():
        out = dict(batch)
        for pp in postprocessors:
            out = pp(out)
        physical = torch.tensor([float(raw[int(i)]["energy"][0]) for i in batch["_idx"]],
                                dtype=torch.float64)
        assert torch.allclose(out["energy"].double(), physical.double(), rtol=1e-6, atol=1e-4)  # float32 atomrefs (stock)


@pytest.mark.parametrize("remove_mean", [True, False])
def test_normalizer_after_stock_remove_offsets(energy_db, tmp_path, remove_mean):
    """QM9-tutorial pipeline: RemoveOffsets(atom refs [+ mean]), then the normalizer."""
    dm = _datamodule(energy_db, tmp_path, [
        trn.RemoveOffsets("energy", remove_mean=remove_mean, remove_atomrefs=True),
        StandardizeProperty("energy"),
        trn.CastTo32(),
    ])
    z = _train_labels(dm).double()
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    _round_trip(dm, [trn.CastTo64(), StandardizeProperty("energy", inverse=True),
                     trn.AddOffsets("energy", add_mean=remove_mean, add_atomrefs=True)])


@pytest.mark.parametrize("is_extensive", [True, False])
def test_normalizer_removes_atom_references_itself(energy_db, tmp_path, is_extensive):
    """remove_atomrefs / is_extensive as in RemoveOffsets, without a RemoveOffsets."""
    dm = _datamodule(energy_db, tmp_path, [
        StandardizeProperty("energy", remove_atomrefs=True, is_extensive=is_extensive),
        trn.CastTo32(),
    ])
    z = _train_labels(dm).double()
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    inverse = StandardizeProperty("energy", inverse=True, remove_atomrefs=True,
                                  is_extensive=is_extensive)
    _round_trip(dm, [trn.CastTo64(), inverse])
    assert torch.equal(inverse.atomref, ASEAtomsData(energy_db).atomrefs["energy"].double())


# --- layer-wise groups on schnetpack's representations ---

def _nnp(representation):
    import schnetpack as spk

    return spk.model.NeuralNetworkPotential(
        representation=representation, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=8, output_key="gap")])


def _representation(kind):
    import schnetpack as spk

    common = dict(n_atom_basis=8, n_interactions=2, cutoff_fn=spk.nn.CosineCutoff(3.0),
                  radial_basis=spk.nn.GaussianRBF(n_rbf=5, cutoff=3.0))
    if kind == "SO3net":
        return spk.representation.SO3net(lmax=1, **common)
    return spk.representation.PaiNN(**common)


@pytest.mark.parametrize("kind", ["SO3net", "PaiNN"])
def test_layerwise_groups_of_real_representations(kind, recwarn):
    from schnet_transfer.finetune import layerwise_parameter_groups

    model = _nnp(_representation(kind))
    groups = layerwise_parameter_groups(model, 1e-3, 0.5, freeze_embedding=True)
    assert [g["name"] for g in groups] == ["head", "interaction_1", "interaction_0"]
    assert not [w for w in recwarn.list if "block pattern" in str(w.message)]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # only the atom embedding (and PaiNN's shared filter network) stays fixed
    expected = {"representation.embedding.weight"} | (
        {"representation.filter_net.weight", "representation.filter_net.bias"}
        if kind == "PaiNN" else set())
    assert frozen == expected
    names = {id(p): n for n, p in model.named_parameters()}
    block0 = {names[id(p)].split(".")[1] for p in groups[2]["params"]}
    assert block0 == ({"so3convs", "mixings1", "mixings2", "mixings3", "gatings"}
                      if kind == "SO3net" else {"interactions", "mixing"})


def test_layerwise_groups_warn_when_the_pattern_matches_nothing_or_everything():
    from schnet_transfer.finetune import layerwise_parameter_groups

    with pytest.warns(UserWarning, match="matched no parameter.*freezes them all"):
        layerwise_parameter_groups(_nnp(_representation("SO3net")), 1e-3, 0.5,
                                   freeze_embedding=True, block_pattern=r"^representation\.blocks\.(\d+)\.")
    model = torch.nn.Module()  # a representation made only of indexed blocks
    model.representation = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    model.head = torch.nn.Linear(2, 1)
    with pytest.warns(UserWarning, match="matched every parameter.*freezes nothing"):
        groups = layerwise_parameter_groups(model, 1e-3, freeze_embedding=True,
                                            block_pattern=r"^representation\.(\d+)\.")
    assert "embedding" not in [g["name"] for g in groups]


# --- data config group, as spktrain data=qm9 ---

DATA = {"hopv": ["gap", "homo", "lumo"], "freesolv": ["hydration_free_energy"]}


@pytest.fixture
def hydra_compose(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    import schnetpack.cli  # noqa: F401  (spktrain's resolvers)

    monkeypatch.setenv("SCHNET_TRANSFER_DATA", str(tmp_path))
    GlobalHydra.instance().clear()
    with initialize_config_module("schnetpack.configs", version_base="1.2"):
        yield compose
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("experiment", [None, "pretrain_xtb", "scratch_hopv", "finetune_freesolv"])
def test_data_group_composes(hydra_compose, tmp_path, data, experiment):
    from omegaconf import OmegaConf

    overrides = [f"data={data}", "run.work_dir=/somewhere"]
    if experiment:
        overrides.append(f"experiment={experiment}")
    cfg = hydra_compose("train", overrides=overrides)
    cfg = OmegaConf.to_container(cfg.data, resolve=True)  # like data=qm9: no model alone
    folder = "/somewhere/data" if experiment is None else str(tmp_path)  # stock run.data_dir
    assert cfg["datapath"] == f"{folder}/{data}.db"
    assert cfg["_target_"] == "schnetpack.data.AtomsDataModule"
    assert cfg["load_properties"] == DATA[data]
    assert set(cfg["property_units"]) == set(DATA[data])


# --- the tiny spktrain pre-training + fine-tuning run of test_schnet_spktrain ---

from test_schnet_spktrain import runs  # noqa: E402,F401  (module fixture, reused)


def _metrics_csv(run):
    import pandas as pd

    files = sorted(run.rglob("metrics.csv"))
    assert files, f"no metrics.csv under {run}"
    return pd.read_csv(files[-1])


def test_metrics_are_also_logged_in_physical_units(runs):
    run = runs["runs"] / "finetune"
    stddev = float(torch.load(run / "best_model", weights_only=False).postprocessors[-1].stddev)
    table = _metrics_csv(run)
    for subset in ("val", "test"):
        rows = table.dropna(subset=[f"{subset}_gap_mae"])
        assert len(rows), subset
        for metric in ("mae", "rmse"):
            std_units = rows[f"{subset}_gap_{metric}"].to_numpy()
            physical = rows[f"{subset}_gap_{metric}_physical"].to_numpy()
            assert np.allclose(physical, std_units * stddev, rtol=1e-4, atol=0), (subset, metric)


def test_finetuning_run_records_the_pretrained_model(runs):
    import hashlib
    import json

    pretrained = runs["runs"] / "pretrain_xtb_gap" / "best_model"
    expected = {"path": str(pretrained.resolve()), "bytes": pretrained.stat().st_size,
                "sha256": hashlib.sha256(pretrained.read_bytes()).hexdigest()}
    run = runs["runs"] / "finetune"
    assert json.loads((run / "pretrained_model.json").read_text()) == expected
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["pretrained_model"] == expected
    assert expected["sha256"] in runs["ft_log"]


def test_docstring_examples_of_metrics_module():
    import doctest

    import schnet_transfer.metrics

    result = doctest.testmod(schnet_transfer.metrics)
    assert result.attempted > 0 and result.failed == 0
