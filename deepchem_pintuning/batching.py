"""Turn featurized molecules into PyTorch Geometric mini-batches."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from deepchem.feat.graph_data import GraphData
from torch_geometric.data import Batch, Data


def graph_to_data(graph: GraphData) -> Data:
    """Convert one :class:`PretrainGNNFeaturizer` graph to a PyG ``Data`` with integer features."""
    return Data(x=torch.as_tensor(np.asarray(graph.node_features), dtype=torch.long),
                edge_index=torch.as_tensor(np.asarray(graph.edge_index), dtype=torch.long),
                edge_attr=torch.as_tensor(np.asarray(graph.edge_features), dtype=torch.long))


def collate_graphs(graphs: Sequence[GraphData], device: Optional[torch.device] = None) -> Batch:
    """Batch featurized molecules into one disconnected PyG graph.

    Examples
    --------
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> batch = collate_graphs(PretrainGNNFeaturizer().featurize(["CCO", "C#N"]))
    >>> batch.num_graphs, batch.x.shape, batch.edge_attr.dtype
    (2, torch.Size([5, 2]), torch.int64)
    """
    batch = Batch.from_data_list([graph_to_data(g) for g in graphs])
    return batch.to(device) if device is not None else batch
