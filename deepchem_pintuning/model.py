"""``PinTuningModel``: the DeepChem model class around the :class:`PinTuning` network."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import deepchem as dc
import numpy as np
import pandas as pd
import torch
from deepchem.models.optimizers import AdamW
from deepchem.models.torch_models import TorchModel
from tqdm.auto import tqdm

from deepchem_pintuning.assay_scoring import AssayScoring
from deepchem_pintuning.batched_meta_training import DeviceDataset, meta_gradients
from deepchem_pintuning.batched_network import embed_molecules
from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.captured_step import CapturedStep, training_capacity
from deepchem_pintuning.data import FewShotDataset, project_data_dir
from deepchem_pintuning.deepchem_contract import (PREDICT_INSTEAD, as_fewshot, split_torchmodel_kwargs, steps_for_epochs,
                                                  write_history)
from deepchem_pintuning.emb_bwc import EmbBWC, estimate_fisher
from deepchem_pintuning.encoder import PretrainedGNN
from deepchem_pintuning.episodes import Episode, EpisodeSampler
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
from deepchem_pintuning.fewshot_evaluation import DEFAULT_METRICS, FewShotEvaluation
from deepchem_pintuning.meta_training import episode_inputs, meta_loss
from deepchem_pintuning.model_directory import SavedModel
from deepchem_pintuning.pintuning import PinTuning, PinTuningConfig

logger = logging.getLogger(__name__)


def as_device(device: Optional[Union[str, torch.device]]) -> Optional[torch.device]:
    """A device given by name (``"cpu"``, ``"cuda:1"``) as a ``torch.device``; ``None`` stays ``None``.

    Raises ``ValueError`` for a name torch does not know and for CUDA on a machine without it
    (``TorchModel`` keeps a string as it is, and a missing GPU would fail later, deep in torch).
    """
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{str(device)!r}: CUDA is not available on this machine")
    return device


class PinTuningModel(AssayScoring, FewShotEvaluation, SavedModel, TorchModel):
    """Pin-Tuning (Wang et al., NeurIPS 2024) for few-shot molecular property prediction.

    A pre-trained molecular GNN is adapted per property with MP-Adapters fed by an episode's
    molecule-property context graph, its embedding tables regularised by Emb-BWC, and the whole
    meta-trained episodically with one-step second-order MAML.

    Parameters
    ----------
    n_tasks: int
        Number of properties of the dataset (rows of the property embedding).
    test_task_ids: sequence of int
        Label columns of the meta-test properties (their embeddings start at zero).
    protocol: str, default "paper"
        ``"paper"`` (the method as published) or ``"official"`` (the official code's behaviour,
        see :meth:`PinTuningConfig.official`).
    config: PinTuningConfig, optional
        Full settings; keyword arguments that name a config field override it.
    model_dir, device, seed:
        As for :class:`deepchem.models.TorchModel`, ``device`` also by name (``"cpu"``, ``"cuda:0"``);
        ``seed`` seeds the initialisation.
    prebuilt_encoder: PretrainedGNN, optional
        Used instead of ``config.encoder`` loaded from its file (:meth:`load` passes an empty one:
        every weight is in the checkpoint).
    **kwargs
        Pin-Tuning settings (:class:`PinTuningConfig` fields), and DeepChem's own ``batch_size``,
        ``learning_rate`` (= ``meta_lr``), ``optimizer`` (default AdamW with ``meta_lr`` and
        ``weight_decay``), ``tensorboard``, ``wandb_logger`` and ``log_frequency``.

    Examples
    --------
    >>> import deepchem_pintuning as pt
    >>> data = pt.load_fewshot("toxcast-CLD")
    >>> model = PinTuningModel.for_dataset(data, n_shot=5, emb_dim=32, num_layer=2, adapter_dim=8,
    ...                                    encoder="gin_scratch", seed=0)
    >>> loss = model.fit(data, steps=2, seed=0, progress=False)   # DeepChem style: fit(data, nb_epoch=1)
    >>> scores = model.evaluate_fewshot(data, seed=0)
    >>> sorted(scores)
    ['per_task', 'pr_auc', 'roc_auc']
    """

    def __init__(self, n_tasks: int, test_task_ids: Sequence[int] = (), protocol: str = "paper",
                 config: Optional[PinTuningConfig] = None, model_dir: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, seed: Optional[int] = None,
                 prebuilt_encoder: Optional[PretrainedGNN] = None, **kwargs):
        base_kwargs, overrides = split_torchmodel_kwargs(kwargs)
        if protocol not in ("paper", "official"):
            raise ValueError(f"protocol must be 'paper' or 'official', got {protocol!r}")
        device = as_device(device)
        if config is None:
            config = PinTuningConfig.for_protocol(protocol, **overrides)
        elif overrides:
            config = PinTuningConfig.from_dict({**config.to_dict(), **overrides})
        if seed is not None:
            torch.manual_seed(seed)
        self.config = config
        self.n_tasks = n_tasks
        self.test_task_ids = list(test_task_ids)
        # one extra, zero-initialised property row stands for a user's new assay (predict_smiles)
        network = PinTuning(config, n_tasks + 1, list(test_task_ids) + [n_tasks], encoder=prebuilt_encoder)
        optimizer = base_kwargs.pop("optimizer", None) or AdamW(learning_rate=config.meta_lr,
                                                                  weight_decay=config.weight_decay)
        super().__init__(network, loss=dc.models.losses.SigmoidCrossEntropy(), optimizer=optimizer,
                         model_dir=model_dir, device=device, **base_kwargs)
        self.regularizer: Optional[EmbBWC] = None
        if config.emb_bwc == "identity":
            self._set_regularizer(None)
        self.history: List[Dict[str, float]] = []
        self._frozen_cache: Optional[tuple] = None  # (dataset, its frozen-encoder vectors)
        self._device_data: Optional[DeviceDataset] = None
        self._captured: Optional[tuple] = None   # (what it was built for, CapturedStep)
        # Fast path layout (benchmarks/speed.py): on a GPU all episodes of a step in one batch; on a
        # CPU one episode per batch, batches spread over `workers` threads (one core each).
        self.episodes_per_pass: Optional[int] = None if self.device.type == "cuda" else 1
        self.eval_chunks_per_pass: int = 16 if self.device.type == "cuda" else 1
        self.workers: int = 1
        # replay each one-batch outer step as a CUDA graph (captured_step.py; on a CPU the same padded
        # steps run without a graph, for tests); off until measured on a GPU
        self.cuda_graph: bool = False
        # what the model was meta-trained on (dataset name, property names in column order, test
        # properties): saved with it, and checked against every dataset it is fitted or evaluated on
        self.card: Dict = {}

    @classmethod
    def for_dataset(cls, data: FewShotDataset, **kwargs) -> "PinTuningModel":
        """A model sized for ``data``'s properties, its meta-test properties zeroed."""
        model = cls(n_tasks=len(data.tasks), test_task_ids=[data.task_index(t) for t in data.test_tasks], **kwargs)
        model.card = {"dataset": data.name, "tasks": list(data.tasks), "test_tasks": list(data.test_tasks)}
        return model

    # ------------------------------------------------------------------ Emb-BWC
    def _set_regularizer(self, fisher) -> None:
        # anchored on the frozen copy: its tables are the pre-trained ones, also after a restore
        tables = self.model.frozen_encoder.embedding_tables()
        self.regularizer = EmbBWC({n: p for n, p in tables.items()}, self.config.emb_bwc, fisher).to(self.device)

    def estimate_fisher(self, smiles: Sequence[str], batch_size: int = 64, seed: int = 0) -> None:
        """Estimate the Emb-BWC Fisher on molecules (e.g. the shipped MOSES sample), see :func:`estimate_fisher`."""
        graphs = [g for g in PretrainGNNFeaturizer().featurize(list(smiles)) if hasattr(g, "node_features")]
        batches = [collate_graphs(graphs[i:i + batch_size], self.device) for i in range(0, len(graphs), batch_size)]
        fisher = estimate_fisher(self.model.frozen_encoder.requires_grad_(True), batches, seed=seed)
        self.model.frozen_encoder.requires_grad_(False)
        self._set_regularizer(fisher)

    def _require_regularizer(self) -> None:
        if self.config.emb_bwc in ("fisher", "embedding_fisher") and self.regularizer is None:
            path = project_data_dir() / "zinc" / "moses_subset_100k.csv.gz"
            smiles = pd.read_csv(path)["SMILES"].head(self.config.fisher_molecules).tolist()
            logger.info("estimating the Emb-BWC Fisher on %d MOSES molecules", len(smiles))
            self.estimate_fisher(smiles)

    # ------------------------------------------------------------------ data helpers
    def _check_featurization(self, data: FewShotDataset) -> None:
        """Refuse data whose properties or featurization differ from the model's."""
        tasks = self.card.get("tasks")
        if tasks is not None and list(data.tasks) != tasks:
            differing = [f"{a!r} != {b!r}" for a, b in zip(data.tasks, tasks) if a != b][:3]
            raise ValueError(f"{data.name} has other properties than the model's {self.card.get('dataset')} "
                             f"({len(data.tasks)} vs {len(tasks)} columns; e.g. {differing or 'column count'})")
        if data.kekulized != self.config.kekulize:
            raise ValueError(f"{data.name} was featurized with kekulize={data.kekulized} but the model's settings say "
                             f"kekulize={self.config.kekulize}: load it with load_fewshot(name, featurizer="
                             f"PretrainGNNFeaturizer(kekulize={self.config.kekulize}))")

    def _frozen(self, data: FewShotDataset) -> Optional[torch.Tensor]:
        """Frozen-encoder vectors of every molecule, cached (only valid with the frozen copy in eval mode)."""
        if self.config.frozen_encoder_train_mode:
            return None
        if self._frozen_cache is None or self._frozen_cache[0] is not data:
            self.model.frozen_encoder.eval()
            vectors = embed_molecules(self.model.frozen_encoder, self._on_device(data).graphs, np.arange(len(data)))
            self._frozen_cache = (data, vectors)
        return self._frozen_cache[1]

    def _on_device(self, data: FewShotDataset) -> DeviceDataset:
        """``data``'s molecules and labels collated once on the model's device (fast path)."""
        if self._device_data is None or self._device_data.data is not data:
            self._device_data = DeviceDataset(data, self.device)
        return self._device_data

    def _captured_step(self, data: FewShotDataset, tasks_per_step: int) -> CapturedStep:
        """The CUDA-graph step for ``data`` and the current settings, kept across ``fit`` calls (a capture
        costs a few eager steps; chunked training calls ``fit`` often). Its capacity comes from steps
        drawn with seed 0, so it is the same for every training seed."""
        config = self.config
        key = (self._on_device(data), self.regularizer, tasks_per_step, config.to_dict())
        if self._captured is None or self._captured[0] != key:
            capacity = training_capacity(key[0], EpisodeSampler(data, config.n_shot, config.n_query, seed=0),
                                         tasks_per_step, config.episodes_per_task, seed=0)
            self._captured = key, CapturedStep(self.model, self.regularizer, capacity,
                                               capture=self.device.type == "cuda")
        return self._captured[1]

    def _outer_step(self, data: FewShotDataset, episodes: Sequence[Tuple[int, Episode]], fast: bool,
                    captured: Optional[CapturedStep] = None):
        """Gradient of one step's outer loss into ``.grad``; returns the loss parts and the BatchNorm updates."""
        config, frozen = self.config, self._frozen(data)
        shapes = {(len(e.support), len(e.query), len(e.aux_task_indices)) for _, e in episodes}
        if captured is not None and len(shapes) == 1:
            result = captured.try_step(self._on_device(data), [e for _, e in episodes], frozen, config.query_aux_offset)
            if result is not None:
                return result
        if fast and len(shapes) == 1:
            dataset, size = self._on_device(data), self.episodes_per_pass or len(episodes)
            batches = [dataset.batch([e for _, e in episodes[i:i + size]], None, frozen, config.query_aux_offset,
                                     config.separate_bn_batches)
                       for i in range(0, len(episodes), size)]
            return meta_gradients(self.model, batches, self.regularizer, self.workers)
        inputs = [(task, episode_inputs(data, e, None, frozen, config.query_aux_offset, self.device))
                  for task, e in episodes]
        loss, parts = meta_loss(self.model, inputs, self.regularizer)
        loss.backward()
        return parts, []

    # ------------------------------------------------------------------ training
    def fit(self, dataset, nb_epoch: Optional[int] = None, max_checkpoints_to_keep: int = 5,
            checkpoint_interval: int = 0, deterministic: bool = True, restore: bool = False, variables=None,
            loss=None, callbacks=(), all_losses: Optional[List[float]] = None, *, steps: Optional[int] = None,
            seed: int = 0, progress: bool = True, eval_every: Optional[int] = None, eval_seed: int = 0,
            eval_tasks: Optional[Sequence[str]] = None, fast: bool = True,
            resample_eval_support: bool = False) -> float:
        """Meta-train on the training properties of ``dataset``; returns the mean loss, as DeepChem's ``fit``.

        Parameters
        ----------
        dataset: FewShotDataset or deepchem Dataset
            A plain dataset needs PretrainGNNFeaturizer graphs and the model's task names in column
            order (:func:`~deepchem_pintuning.deepchem_contract.as_fewshot`).
        nb_epoch: int, optional
            Epochs of ``ceil(n_train_properties / tasks_per_step)`` outer steps each; or give ``steps``
            (default 2,000, the paper's budget).
        max_checkpoints_to_keep, checkpoint_interval, restore, callbacks, all_losses:
            As in DeepChem: ``callbacks`` are called as ``callback(model, step)`` after every outer
            step (e.g. ``dc.models.ValidationCallback``); ``all_losses`` receives every step's loss;
            ``checkpoint_interval`` 0 saves at the end only. TensorBoard / W&B logging follows the
            constructor's ``tensorboard`` / ``wandb_logger`` / ``log_frequency``.
        deterministic, variables, loss:
            Episodes are always drawn from ``seed``; the tuned parameters and the meta-loss are
            Pin-Tuning's own (giving ``variables`` or ``loss`` is refused).
        steps: int
            Outer steps; each draws ``tasks_per_step`` properties x ``episodes_per_task`` episodes.
        eval_every: int, optional
            Evaluate every this many steps (ROC-AUC on ``eval_tasks``, default the test properties)
            and record it in the returned history.
        checkpoint_interval: int
            Save a checkpoint every this many steps (0: only at the end).
        resample_eval_support: bool, default False
            Draw fresh support sets at every evaluation (evaluation seed ``eval_seed + k`` for the
            k-th evaluation of this call), as the official code does; the best of these
            evaluations is the published protocol's number
            (:func:`~deepchem_pintuning.fewshot_evaluation.best_of_evaluations`). By
            default every evaluation uses the fixed supports of ``eval_seed``.
        fast: bool, default True
            All episodes of a step in one batch (:mod:`batched_meta_training`); False runs the
            per-episode reference implementation (same mathematics, several times slower).

        Notes
        -----
        Every outer step (loss parts, seconds) and evaluation is recorded in :attr:`history`, also
        written to ``model_dir/training_history.csv``.
        """
        if variables is not None or loss is not None:
            raise ValueError("PinTuningModel tunes its own parameters with its meta-loss: variables and loss must "
                             "not be given")
        data = as_fewshot(dataset, self.n_tasks, self.test_task_ids, self.card.get("tasks"))
        config = self.config
        if nb_epoch is not None and steps is not None:
            raise ValueError("give nb_epoch or steps, not both")
        steps = steps_for_epochs(nb_epoch, data, config.tasks_per_step) if nb_epoch is not None else \
            (2000 if steps is None else steps)
        self._ensure_built()
        if restore:
            self.restore()
        self._check_featurization(data)
        self._require_regularizer()
        sampler = EpisodeSampler(data, config.n_shot, config.n_query, seed=seed, shuffle_aux=config.shuffle_aux)
        n_evaluations, losses = 0, []
        rng = np.random.default_rng(seed)
        task_ids = {t: data.task_index(t) for t in sampler.tasks}
        n_per_step = min(config.tasks_per_step, len(sampler.tasks))
        captured = self._captured_step(data, n_per_step) if self.cuda_graph and fast and \
            not config.separate_bn_batches and self.episodes_per_pass is None else None
        bar = tqdm(range(steps), desc="Pin-Tuning meta-training", disable=not progress)
        for step in bar:
            start = time.perf_counter()
            self.model.train()
            tasks = rng.choice(sampler.tasks, n_per_step, replace=False)
            episodes = [(task_ids[t], sampler.sample(t)) for t in tasks for _ in range(config.episodes_per_task)]
            if config.hide_query_aux > 0:  # train for the deployment condition: no auxiliary labels in the query
                hidden = rng.random(len(episodes)) < config.hide_query_aux
                episodes = [(t, replace(e, query_aux_hidden=bool(h))) for (t, e), h in zip(episodes, hidden)]
            self._pytorch_optimizer.zero_grad()
            replays = captured.replays if captured is not None else 0
            parts, states = self._outer_step(data, episodes, fast, captured)
            torch.nn.utils.clip_grad_norm_(list(self.model.trainable_parameters().values()), config.grad_clip)
            self._pytorch_optimizer.step()
            for state in states:
                state.apply()
            parts = dict(zip(parts, torch.stack([torch.as_tensor(v) for v in parts.values()]).tolist()))
            self._global_step += 1
            record = {"step": self._global_step, "seconds": time.perf_counter() - start, **parts}
            if captured is not None:     # replayed as a CUDA graph, or eagerly (batch too large, capture failed)
                record["replayed"] = captured.replays > replays
            self.history.append(record)
            losses.append(parts["loss"])
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            self._report_step(parts["loss"], callbacks, all_losses)
            if eval_every and (step + 1) % eval_every == 0:
                seed_k = eval_seed + n_evaluations if resample_eval_support else eval_seed
                n_evaluations += 1
                scores = self.evaluate_fewshot(data, seed=seed_k, tasks=eval_tasks, fast=fast)
                self.history.append({"step": self._global_step, "eval_seed": seed_k, "eval_roc_auc": scores["roc_auc"],
                                     "eval_pr_auc": scores["pr_auc"], "eval_per_task": scores["per_task"]})
            if checkpoint_interval and (step + 1) % checkpoint_interval == 0:
                self.save_checkpoint(max_checkpoints_to_keep)
        if steps:
            self.save_checkpoint(max_checkpoints_to_keep)
            write_history(self.history, self.model_dir)
        return float(np.mean(losses)) if losses else 0.0

    def _report_step(self, loss: float, callbacks, all_losses: Optional[List[float]]) -> None:
        """DeepChem's per-step duties: loss list, callbacks, TensorBoard and W&B logging."""
        step = self._global_step
        if all_losses is not None:
            all_losses.append(loss)
        for callback in callbacks:
            callback(self, step)
        if step % self.log_frequency == 0:
            if self.tensorboard:
                self._log_scalar_to_tensorboard("loss", loss, step)
            if self.wandb_logger is not None:
                self.wandb_logger.log_data({"train/loss": loss}, step=step)

    def evaluate(self, dataset, metrics=DEFAULT_METRICS, transformers=(), per_task_metrics: bool = False,
                 **kwargs):
        """DeepChem's ``evaluate`` with few-shot semantics: ``metrics`` on ``dataset``'s meta-test
        properties, fixed supports of seed 0 (:meth:`evaluate_fewshot`); ``{metric name: mean}``, and
        the per-property scores too with ``per_task_metrics``. Works with ``dc.hyper`` and
        ``dc.models.ValidationCallback``."""
        if list(transformers):
            raise ValueError("few-shot labels are 0/1 activities: transformers are not applied, pass none")
        metrics = [metrics] if isinstance(metrics, dc.metrics.Metric) else list(metrics)
        data = as_fewshot(dataset, self.n_tasks, self.test_task_ids, self.card.get("tasks"))
        result = self.evaluate_fewshot(data, metrics=metrics)
        scores = {m.name: result[m.name] for m in metrics}
        if not per_task_metrics:
            return scores
        return scores, {m.name: np.array([s[m.name] for s in result["per_task"].values()]) for m in metrics}

    def save(self) -> None:
        """Save a checkpoint and the settings (what ``dc.hyper`` calls after ``fit``)."""
        self.save_checkpoint()

    def predict(self, *args, **kwargs):
        raise NotImplementedError(PREDICT_INSTEAD.format(method="predict"))

    def predict_on_batch(self, *args, **kwargs):
        raise NotImplementedError(PREDICT_INSTEAD.format(method="predict_on_batch"))

    def predict_embedding(self, *args, **kwargs):
        raise NotImplementedError(PREDICT_INSTEAD.format(method="predict_embedding"))

    def predict_uncertainty(self, *args, **kwargs):
        raise NotImplementedError(PREDICT_INSTEAD.format(method="predict_uncertainty"))
        return self.history

    # ------------------------------------------------------------------ prediction
    def parameter_summary(self) -> Dict[str, int]:
        """Frozen and tuned parameter counts, per block."""
        return self.model.parameter_summary()
