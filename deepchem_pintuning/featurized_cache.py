"""A cache of featurized datasets that is read without unpickling anything.

DeepChem's own dataset cache (``DiskDataset`` shards) stores the ``GraphData`` objects as pickles:
a file planted in the cache folder would run code when the dataset is loaded. Here a featurized
dataset is one ``.npz`` of plain arrays (atom and bond features concatenated over molecules with
offsets, labels, weights, ids and task names as numeric or unicode arrays), written atomically and
read with ``allow_pickle=False``. A cache file that cannot be read that way is ignored (and
rewritten by the caller), never trusted.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import deepchem as dc
import numpy as np
from deepchem.feat.graph_data import GraphData

logger = logging.getLogger(__name__)

_ARRAYS = ("node_features", "node_offsets", "edge_index", "edge_features", "edge_offsets", "y", "w", "ids", "tasks")


def save_featurized(path: Path, dataset: dc.data.Dataset, tasks: List[str]) -> None:
    """Write the graphs, labels, weights and ids of ``dataset`` to ``path`` (an ``.npz``), atomically.

    Examples
    --------
    >>> import tempfile
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> graphs = PretrainGNNFeaturizer().featurize(["CCO", "c1ccccc1"])
    >>> data = dc.data.NumpyDataset(graphs, np.array([[1.0], [0.0]]), ids=np.array(["CCO", "c1ccccc1"]))
    >>> path = Path(tempfile.mkdtemp()) / "cache.npz"
    >>> save_featurized(path, data, ["active"])
    >>> loaded, tasks = load_featurized(path)
    >>> tasks, loaded.X[1].edge_index.shape, loaded.ids.tolist()
    (['active'], (2, 12), ['CCO', 'c1ccccc1'])
    """
    X = np.asarray(dataset.X)
    common = {"y": np.asarray(dataset.y, dtype=np.float64).reshape(len(X), -1),
              "w": np.asarray(dataset.w, dtype=np.float64).reshape(len(X), -1),
              "ids": np.asarray([str(i) for i in dataset.ids], dtype=str), "tasks": np.asarray(tasks, dtype=str)}
    if X.dtype != object:                     # fingerprints, descriptors: stored as they are
        _write(path, {"X": X, **common})
        return
    graphs = list(X)
    if not all(hasattr(g, "node_features") and np.asarray(g.node_features).shape[1:] == (2,) for g in graphs):
        kind = type(graphs[0]).__name__ if graphs else "no"
        raise ValueError(f"the featurizer produced {kind} objects, which cannot be cached without pickling: use "
                         "PretrainGNNFeaturizer or a featurizer that returns numeric arrays")
    arrays = {
        "node_features": np.concatenate([g.node_features for g in graphs]).astype(np.int64),
        "node_offsets": np.cumsum([0] + [g.num_nodes for g in graphs]),
        "edge_index": np.concatenate([g.edge_index for g in graphs], axis=1).astype(np.int64),
        "edge_features": np.concatenate([g.edge_features for g in graphs]).astype(np.int64),
        "edge_offsets": np.cumsum([0] + [g.num_edges for g in graphs]),
        **common,
    }
    _write(path, arrays)


def _write(path: Path, arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, suffix=".npz.partial")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


def load_featurized(path: Path) -> Optional[Tuple[dc.data.NumpyDataset, List[str]]]:
    """``(dataset, tasks)`` from a file written by :func:`save_featurized`; None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = _ARRAYS if "X" not in stored.files else ("X", "y", "w", "ids", "tasks")
            arrays = {name: stored[name] for name in names}
    except (ValueError, OSError, KeyError, EOFError) as error:   # not ours, truncated, or holding pickles
        logger.warning("ignoring the unreadable featurization cache %s (%s); featurizing again", path, error)
        return None
    if "X" in arrays:
        return dc.data.NumpyDataset(arrays["X"], arrays["y"], arrays["w"], ids=arrays["ids"].astype(object)), \
            arrays["tasks"].tolist()
    nodes, edges = arrays["node_offsets"], arrays["edge_offsets"]
    graphs = [GraphData(node_features=arrays["node_features"][nodes[i]:nodes[i + 1]],
                        edge_index=arrays["edge_index"][:, edges[i]:edges[i + 1]],
                        edge_features=arrays["edge_features"][edges[i]:edges[i + 1]])
              for i in range(len(nodes) - 1)]
    X = np.empty(len(graphs), dtype=object)
    X[:] = graphs
    dataset = dc.data.NumpyDataset(X, arrays["y"], arrays["w"], ids=arrays["ids"].astype(object))
    return dataset, arrays["tasks"].tolist()
