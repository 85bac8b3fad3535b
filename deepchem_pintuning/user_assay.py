"""A user's own assay as a Pin-Tuning episode: labelled support SMILES + query SMILES."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Sequence, Tuple, TypeVar

import deepchem as dc
import numpy as np

from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.episodes import Episode
from deepchem_pintuning.episode_batch import PackedGraphs
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
from deepchem_pintuning.molecule_graph import FeaturizerProcess, FlatGraphs, flat_graphs

logger = logging.getLogger(__name__)

MIN_PER_CLASS = 2
Payload = TypeVar("Payload")


def featurize_with_reasons(smiles: Sequence[str], kekulize: bool = False) -> Tuple[List, List[int], List[str]]:
    """Featurize ``smiles`` (each parsed once); return the graphs, their positions, and a reason per input.

    The reason is ``""`` for a featurized molecule.

    Examples
    --------
    >>> graphs, kept, reasons = featurize_with_reasons(["CCO", "", "C1CC", "[Na+].[Cl-]"])
    >>> kept, reasons[:3]
    ([0, 3], ['', 'empty SMILES', 'RDKit could not parse the SMILES'])
    """
    featurizer = PretrainGNNFeaturizer(kekulize=kekulize)
    graphs, kept, reasons = [], [], []
    for position, text in enumerate(smiles):
        graph, reason = featurizer.featurize_one(text)
        if graph is not None:
            graphs.append(graph)
            kept.append(position)
        reasons.append(reason or "")
    return graphs, kept, reasons


@dataclass
class FeaturizedLibrary:
    """A list of SMILES with each distinct SMILES featurized once (copies share one graph, hence one score)."""

    graphs: PackedGraphs        # the distinct SMILES that could be featurized
    featurized: np.ndarray      # [len(graphs)] their positions among the distinct SMILES
    distinct_index: np.ndarray  # [n_inputs] position of each input among the distinct SMILES
    reasons: List[str]          # per input: why it cannot be featurized ("" when it can)

    def __len__(self) -> int:
        return len(self.distinct_index)


def _distinct(smiles: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """The distinct SMILES in order of appearance, and each input's position among them."""
    distinct = list(dict.fromkeys(smiles))
    position = {s: i for i, s in enumerate(distinct)}
    return distinct, np.array([position[s] for s in smiles], dtype=np.int64)


def _library(flat: FlatGraphs, index: np.ndarray) -> FeaturizedLibrary:
    return FeaturizedLibrary(PackedGraphs.from_flat(flat), flat.kept, index, [flat.reasons[i] for i in index])


def featurize_library(smiles: Sequence[str], kekulize: bool = False) -> FeaturizedLibrary:
    """Featurize the distinct SMILES of ``smiles`` once each.

    Examples
    --------
    >>> library = featurize_library(["CCO", "C1CC", "CCO"])
    >>> len(library.graphs), library.distinct_index.tolist(), library.reasons
    (1, [0, 1, 0], ['', 'RDKit could not parse the SMILES', ''])
    """
    distinct, index = _distinct(smiles)
    return _library(flat_graphs(distinct, kekulize), index)


def featurize_ahead(chunks: Iterable[Tuple[Payload, Sequence[str]]],
                    kekulize: bool = False) -> Iterator[Tuple[Payload, FeaturizedLibrary]]:
    """``(payload, smiles)`` chunks -> ``(payload, featurized)``, chunk ``k + 1`` featurized in a
    worker process while the caller scores chunk ``k``.

    A process, not a thread: RDKit parsing holds the interpreter lock, and in a thread it slowed
    the scoring threads by about a fifth. The worker
    (:class:`~deepchem_pintuning.molecule_graph.FeaturizerProcess`) imports RDKit and numpy only
    and returns flat arrays.

    Examples
    --------
    >>> [(name, len(lib.graphs)) for name, lib in featurize_ahead([("a", ["CCO", "CC"]), ("b", ["C1C"])])]
    [('a', 2), ('b', 0)]
    """
    def request(chunk):
        """Send ``(payload, smiles)`` to the worker; keep ``(payload, each input's distinct position)``."""
        if chunk is None:
            return None
        distinct, index = _distinct(chunk[1])
        process.request(distinct)
        return chunk[0], index

    chunks = iter(chunks)
    with FeaturizerProcess(kekulize) as process:
        pending = request(next(chunks, None))
        while pending is not None:
            flat = process.result()
            following = request(next(chunks, None))  # featurized while the caller scores this chunk
            yield pending[0], _library(flat, pending[1])
            pending = following


def featurize_or_skip(smiles: Sequence[str], role: str,
                      kekulize: bool = False) -> Tuple[List, List[int], List[Tuple[str, str]]]:
    """Featurize ``smiles``; return the graphs, the positions kept, and ``(smiles, reason)`` of the skipped."""
    graphs, kept, reasons = featurize_with_reasons(smiles, kekulize)
    skipped = [(s, r) for s, r in zip(smiles, reasons) if r]
    if skipped:
        logger.warning("%s: skipped %d of %d molecules that cannot be featurized, e.g. %r (%s)",
                       role, len(skipped), len(smiles), skipped[0][0], skipped[0][1])
    return graphs, kept, skipped


def featurize_support(support_smiles: Sequence[str], support_labels: Sequence[float],
                      kekulize: bool = False) -> Tuple[List, np.ndarray, List[int]]:
    """Featurized support molecules, their 0/1 labels and positions; unparsable molecules skipped and logged.

    Raises ``ValueError`` for labels other than 0/1 and when fewer than two actives or two inactives remain.

    Examples
    --------
    >>> graphs, labels, kept = featurize_support(["CCO", "CCN", "C1C", "CCC", "CCCl"], [1, 1, 1, 0, 0])
    >>> len(graphs), labels.tolist(), kept
    (4, [1.0, 1.0, 0.0, 0.0], [0, 1, 3, 4])
    """
    labels = np.asarray(support_labels, dtype=np.float64)
    if len(labels) != len(support_smiles):
        raise ValueError(f"{len(support_smiles)} support SMILES but {len(labels)} labels")
    if np.isnan(labels).any() or not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("support labels must be 0 (inactive) or 1 (active), without missing values")
    graphs, kept, _ = featurize_or_skip(support_smiles, "support", kekulize)
    labels = labels[kept]
    n_active, n_inactive = int(labels.sum()), int((labels == 0).sum())
    if n_active < MIN_PER_CLASS or n_inactive < MIN_PER_CLASS:
        raise ValueError(f"the support set needs at least {MIN_PER_CLASS} actives and {MIN_PER_CLASS} "
                         f"inactives; got {n_active} actives and {n_inactive} inactives")
    return graphs, labels, kept


def build_user_episode(support_smiles: Sequence[str], support_labels: Sequence[float],
                       query_smiles: Sequence[str], n_tasks: int, test_task_ids: Sequence[int],
                       kekulize: bool = False) -> Tuple[FewShotDataset, Episode, List[int]]:
    """Wrap a new assay as a one-episode dataset for a model trained on ``n_tasks`` properties.

    The new assay is property ``n_tasks`` (the model's spare, zero-initialised property row); the
    model's meta-training properties are the auxiliary properties, all with missing labels.
    Molecules that cannot be featurized are skipped and logged; the third value lists the
    positions in ``query_smiles`` of the query molecules kept.

    Examples
    --------
    >>> data, ep, kept = build_user_episode(["CCO", "CCN", "CCC", "CCCl"], [1, 1, 0, 0], ["CCBr", "C1C"], 3, [2])
    >>> ep.task_index, ep.aux_task_indices.tolist(), ep.query.tolist(), kept
    (3, [0, 1], [4], [0])
    """
    support_graphs, labels, support_kept = featurize_support(support_smiles, support_labels, kekulize)
    query_graphs, query_kept, _ = featurize_or_skip(query_smiles, "query", kekulize)
    if not query_graphs:
        raise ValueError("no query molecule to score")
    graphs = support_graphs + query_graphs
    n_support = len(support_graphs)
    y = np.zeros((len(graphs), n_tasks + 1))
    w = np.zeros_like(y)
    y[:n_support, n_tasks], w[:n_support, n_tasks] = labels, 1.0
    tasks = [f"property_{i}" for i in range(n_tasks)] + ["user_assay"]
    ids = [support_smiles[i] for i in support_kept] + [query_smiles[i] for i in query_kept]
    dataset = dc.data.NumpyDataset(np.array(graphs, dtype=object), y, w, ids=np.array(ids))
    train_tasks = [t for i, t in enumerate(tasks[:-1]) if i not in set(test_task_ids)]
    data = FewShotDataset("user_assay", dataset, tasks, train_tasks, ["user_assay"], kekulized=kekulize)
    support = np.arange(n_support)
    episode = Episode(task="user_assay", task_index=n_tasks, support=support,
                      support_labels=labels.astype(np.float32),
                      query=np.arange(n_support, len(graphs)),
                      query_labels=np.full(len(query_graphs), np.nan, dtype=np.float32),
                      aux_task_indices=np.array([data.task_index(t) for t in train_tasks], dtype=np.int64))
    return data, episode, query_kept
