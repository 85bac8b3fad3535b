"""Fine-tuning task: start from pre-trained weights, layer-wise (discriminative) learning rates.

:class:`FineTuneTask` is a schnetpack ``AtomisticTask`` that, when training
starts, copies the representation and output-head weights of a pre-trained
model into its own model.  The normalizer statistics are *not* copied: the
fine-tuned model standardizes with the target's training split and predicts in
the target's units.

Discriminative fine-tuning groups the parameters by depth: the output head
trains with the base learning rate, interaction block ``i`` of ``n`` with
``lr * decay ** (n - i)`` and the embedding (plus the shared filter network)
with ``lr * decay ** (n + 1)``; ``freeze_embedding`` keeps the embedding
fixed.  Schedulers (ReduceLROnPlateau, warm-up) scale all groups alike, so the
ratios hold for the whole run.

Loading the pre-trained model unpickles it unless the file holds weights only
(see :func:`load_pretrained_state`): give only models you trained yourself.

Examples
--------
>>> import schnetpack as spk
>>> from schnet_transfer.finetune import layerwise_parameter_groups
>>> painn = spk.representation.PaiNN(
...     n_atom_basis=8, n_interactions=2,
...     radial_basis=spk.nn.GaussianRBF(n_rbf=5, cutoff=3.0),
...     cutoff_fn=spk.nn.CosineCutoff(3.0))
>>> model = spk.model.NeuralNetworkPotential(
...     representation=painn, input_modules=[spk.atomistic.PairwiseDistances()],
...     output_modules=[spk.atomistic.Atomwise(n_in=8, output_key="gap")])
>>> [(g["name"], g["lr"]) for g in layerwise_parameter_groups(model, 1e-3, 0.5)]
[('head', 0.001), ('interaction_1', 0.0005), ('interaction_0', 0.00025), ('embedding', 0.000125)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import torch
from schnetpack.task import AtomisticTask

__all__ = [
    "BLOCK_PATTERN", "FineTuneTask", "layerwise_parameter_groups", "load_pretrained_state",
    "pretrained_record",
]

log = logging.getLogger(__name__)

#: Interaction blocks of schnetpack's representations: PaiNN (``interactions.<i>``,
#: ``mixing.<i>``), SchNet (``interactions.<i>``) and SO3net (``so3convs.<i>``,
#: ``mixings1/2/3.<i>``, ``gatings.<i>``).  Group 1 is the block index.
BLOCK_PATTERN = r"^representation\.(?:interactions|mixing|so3convs|mixings\d*|gatings)\.(\d+)\."


def layerwise_parameter_groups(
    model: torch.nn.Module,
    lr: float,
    decay: float = 1.0,
    freeze_embedding: bool = False,
    block_pattern: str | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with learning rates decaying from head to embedding.

    Parameters
    ----------
    model
        A schnetpack model with ``representation`` (PaiNN, SchNet or SO3net,
        or any whose blocks ``block_pattern`` finds) and output modules.
    lr
        Learning rate of the output head.
    decay
        Factor per level going down (1.0: one learning rate for all).
    freeze_embedding
        Exclude the lowest level (embedding, shared filters) from training.
    block_pattern
        Regular expression on parameter names whose group 1 is the index of
        the interaction block (default :data:`BLOCK_PATTERN`).  Other
        ``representation.*`` parameters form the embedding level.

    Returns
    -------
    list of dict
        Groups ``{"name", "params", "lr", "base_lr"}`` from head to embedding.

    Warns
    -----
    UserWarning
        If the pattern finds no block (every representation parameter would be
        "embedding", so ``freeze_embedding`` freezes the whole representation)
        or leaves nothing for the embedding level.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    pattern = re.compile(block_pattern or BLOCK_PATTERN)
    levels: dict[str, list[torch.nn.Parameter]] = {"head": [], "embedding": []}
    blocks: dict[int, list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        match = pattern.match(name)
        if match:
            blocks.setdefault(int(match.group(1)), []).append(param)
        elif name.startswith("representation."):
            levels["embedding"].append(param)
        else:
            levels["head"].append(param)
    n = len(blocks)
    if not blocks and levels["embedding"]:
        warnings.warn(
            f"block pattern {pattern.pattern!r} matched no parameter of the representation: "
            f"all {len(levels['embedding'])} are one 'embedding' level"
            + (" and freeze_embedding freezes them all" if freeze_embedding else "")
            + "; give block_pattern for this representation", stacklevel=2)
    elif blocks and not levels["embedding"]:
        warnings.warn(
            f"block pattern {pattern.pattern!r} matched every parameter of the representation: "
            "the 'embedding' level is empty" + (" and freeze_embedding freezes nothing"
                                                 if freeze_embedding else ""), stacklevel=2)
    groups = [("head", levels["head"], lr)]
    groups += [(f"interaction_{i}", blocks[i], lr * decay ** (n - i)) for i in sorted(blocks, reverse=True)]
    if freeze_embedding:
        for param in levels["embedding"]:
            param.requires_grad_(False)
    else:
        groups.append(("embedding", levels["embedding"], lr * decay ** (n + 1)))
    return [
        {"name": name, "params": params, "lr": group_lr, "base_lr": group_lr}
        for name, params, group_lr in groups
        if params
    ]


def load_pretrained_state(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """State dict of a pre-trained model: a ``best_model``, a Lightning ``.ckpt`` or a state dict.

    ``trust_pickle=True`` allows unpickling (see Warnings); without it a file that is not a
    plain state dict is refused with a message saying so.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a torch file, or neither a model, a checkpoint nor a state dict.

    Warnings
    --------
    A ``best_model`` written by ``spktrain`` is a whole pickled schnetpack model,
    and Lightning checkpoints hold pickled hyperparameters: they can only be
    read with ``torch.load(weights_only=False)``, which unpickles the file, so
    code in it runs.  Give only files you produced yourself.  The file is first
    read with ``weights_only=True``; a file of tensors only (e.g.
    ``torch.save(model.state_dict(), path)``) is loaded that way and never
    unpickled.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pre-trained model not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):   # torch.save writes a zip archive
            raise ValueError(f"{path} is not a file written by torch.save: {err}") from err
        if not trust_pickle:
            raise ValueError(
                f"{path} holds pickled objects (a whole model or a Lightning checkpoint): reading it runs "
                "code stored in the file. If you produced it yourself, allow it with trust_pickle=True "
                "(spktrain: task.trust_pickle=true)") from None
        try:  # a whole model or a checkpoint with objects: unpickled, see Warnings
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(f"{path} is not a file written by torch.save: {err}") from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a file written by torch.save: {err}") from err
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj:
        prefix = "model."
        return {k[len(prefix):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise ValueError(
        f"{path} is neither a saved schnetpack model, a Lightning checkpoint nor a state dict"
    )


def pretrained_record(path: str | os.PathLike) -> dict[str, Any]:
    """Absolute path, size and SHA-256 of a pre-trained model file (provenance of a fine-tuning run).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     pretrained_record(f.name)["sha256"][:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest()}


class FineTuneTask(AtomisticTask):
    """``AtomisticTask`` initialised from a pre-trained model, with layer-wise learning rates.

    Parameters
    ----------
    pretrained_path
        ``best_model`` written by ``spktrain`` (or a ``.ckpt``, or a saved state
        dict) of the pre-training run.  A model or checkpoint is unpickled (code
        in it runs): only files you produced yourself.
    transfer
        Prefixes of the parameter names copied from the pre-trained model.
    layer_lr_decay
        Learning-rate factor per level below the output head (1.0: plain fine-tuning).
    freeze_embedding
        Keep the atom embedding and shared filter network at the pre-trained values.
    block_pattern
        Regular expression finding the interaction blocks (see
        :func:`layerwise_parameter_groups`); default: PaiNN, SchNet and SO3net.
    pretrained_model
        Provenance record of the pre-trained file (:meth:`record_pretrained`);
        filled in when training starts and restored with a checkpoint.
    trust_pickle
        Allow ``pretrained_path`` to be a pickled model or checkpoint (reading it runs
        code in the file): only for files you produced yourself. A plain state dict
        needs no trust.
    **kwargs
        Everything ``schnetpack.task.AtomisticTask`` takes (model, outputs, optimizer...).
    """

    def __init__(
        self,
        pretrained_path: str,
        transfer: Sequence[str] = ("representation.", "output_modules."),
        layer_lr_decay: float = 1.0,
        freeze_embedding: bool = False,
        block_pattern: str | None = None,
        pretrained_model: dict[str, Any] | None = None,
        trust_pickle: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pretrained_path = pretrained_path
        self.transfer = tuple(transfer)
        self.layer_lr_decay = layer_lr_decay
        self.freeze_embedding = freeze_embedding
        self.block_pattern = block_pattern
        self.pretrained_model = pretrained_model
        self.trust_pickle = trust_pickle

    def transfer_pretrained_weights(self) -> list[str]:
        """Copy the ``transfer`` parameters of the pre-trained model; returns their names.

        Raises
        ------
        ValueError
            If a transferred tensor is missing or has another shape (different
            architecture than the pre-training run).
        """
        source = load_pretrained_state(self.pretrained_path, self.trust_pickle)
        target = self.model.state_dict()
        names = [k for k in target if k.startswith(self.transfer)]
        missing = [k for k in names if k not in source]
        mismatched = [k for k in names if k in source and source[k].shape != target[k].shape]
        if missing or mismatched or not names:
            raise ValueError(
                f"pre-trained model {self.pretrained_path} does not fit this model: "
                f"missing {missing[:5]}, shape mismatch {mismatched[:5]}"
            )
        self.model.load_state_dict({k: source[k] for k in names}, strict=False)
        log.info(f"loaded {len(names)} pre-trained tensors from {self.pretrained_path}")
        return names

    def setup(self, stage=None):
        if stage == "fit":
            self.transfer_pretrained_weights()
            self.record_pretrained()
        super().setup(stage)

    def record_pretrained(self) -> dict[str, Any]:
        """Put :func:`pretrained_record` of the pre-trained model in the hyperparameters.

        The record (``pretrained_model: {path, bytes, sha256}``) goes into the
        checkpoints' ``hyper_parameters`` and the loggers' hparams, and to
        ``pretrained_model.json`` in the folder of the checkpoint directory (the
        run folder of ``spktrain``, next to ``best_model`` and ``checkpoints/``).
        """
        record = pretrained_record(self.pretrained_path)
        self.pretrained_model = self.hparams["pretrained_model"] = record
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.is_global_zero:
            checkpoints = getattr(trainer.checkpoint_callback, "dirpath", None)
            folder = os.path.dirname(os.path.abspath(checkpoints)) if checkpoints else "."
            with open(os.path.join(folder, "pretrained_model.json"), "w") as out:
                json.dump(record, out, indent=2)
        log.info(f"pre-trained model {record['path']} sha256 {record['sha256']}")
        return record

    def configure_optimizers(self):
        groups = layerwise_parameter_groups(
            self.model, self.lr, self.layer_lr_decay, self.freeze_embedding, self.block_pattern
        )
        optimizer_cls = self.optimizer_cls
        self.optimizer_cls = lambda params, **kwargs: optimizer_cls(groups, **kwargs)
        try:
            return super().configure_optimizers()
        finally:
            self.optimizer_cls = optimizer_cls

    def optimizer_step(self, epoch=None, batch_idx=None, optimizer=None, optimizer_closure=None):
        if self.trainer.global_step < self.warmup_steps:
            scale = min(1.0, float(self.trainer.global_step + 1) / self.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = scale * group["base_lr"]
        optimizer.step(closure=optimizer_closure)
