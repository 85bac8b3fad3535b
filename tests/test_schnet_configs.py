"""The extension's experiments compose in spktrain's config tree, found through the plugin."""

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import schnetpack.cli  # noqa: F401  (registers the uuid/tmpdir resolvers of spktrain)

EXPERIMENTS = {
    "pretrain_xtb": ("qm9_xtb.db", "gap", "schnetpack.task.AtomisticTask"),
    "scratch_hopv": ("hopv.db", "gap", "schnetpack.AtomisticTask"),
    "finetune_hopv": ("hopv.db", "gap", "schnet_transfer.finetune.FineTuneTask"),
    "scratch_freesolv": ("freesolv.db", "hydration_free_energy", "schnetpack.AtomisticTask"),
    "finetune_freesolv": ("freesolv.db", "hydration_free_energy",
                          "schnet_transfer.finetune.FineTuneTask"),
}


@pytest.fixture
def spktrain_configs(monkeypatch, tmp_path):
    monkeypatch.setenv("SCHNET_TRANSFER_DATA", str(tmp_path))
    GlobalHydra.instance().clear()
    with initialize_config_module("schnetpack.configs", version_base="1.2"):
        yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes(spktrain_configs, tmp_path, name):
    db, prop, task = EXPERIMENTS[name]
    cfg = compose("train", overrides=[f"experiment={name}", "run.work_dir=/somewhere"])
    OmegaConf.resolve(cfg)
    assert cfg.data.datapath == str(tmp_path / db)
    assert cfg.globals.property == prop
    assert cfg.model.representation._target_ == "schnetpack.representation.PaiNN"
    assert cfg.task._target_.rsplit(".", 1)[-1] == task.rsplit(".", 1)[-1]
    targets = [t._target_ for t in cfg.data.transforms]
    assert "schnet_transfer.normalizer.StandardizeProperty" in targets
    assert cfg.model.postprocessors[-1].inverse is True
    if name.startswith("finetune"):
        assert cfg.task.pretrained_path == f"/somewhere/runs/pretrain_xtb_{prop}/best_model"
        assert cfg.task.layer_lr_decay == 1.0


def test_discriminative_task_is_selectable(spktrain_configs):
    cfg = compose("train", overrides=["experiment=finetune_freesolv",
                                      "task=finetune_discriminative"])
    assert cfg.task._target_ == "schnet_transfer.finetune.FineTuneTask"
    assert cfg.task.layer_lr_decay == 0.5
