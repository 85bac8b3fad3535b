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
    "paper_pretrain_xtb": ("qm9_xtb.db", "gap", "schnetpack.task.AtomisticTask"),
    "paper_scratch_hopv": ("hopv.db", "gap", "schnetpack.AtomisticTask"),
    "paper_finetune_hopv": ("hopv.db", "gap", "schnet_transfer.finetune.FineTuneTask"),
    "paper_scratch_freesolv": ("freesolv_calc.db", "hydration_free_energy", "schnetpack.AtomisticTask"),
    "paper_finetune_freesolv": ("freesolv_calc.db", "hydration_free_energy",
                                "schnet_transfer.finetune.FineTuneTask"),
    "paper_delta_scratch_hopv": ("hopv_with_xtb.db", "gap", "schnetpack.AtomisticTask"),
    "paper_delta_finetune_hopv": ("hopv_with_xtb.db", "gap", "schnet_transfer.finetune.FineTuneTask"),
    "paper_delta_scratch_freesolv": ("freesolv_calc_with_xtb.db", "hydration_free_energy",
                                     "schnetpack.AtomisticTask"),
    "paper_delta_finetune_freesolv": ("freesolv_calc_with_xtb.db", "hydration_free_energy",
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
    if name.startswith("paper_") and "finetune" in name:
        assert cfg.task.pretrained_path == f"/somewhere/runs/paper_pretrain_xtb_{prop}/best_model"


@pytest.mark.parametrize("name", sorted(e for e in EXPERIMENTS if e.startswith("paper_")))
def test_paper_experiments_use_the_papers_settings(spktrain_configs, name):
    cfg = compose("train", overrides=[f"experiment={name}"])
    rep = cfg.model.representation
    assert (rep.n_atom_basis, rep.n_interactions, rep.radial_basis.n_rbf, cfg.globals.cutoff) == (30, 3, 20, 5.0)
    assert cfg.task.optimizer_cls == "torch.optim.AdamW"
    assert cfg.task.optimizer_args.lr == 5e-4 and cfg.task.optimizer_args.weight_decay == 0.01
    assert cfg.task.scheduler_args.factor == 0.5 and cfg.task.scheduler_args.patience == 5
    assert cfg.data.batch_size == 10
    assert cfg.callbacks.model_checkpoint.monitor == "val_loss"    # best-validation model
    assert "ema" not in cfg.callbacks                               # no weight averaging
    delta = [t for t in cfg.data.transforms if t._target_.endswith("CalibratedResidual")]
    assert len(delta) == ("delta" in name)
    if delta:   # the inverse adds the calibrated cheap label back, after the normalizer
        assert cfg.model.postprocessors[-1]._target_.endswith("CalibratedResidual")
        assert cfg.model.postprocessors[-1].inverse is True
        prop = cfg.globals.property
        assert list(cfg.data.load_properties) == [prop, f"xtb_{prop}"]


def test_label_statistics_can_be_fixed(spktrain_configs):
    cfg = compose("train", overrides=["experiment=paper_finetune_hopv", "globals.label_mean=2.5",
                                      "globals.label_stddev=0.4"])
    forward = [t for t in cfg.data.transforms if t._target_.endswith("StandardizeProperty")][0]
    inverse = cfg.model.postprocessors[1]
    assert (forward.mean, forward.stddev, inverse.mean, inverse.stddev) == (2.5, 0.4, 2.5, 0.4)


def test_discriminative_task_is_selectable(spktrain_configs):
    cfg = compose("train", overrides=["experiment=finetune_freesolv",
                                      "task=finetune_discriminative"])
    assert cfg.task._target_ == "schnet_transfer.finetune.FineTuneTask"
    assert cfg.task.layer_lr_decay == 0.5
