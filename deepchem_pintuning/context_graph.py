"""Molecule-property context graph of an episode and its encoder (GS-Meta lineage).

Nodes, in order: the property nodes (target property first, then the auxiliary properties), the
support molecules, the query molecules. Molecule nodes start from the frozen encoder's molecule
vectors; property nodes from a learned embedding per property.

Edges:

* label edges (both directions, weight 1) between a molecule and a property, typed by the label:
  ``INACTIVE`` = 1, ``ACTIVE`` = 2, ``MISSING`` = 3. Support molecules connect to the target and to
  every auxiliary property; query molecules only to the auxiliary properties (their target label is
  what is being predicted). With ``query_aux_offset=-1`` (official code, inherited from GS-Meta) a
  query molecule's label on auxiliary property ``k`` is attached to property node ``k - 1`` (the
  first one to the target node, none to the last auxiliary node); the default 0 wires it correctly.
* similarity edges (type ``SIMILAR`` = 0, directed, weight = score), recomputed in every layer: an
  edge network scores every ordered pair of molecule nodes from ``exp(-|x_i - x_j|)``, the
  diagonal is zeroed and each row keeps its ``top_k`` best scores.

Each of the ``num_layers`` node updates is::

    x_v <- Dropout(LeakyReLU(BatchNorm( mean_{u->v} w_uv (W_n x_u + T[type_uv]) + W_r x_v )))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

SIMILAR, INACTIVE, ACTIVE, MISSING = 0, 1, 2, 3
NUM_EDGE_TYPES = 4


@dataclass
class LabelEdges:
    """Typed molecule-property edges of one episode (node indices into the context graph)."""

    edge_index: torch.Tensor  # [2, E]
    edge_type: torch.Tensor   # [E]


def label_edge_types(labels: torch.Tensor) -> torch.Tensor:
    """Edge type of each label: ``ACTIVE`` (> 0.5), ``INACTIVE`` (< 0.5), ``MISSING`` (NaN).

    Examples
    --------
    >>> label_edge_types(torch.tensor([1.0, 0.0, float("nan")])).tolist()
    [2, 1, 3]
    """
    kind = torch.full(labels.shape, MISSING, dtype=torch.long, device=labels.device)
    return kind.masked_fill_(labels > 0.5, ACTIVE).masked_fill_(labels < 0.5, INACTIVE)  # no boolean indexing: no sync


def label_edges(support_labels: torch.Tensor, query_aux_labels: torch.Tensor,
                query_aux_offset: int = 0) -> LabelEdges:
    """Build the label edges of an episode.

    Parameters
    ----------
    support_labels: Tensor [n_support, n_props]
        Labels of the support molecules on ``[target, aux_1, ..., aux_{P-1}]``; NaN = missing.
    query_aux_labels: Tensor [n_query, n_props - 1]
        Labels of the query molecules on the auxiliary properties.
    query_aux_offset: int, default 0
        ``-1`` reproduces the official code's off-by-one wiring of query labels.

    Examples
    --------
    >>> nan = float("nan")
    >>> edges = label_edges(torch.tensor([[1.0, 0.0], [0.0, nan]]), torch.tensor([[1.0]]))
    >>> edges.edge_index[:, ::2].tolist()  # property nodes 0-1, support 2-3, query 4
    [[2, 2, 3, 3, 4], [0, 1, 0, 1, 1]]
    >>> edges.edge_type[::2].tolist()
    [2, 1, 1, 3, 2]
    """
    n_support, n_props = support_labels.shape
    mol_offset = n_props
    rows, cols, types = [], [], []

    def add(mol_nodes: torch.Tensor, prop_nodes: torch.Tensor, labels: torch.Tensor) -> None:
        rows.append(mol_nodes)
        cols.append(prop_nodes)
        types.append(label_edge_types(labels))

    s_mol, s_prop = torch.meshgrid(torch.arange(n_support), torch.arange(n_props), indexing="ij")
    add(s_mol.reshape(-1) + mol_offset, s_prop.reshape(-1), support_labels.reshape(-1))
    n_query = query_aux_labels.shape[0]
    if n_query and n_props > 1:
        q_mol, q_aux = torch.meshgrid(torch.arange(n_query), torch.arange(1, n_props), indexing="ij")
        q_prop = q_aux.reshape(-1) + query_aux_offset
        add(q_mol.reshape(-1) + mol_offset + n_support, q_prop, query_aux_labels.reshape(-1))
    mol, prop, kind = torch.cat(rows), torch.cat(cols), torch.cat(types)
    # both directions, interleaved: (mol -> prop, prop -> mol) for every label
    edge_index = torch.stack([torch.stack([mol, prop], 1).reshape(-1), torch.stack([prop, mol], 1).reshape(-1)])
    return LabelEdges(edge_index=edge_index, edge_type=kind.repeat_interleave(2))


class SimilarityEdges(nn.Module):
    """Edge network scoring every ordered pair of molecule nodes; keeps the top-k per row."""

    def __init__(self, dim: int, hidden: int = 100, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, 2 * hidden, 1, bias=False), nn.BatchNorm2d(2 * hidden), nn.LeakyReLU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(2 * hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.LeakyReLU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(hidden, 1, 1))

    def forward(self, mol: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(edge_index, weight)`` among the rows of ``mol`` (local indices)."""
        n = mol.size(0)
        pair = torch.exp(-(mol.unsqueeze(1) - mol.unsqueeze(0)).abs())       # [n, n, d]
        score = torch.sigmoid(self.net(pair.permute(2, 0, 1).unsqueeze(0)))[0, 0]  # [n, n]
        score = score * (1 - torch.eye(n, device=mol.device, dtype=score.dtype))
        k = max(0, min(top_k, n - 1))
        if k == 0:
            return torch.zeros(2, 0, dtype=torch.long, device=mol.device), score.new_zeros(0)
        weight, col = score.topk(k, dim=1)
        row = torch.arange(n, device=mol.device).repeat_interleave(k)
        return torch.stack([row, col.reshape(-1)]), weight.reshape(-1)


class _TypedMeanConv(MessagePassing):
    """``mean_{u->v} w_uv (W_n x_u + T[type_uv]) + W_r x_v``."""

    def __init__(self, dim: int):
        super().__init__(aggr="mean")
        self.neighbour = nn.Linear(dim, dim)
        self.root = nn.Linear(dim, dim)
        self.edge_type_embedding = nn.Embedding(NUM_EDGE_TYPES, dim)
        nn.init.xavier_uniform_(self.edge_type_embedding.weight)

    def forward(self, x, edge_index, edge_type, edge_weight):
        message = self.propagate(edge_index, x=self.neighbour(x),
                                 edge_emb=self.edge_type_embedding(edge_type), weight=edge_weight)
        return message + self.root(x)

    def message(self, x_j, edge_emb, weight):
        return weight.view(-1, 1) * (x_j + edge_emb)


class ContextEncoder(nn.Module):
    """Encode the molecule-property context graph of an episode.

    Parameters
    ----------
    dim: int
        Node width (the encoder's d).
    num_layers: int, default 2
    top_k: int, default 9
        Similarity edges kept per molecule (K - 1 for K-shot).
    edge_hidden: int, default 100
    dropout: float, default 0.1

    Examples
    --------
    >>> enc = ContextEncoder(dim=8, top_k=2).eval()
    >>> props, mols = torch.randn(3, 8), torch.randn(5, 8)
    >>> edges = label_edges(torch.ones(4, 3), torch.zeros(1, 2))
    >>> enc(props, mols, edges).shape
    torch.Size([8, 8])
    """

    def __init__(self, dim: int, num_layers: int = 2, top_k: int = 9, edge_hidden: int = 100,
                 dropout: float = 0.1):
        super().__init__()
        self.top_k = top_k
        self.dropout = dropout
        self.similarity = nn.ModuleList([SimilarityEdges(dim, edge_hidden, dropout) for _ in range(num_layers)])
        self.convs = nn.ModuleList([_TypedMeanConv(dim) for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(dim) for _ in range(num_layers)])

    def forward(self, prop_x: torch.Tensor, mol_x: torch.Tensor, labels: LabelEdges) -> torch.Tensor:
        """Final node vectors ``[n_props + n_mols, dim]`` in the graph's node order."""
        n_props = prop_x.size(0)
        x = nn.functional.dropout(torch.cat([prop_x, mol_x]), self.dropout, self.training)
        label_weight = torch.ones(labels.edge_type.numel(), device=x.device, dtype=x.dtype)
        for similarity, conv, norm in zip(self.similarity, self.convs, self.norms):
            sim_index, sim_weight = similarity(x[n_props:], self.top_k)
            edge_index = torch.cat([labels.edge_index.to(x.device), sim_index + n_props], dim=1)
            edge_type = torch.cat([labels.edge_type.to(x.device),
                                   torch.full_like(sim_weight, SIMILAR, dtype=torch.long)])
            weight = torch.cat([label_weight, sim_weight])
            x = conv(x, edge_index, edge_type, weight)
            x = nn.functional.dropout(nn.functional.leaky_relu(norm(x)), self.dropout, self.training)
        return x
