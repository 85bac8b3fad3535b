"""The two self-supervised objectives of Hu et al. (ICLR 2020): attribute masking and context prediction.

Each objective is a head module on the encoder's atom vectors whose ``forward`` returns
``(loss, accuracy)`` for a batch; :mod:`deepchem_pintuning.pretrain` runs them (the objectives are
described there, with the outputs of a run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import subgraph

from deepchem_pintuning.encoder import PretrainedGNN
from deepchem_pintuning.molecule_graph import MASK_ATOM_TYPE, MASK_BOND_TYPE

#: Output classes of the heads, as in pretrain-gnns (atom types 0..118, bond types 0..3).
N_ATOM_CLASSES = MASK_ATOM_TYPE
N_BOND_CLASSES = 4


# --------------------------------------------------------------------------- attribute masking
@dataclass
class MaskedBatch:
    """A batch with masked attributes and the original values to predict."""

    batch: Batch
    atom_index: torch.Tensor
    atom_labels: torch.Tensor
    bond_index: torch.Tensor  # masked bonds, one directed edge per bond (source < target)
    bond_labels: torch.Tensor


def mask_attributes(graphs: Sequence[Data], mask_rate: float, generator: torch.Generator,
                    mask_edge: bool = False) -> MaskedBatch:
    """Batch ``graphs`` and mask ``int(n_atoms * mask_rate + 1)`` atoms per molecule.

    Examples
    --------
    >>> from deepchem_pintuning.pretrain import load_molecule_graphs
    >>> graphs, _ = load_molecule_graphs(molecules=2)
    >>> masked = mask_attributes(graphs, 0.15, torch.Generator().manual_seed(0), mask_edge=True)
    >>> bool((masked.batch.x[masked.atom_index, 0] == MASK_ATOM_TYPE).all())
    True
    >>> len(masked.atom_index) == sum(int(g.num_nodes * 0.15 + 1) for g in graphs)
    True
    """
    batch = Batch.from_data_list(list(graphs))
    picks = []
    for i, offset in enumerate(batch.ptr[:-1].tolist()):
        n = int(batch.ptr[i + 1]) - offset
        picks.append(torch.randperm(n, generator=generator)[: int(n * mask_rate + 1)] + offset)
    atom_index = torch.cat(picks)
    atom_labels = batch.x[atom_index, 0].clone()
    batch.x = batch.x.clone()
    batch.x[atom_index] = torch.tensor([MASK_ATOM_TYPE, 0])
    bond_index = torch.empty(0, dtype=torch.long)
    bond_labels = torch.empty(0, dtype=torch.long)
    if mask_edge and batch.edge_index.numel():
        masked = torch.zeros(batch.num_nodes, dtype=torch.bool)
        masked[atom_index] = True
        touches = masked[batch.edge_index[0]] | masked[batch.edge_index[1]]
        bond_index = torch.nonzero(touches & (batch.edge_index[0] < batch.edge_index[1])).flatten()
        bond_labels = batch.edge_attr[bond_index, 0].clone()
        batch.edge_attr = batch.edge_attr.clone()
        batch.edge_attr[touches] = torch.tensor([MASK_BOND_TYPE, 0])
    return MaskedBatch(batch, atom_index, atom_labels, bond_index, bond_labels)


class AttributeMasking(nn.Module):
    """Linear heads predicting masked atom types (and bond types) from the encoder's atom vectors."""

    def __init__(self, emb_dim: int, mask_rate: float = 0.15, mask_edge: bool = False):
        super().__init__()
        self.mask_rate, self.mask_edge = mask_rate, mask_edge
        self.atom_head = nn.Linear(emb_dim, N_ATOM_CLASSES)
        self.bond_head = nn.Linear(emb_dim, N_BOND_CLASSES) if mask_edge else None

    def forward(self, encoder: PretrainedGNN, graphs: Sequence[Data], generator: torch.Generator,
                device: torch.device) -> Tuple[torch.Tensor, float]:
        """Masked-attribute cross-entropy and masked-atom accuracy on one batch."""
        masked = mask_attributes(graphs, self.mask_rate, generator, self.mask_edge)
        batch = masked.batch.to(device)
        h = encoder.node_embeddings(batch)
        logits = self.atom_head(h[masked.atom_index.to(device)])
        labels = masked.atom_labels.to(device)
        loss = nn.functional.cross_entropy(logits, labels)
        if self.bond_head is not None and masked.bond_index.numel():
            ends = batch.edge_index[:, masked.bond_index.to(device)]
            bond_logits = self.bond_head(h[ends[0]] + h[ends[1]])
            loss = loss + nn.functional.cross_entropy(bond_logits, masked.bond_labels.to(device))
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return loss, accuracy


# --------------------------------------------------------------------------- context prediction
@dataclass
class ContextPairs:
    """Batched substructures (with their centre atoms) and contexts (with their anchor atoms)."""

    substructs: Batch
    centers: torch.Tensor
    contexts: Batch
    anchors: torch.Tensor
    anchor_graph: torch.Tensor  # which context graph each anchor atom belongs to


def context_pairs(graphs: Sequence[Data], k: int, r1: int, r2: int,
                  generator: torch.Generator) -> Optional[ContextPairs]:
    """Cut a K-hop substructure and an (r1, r2]-hop context around a random centre of every molecule.

    Molecules whose context or substructure/context overlap is empty are left out; returns None
    when no molecule of the batch has a context.

    Examples
    --------
    >>> from deepchem_pintuning.pretrain import load_molecule_graphs
    >>> graphs, _ = load_molecule_graphs(molecules=8)
    >>> pairs = context_pairs(graphs, k=5, r1=4, r2=7, generator=torch.Generator().manual_seed(0))
    >>> pairs.substructs.num_graphs == pairs.contexts.num_graphs == len(pairs.centers)
    True
    """
    subs, ctxs, centers, anchors, anchor_graph = [], [], [], [], []
    for graph in graphs:
        n = graph.num_nodes
        center = int(torch.randint(n, (1,), generator=generator))
        ei = graph.edge_index.numpy()
        adjacency = csr_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n))
        hops = shortest_path(adjacency, unweighted=True, indices=center)
        sub_nodes = np.flatnonzero(hops <= k)
        ctx_nodes = np.flatnonzero((hops > r1) & (hops <= r2))
        overlap = np.flatnonzero(hops[ctx_nodes] <= k)  # positions inside ctx_nodes
        if len(ctx_nodes) == 0 or len(overlap) == 0:
            continue
        for nodes, out in ((sub_nodes, subs), (ctx_nodes, ctxs)):
            index = torch.as_tensor(nodes)
            edge_index, edge_attr = subgraph(index, graph.edge_index, graph.edge_attr,
                                             relabel_nodes=True, num_nodes=n)
            out.append(Data(x=graph.x[index], edge_index=edge_index, edge_attr=edge_attr))
        centers.append(int(np.searchsorted(sub_nodes, center)))
        anchors.append(torch.as_tensor(overlap))
        anchor_graph.append(torch.full((len(overlap),), len(ctxs) - 1))
    if not subs:
        return None
    substructs, contexts = Batch.from_data_list(subs), Batch.from_data_list(ctxs)
    center_index = torch.as_tensor(centers) + substructs.ptr[:-1]
    anchor_graph_t = torch.cat(anchor_graph)
    anchor_index = torch.cat(anchors) + contexts.ptr[:-1][anchor_graph_t]
    return ContextPairs(substructs, center_index, contexts, anchor_index, anchor_graph_t)


class ContextPrediction(nn.Module):
    """Context GNN and the negative-sampling loss of Hu et al.'s context prediction."""

    def __init__(self, num_layer: int, emb_dim: int, gnn_type: str = "gin", context_size: int = 3,
                 neg_samples: int = 1, dropout: float = 0.0):
        super().__init__()
        self.k, self.r1, self.r2 = num_layer, num_layer - 1, num_layer - 1 + context_size
        self.neg_samples = neg_samples
        self.context_gnn = PretrainedGNN(gnn_type, num_layer=context_size, emb_dim=emb_dim, dropout=dropout)

    def forward(self, encoder: PretrainedGNN, graphs: Sequence[Data], generator: torch.Generator,
                device: torch.device) -> Tuple[torch.Tensor, float]:
        """Binary cross-entropy of positive and shifted-negative pairs, and pair accuracy."""
        pairs = context_pairs(graphs, self.k, self.r1, self.r2, generator)
        if pairs is None or len(pairs.centers) < 2:
            raise ValueError("context prediction needs at least 2 molecules with a context in a batch; "
                             "use a larger batch or molecules with more atoms")
        center = encoder.node_embeddings(pairs.substructs.to(device))[pairs.centers.to(device)]
        anchors = self.context_gnn.node_embeddings(pairs.contexts.to(device))[pairs.anchors.to(device)]
        context = global_mean_pool(anchors, pairs.anchor_graph.to(device))
        positive = (center * context).sum(1)
        n = len(center)
        negative = torch.cat([(center * context.roll(shift + 1, 0)).sum(1)
                              for shift in range(min(self.neg_samples, n - 1))])
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = (bce(positive, torch.ones_like(positive))
                + self.neg_samples * bce(negative, torch.zeros_like(negative)))
        correct = (positive > 0).sum() + (negative < 0).sum()
        return loss, correct.item() / (len(positive) + len(negative))
