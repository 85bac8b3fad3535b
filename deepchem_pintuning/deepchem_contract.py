"""What PinTuningModel needs to keep DeepChem's ``TorchModel`` contract with few-shot semantics.

* **Datasets.** ``fit`` / ``evaluate`` take a :class:`~deepchem_pintuning.data.FewShotDataset` or
  a plain ``dc.data.Dataset`` whose ``X`` holds :class:`PretrainGNNFeaturizer` graphs and whose
  task names are the model's properties in column order; the meta-test properties are the
  model's ``test_task_ids``, the others are meta-training properties (:func:`as_fewshot`).
* **Epochs.** One epoch of episodic meta-training is ``ceil(n_train_properties / tasks_per_step)``
  outer steps: every training property is drawn about ``episodes_per_task`` times
  (:func:`steps_for_epochs`).
* **Constructor.** DeepChem's own keyword arguments (``batch_size``, ``learning_rate``,
  ``optimizer``, ``tensorboard``, ``wandb_logger``, ``log_frequency``) go to ``TorchModel``;
  ``learning_rate`` is the meta-learning rate (:func:`split_torchmodel_kwargs`).
* **Prediction.** A few-shot model scores molecules for an assay *given its labelled support
  set*, which ``predict(dataset)`` cannot express: those methods raise ``NotImplementedError``
  naming the methods to use (:data:`PREDICT_INSTEAD`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import deepchem as dc
import numpy as np
import pandas as pd

from deepchem_pintuning.data import FewShotDataset

TORCHMODEL_KWARGS = ("batch_size", "learning_rate", "optimizer", "tensorboard", "wandb_logger", "log_frequency")
HISTORY_FILE = "training_history.csv"
PREDICT_INSTEAD = (
    "PinTuningModel scores molecules for an assay given that assay's labelled support set, which {method}() "
    "cannot express: use predict_smiles(support_smiles, support_labels, query_smiles) (or adapt_to_assay + "
    "score_smiles for a library), and evaluate() / evaluate_fewshot() for the meta-test properties of a dataset")


def split_torchmodel_kwargs(kwargs: Dict) -> Tuple[Dict, Dict]:
    """``(TorchModel keyword arguments, Pin-Tuning settings)``; ``learning_rate`` becomes ``meta_lr``.

    Examples
    --------
    >>> split_torchmodel_kwargs({"learning_rate": 1e-4, "tensorboard": True, "n_shot": 5})
    ({'tensorboard': True}, {'n_shot': 5, 'meta_lr': 0.0001})
    """
    base = {k: v for k, v in kwargs.items() if k in TORCHMODEL_KWARGS}
    settings = {k: v for k, v in kwargs.items() if k not in TORCHMODEL_KWARGS}
    if "learning_rate" in base:
        rate = base.pop("learning_rate")
        if not isinstance(rate, (int, float)):
            raise ValueError("learning_rate must be a number (the meta-learning rate); pass an optimizer with a "
                             "schedule through optimizer= instead")
        settings["meta_lr"] = float(rate)
    return base, settings


def as_fewshot(dataset, n_tasks: int, test_task_ids: Sequence[int],
               known_tasks: Optional[Sequence[str]] = None) -> FewShotDataset:
    """``dataset`` as a :class:`FewShotDataset` with the model's property split (see the module docstring).

    A dataset without task names (``NumpyDataset``: 0, 1, ...) is taken to have the model's
    properties, ``known_tasks``, in column order.
    """
    if isinstance(dataset, FewShotDataset):
        return dataset
    if not isinstance(dataset, dc.data.Dataset):
        raise TypeError(f"expected a FewShotDataset or a deepchem Dataset, got {type(dataset).__name__}")
    tasks = [str(t) for t in dataset.get_task_names()]
    if known_tasks is not None and tasks == [str(i) for i in range(len(tasks))]:
        tasks = list(known_tasks)
    if len(tasks) != n_tasks:
        raise ValueError(f"the dataset has {len(tasks)} tasks but the model was built for {n_tasks} properties")
    first = dataset.X[0] if len(dataset) else None
    if not (hasattr(first, "node_features") and np.asarray(first.node_features).shape[1:] == (2,)):
        raise ValueError("the dataset's X must hold PretrainGNNFeaturizer graphs (2 integer atom features); "
                         "featurize with deepchem_pintuning.PretrainGNNFeaturizer()")
    test = [tasks[i] for i in test_task_ids]
    return FewShotDataset("dataset", dataset, tasks, [t for t in tasks if t not in test], test)


def steps_for_epochs(nb_epoch: int, data: FewShotDataset, tasks_per_step: int) -> int:
    """Outer steps of ``nb_epoch`` epochs (one epoch: every training property drawn about once per step slot).

    Examples
    --------
    >>> from deepchem_pintuning.data import load_fewshot
    >>> steps_for_epochs(2, load_fewshot("toxcast-CLD"), tasks_per_step=5)   # 14 training properties
    6
    """
    return nb_epoch * math.ceil(len(data.train_tasks) / tasks_per_step)


def write_history(history: List[Dict], model_dir: str) -> Path:
    """The training records (one row per outer step or evaluation) as ``model_dir/training_history.csv``."""
    rows = [{k: v for k, v in record.items() if not isinstance(v, dict)} for record in history]
    path = Path(model_dir, HISTORY_FILE)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
