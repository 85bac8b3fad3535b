"""Saving and loading a PinTuningModel directory: settings (JSON) + DeepChem checkpoints (tensors only).

A model directory holds ``pintuning_config.json`` (the number of properties, the meta-test
property rows and every :class:`~deepchem_pintuning.pintuning.PinTuningConfig` setting) and
DeepChem's ``checkpoint*.pt`` files. Everything needed to rebuild the network is in the
directory: the original encoder file is not read again. Checkpoints are read with
``torch.load(..., weights_only=True)`` passed explicitly, so a planted file cannot run code even
when the environment asks torch to unpickle by default. A missing, unreadable or mismatched
directory raises :class:`ModelDirectoryError`, one line saying what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from deepchem_pintuning.encoder import PRETRAINED_ENCODERS, PretrainedGNN
from deepchem_pintuning.library_io import UserInputError
from deepchem_pintuning.pintuning import PinTuningConfig

CONFIG_FILE = "pintuning_config.json"


class ModelDirectoryError(UserInputError):
    """A model directory that is missing, incomplete, unreadable or does not fit its settings."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def package_versions() -> Dict[str, str]:
    """Versions of the packages a saved model depends on."""
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for package in ("deepchem-pintuning", "deepchem", "torch", "torch-geometric", "rdkit"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


class SavedModel:
    """``save_checkpoint`` / ``load`` / ``restore`` of :class:`~deepchem_pintuning.model.PinTuningModel`.

    A mixin because the methods override DeepChem ``TorchModel``'s; they use the model's
    ``n_tasks``, ``test_task_ids``, ``config`` and ``_set_regularizer``.
    """

    def save_checkpoint(self, max_checkpoints_to_keep: int = 5, model_dir: Optional[str] = None) -> None:
        """Save the weights (DeepChem checkpoint) and the settings needed by :meth:`load`, with a model card:
        the dataset and its property names and split, the package versions, the training steps and the
        last evaluation."""
        super().save_checkpoint(max_checkpoints_to_keep, model_dir)
        evaluations = [h for h in self.history if "eval_roc_auc" in h]
        settings = {"n_tasks": self.n_tasks, "test_task_ids": self.test_task_ids, "config": self.config.to_dict(),
                    "card": {**self.card, "outer_steps": self._global_step, "versions": package_versions(),
                             "last_evaluation": {k: v for k, v in evaluations[-1].items() if k != "eval_per_task"}
                             if evaluations else None}}
        Path(model_dir or self.model_dir, CONFIG_FILE).write_text(json.dumps(settings, indent=1))

    @classmethod
    def load(cls, model_dir: str, device: Optional[Union[str, torch.device]] = None) -> "SavedModel":
        """Rebuild a model saved by :meth:`save_checkpoint` (or :meth:`fit`) and restore its weights.

        A missing, incomplete or mismatched model directory raises :class:`ModelDirectoryError`
        saying what is wrong (no settings file, unreadable settings or checkpoint, weights that do
        not fit the settings).
        """
        path = Path(model_dir, CONFIG_FILE)
        if not path.exists():
            raise ModelDirectoryError(f"{path} not found: {model_dir} is not a saved PinTuningModel")
        try:
            settings = json.loads(path.read_text())
            config = PinTuningConfig.from_dict(settings["config"])
            n_tasks, test_task_ids = int(settings["n_tasks"]), [int(i) for i in settings["test_task_ids"]]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:   # JSONDecodeError is a ValueError
            raise ModelDirectoryError(f"{path} is not a valid settings file: {_first_line(error)}") from None
        # every weight, the frozen encoder's included, is in the checkpoint: the encoder file is not needed
        empty = PretrainedGNN(PRETRAINED_ENCODERS[config.encoder][0], config.num_layer, config.emb_dim,
                              config.encoder_dropout)
        model = cls(n_tasks, test_task_ids, config=config, model_dir=model_dir, device=device,
                    prebuilt_encoder=empty)
        model.card = {k: v for k, v in settings.get("card", {}).items() if k in ("dataset", "tasks", "test_tasks")}
        model.restore()
        return model

    def restore(self, checkpoint: Optional[str] = None, model_dir: Optional[str] = None,
                strict: Optional[bool] = True) -> None:
        """Reload the weights from a checkpoint (default: the newest in ``model_dir``), as DeepChem does.

        The file is read with ``torch.load(..., weights_only=True)`` whatever the environment says,
        so a checkpoint can hold tensors only and loading one never runs code.
        """
        self._ensure_built()
        if checkpoint is None:
            checkpoints = sorted(self.get_checkpoints(model_dir))
            if not checkpoints:
                raise ModelDirectoryError(f"{model_dir or self.model_dir} has no checkpoint (checkpoint*.pt)")
            checkpoint = checkpoints[0]
        try:
            data = torch.load(checkpoint, map_location=self.device, weights_only=True)
            state, optimizer, step = data["model_state_dict"], data["optimizer_state_dict"], int(data["global_step"])
        except Exception as error:   # torch raises many types for truncated, foreign or unsafe files
            raise ModelDirectoryError(f"{checkpoint} is not a readable PinTuningModel checkpoint: "
                                      f"{_first_line(error)}") from None
        try:
            self.model.load_state_dict(state, strict=strict)
            self._pytorch_optimizer.load_state_dict(optimizer)
        except (RuntimeError, ValueError, KeyError) as error:
            details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [_first_line(error)]
            raise ModelDirectoryError(f"{checkpoint} does not fit the settings in {CONFIG_FILE} "
                                      f"({len(details)} problem(s), e.g. {details[0]})") from None
        self._global_step = step
        if self.config.emb_bwc == "identity":
            self._set_regularizer(None)
