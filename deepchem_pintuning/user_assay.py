"""A user's own assay as a Pin-Tuning episode: labelled support SMILES + query SMILES."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import deepchem as dc
import numpy as np

from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.episodes import Episode
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer

MIN_PER_CLASS = 2


def _featurize(smiles: Sequence[str], role: str, featurizer: PretrainGNNFeaturizer) -> List:
    graphs = []
    for s in smiles:
        reason = featurizer.explain_failure(s)
        if reason is not None:
            raise ValueError(f"{role} molecule {s!r} cannot be featurized: {reason}")
        graphs.append(featurizer.featurize([s])[0])
    return graphs


def build_user_episode(support_smiles: Sequence[str], support_labels: Sequence[float],
                       query_smiles: Sequence[str], n_tasks: int,
                       test_task_ids: Sequence[int]) -> Tuple[FewShotDataset, Episode]:
    """Wrap a new assay as a one-episode dataset for a model trained on ``n_tasks`` properties.

    The new assay is property ``n_tasks`` (the model's spare, zero-initialised property row); the
    model's meta-training properties are the auxiliary properties, all with missing labels.

    Examples
    --------
    >>> data, ep = build_user_episode(["CCO", "CCN", "CCC", "CCCl"], [1, 1, 0, 0], ["CCBr"], 3, [2])
    >>> ep.task_index, ep.aux_task_indices.tolist(), ep.query.tolist()
    (3, [0, 1], [4])
    """
    labels = np.asarray(support_labels, dtype=np.float64)
    if len(labels) != len(support_smiles):
        raise ValueError(f"{len(support_smiles)} support SMILES but {len(labels)} labels")
    if np.isnan(labels).any() or not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("support labels must be 0 (inactive) or 1 (active), without missing values")
    n_active, n_inactive = int(labels.sum()), int((labels == 0).sum())
    if n_active < MIN_PER_CLASS or n_inactive < MIN_PER_CLASS:
        raise ValueError(f"the support set needs at least {MIN_PER_CLASS} actives and {MIN_PER_CLASS} "
                         f"inactives; got {n_active} actives and {n_inactive} inactives")
    if len(query_smiles) == 0:
        raise ValueError("no query molecules to score")
    featurizer = PretrainGNNFeaturizer()
    graphs = _featurize(support_smiles, "support", featurizer) + _featurize(query_smiles, "query", featurizer)
    n_support = len(support_smiles)
    y = np.zeros((len(graphs), n_tasks + 1))
    w = np.zeros_like(y)
    y[:n_support, n_tasks], w[:n_support, n_tasks] = labels, 1.0
    tasks = [f"property_{i}" for i in range(n_tasks)] + ["user_assay"]
    dataset = dc.data.NumpyDataset(np.array(graphs, dtype=object), y, w,
                                   ids=np.array(list(support_smiles) + list(query_smiles)))
    train_tasks = [t for i, t in enumerate(tasks[:-1]) if i not in set(test_task_ids)]
    data = FewShotDataset("user_assay", dataset, tasks, train_tasks, ["user_assay"])
    support = np.arange(n_support)
    episode = Episode(task="user_assay", task_index=n_tasks, support=support,
                      support_labels=labels.astype(np.float32),
                      query=np.arange(n_support, len(graphs)),
                      query_labels=np.full(len(query_smiles), np.nan, dtype=np.float32),
                      aux_task_indices=np.array([data.task_index(t) for t in train_tasks], dtype=np.int64))
    return data, episode
