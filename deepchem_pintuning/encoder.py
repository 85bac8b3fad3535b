"""The pre-trained molecular GNN of Hu et al. (ICLR 2020, "Strategies for Pre-training GNNs").

:class:`PretrainedGNN` reproduces the pretrain-gnns ``GNN`` module (5 layers x 300, GIN or GCN
message passing, batch norm, JK = last) with the same parameter names, so the original ``*.pth``
state dicts load as they are. Forward pass, for layers ``l = 0..L-1``::

    h0 = AtomTypeEmb[type] + ChiralityEmb[chirality]
    m  = Conv_l(h, edges + self loops, BondTypeEmb_l[type] + BondDirEmb_l[dir])
    m  = hook(l, m)                      # MP-Adapter + LayerNorm in Pin-Tuning; identity otherwise
    h  = Dropout(ReLU(BatchNorm_l(m)))   # no ReLU after the last layer

Graph vectors are the mean of the last layer's atom vectors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch
from torch import nn
from torch_geometric.nn import MessagePassing, global_mean_pool
from torch_geometric.utils import add_self_loops, degree

from deepchem_pintuning.molecule_graph import (NUM_ATOM_TYPES, NUM_BOND_DIRECTIONS, NUM_BOND_TYPES,
                                               NUM_CHIRALITY_TAGS, SELF_LOOP_BOND_TYPE)

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]


class _BondConv(MessagePassing):
    """Sum-aggregating message passing with per-layer bond embeddings and self loops."""

    def __init__(self, emb_dim: int):
        super().__init__(aggr="add")
        self.edge_embedding1 = nn.Embedding(NUM_BOND_TYPES, emb_dim)
        self.edge_embedding2 = nn.Embedding(NUM_BOND_DIRECTIONS, emb_dim)
        nn.init.xavier_uniform_(self.edge_embedding1.weight)
        nn.init.xavier_uniform_(self.edge_embedding2.weight)

    def _with_self_loops(self, edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int):
        edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
        loops = torch.zeros(num_nodes, 2, dtype=edge_attr.dtype, device=edge_attr.device)
        loops[:, 0] = SELF_LOOP_BOND_TYPE
        edge_attr = torch.cat([edge_attr, loops], dim=0)
        return edge_index, self.edge_embedding1(edge_attr[:, 0]) + self.edge_embedding2(edge_attr[:, 1])


class GINConv(_BondConv):
    """GIN layer of pretrain-gnns: ``MLP(sum_u (h_u + e_uv))`` with MLP 300 -> 600 -> 300."""

    def __init__(self, emb_dim: int):
        super().__init__(emb_dim)
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        edge_index, edge_emb = self._with_self_loops(edge_index, edge_attr, x.size(0))
        return self.mlp(self.propagate(edge_index, x=x, edge_attr=edge_emb))

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return x_j + edge_attr


class GCNConv(_BondConv):
    """GCN layer of pretrain-gnns: ``sum_u norm_uv (W h_u + e_uv)`` with symmetric degree norm."""

    def __init__(self, emb_dim: int):
        super().__init__(emb_dim)
        self.linear = nn.Linear(emb_dim, emb_dim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        edge_index, edge_emb = self._with_self_loops(edge_index, edge_attr, x.size(0))
        row, col = edge_index
        inv_sqrt = degree(row, x.size(0), dtype=x.dtype).pow(-0.5)
        norm = inv_sqrt[row] * inv_sqrt[col]
        return self.propagate(edge_index, x=self.linear(x), edge_attr=edge_emb, norm=norm)

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        return norm.view(-1, 1) * (x_j + edge_attr)


_CONVS = {"gin": GINConv, "gcn": GCNConv}


class PretrainedGNN(nn.Module):
    """The pretrain-gnns molecule encoder, state-dict compatible with the published checkpoints.

    Parameters
    ----------
    gnn_type: str, default "gin"
        ``"gin"`` or ``"gcn"``.
    num_layer: int, default 5
    emb_dim: int, default 300
    dropout: float, default 0.1

    Examples
    --------
    >>> from deepchem_pintuning.batching import collate_graphs
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> gnn = PretrainedGNN("gin", num_layer=2, emb_dim=16).eval()
    >>> gnn.embed(collate_graphs(PretrainGNNFeaturizer().featurize(["CCO", "c1ccccc1"]))).shape
    torch.Size([2, 16])
    """

    def __init__(self, gnn_type: str = "gin", num_layer: int = 5, emb_dim: int = 300, dropout: float = 0.1):
        super().__init__()
        if gnn_type not in _CONVS:
            raise ValueError(f"gnn_type must be one of {sorted(_CONVS)}, got {gnn_type!r}")
        if num_layer < 1:
            raise ValueError("num_layer must be >= 1")
        self.gnn_type, self.num_layer, self.emb_dim, self.dropout = gnn_type, num_layer, emb_dim, dropout
        self.x_embedding1 = nn.Embedding(NUM_ATOM_TYPES, emb_dim)
        self.x_embedding2 = nn.Embedding(NUM_CHIRALITY_TAGS, emb_dim)
        nn.init.xavier_uniform_(self.x_embedding1.weight)
        nn.init.xavier_uniform_(self.x_embedding2.weight)
        self.gnns = nn.ModuleList([_CONVS[gnn_type](emb_dim) for _ in range(num_layer)])
        self.batch_norms = nn.ModuleList([nn.BatchNorm1d(emb_dim) for _ in range(num_layer)])

    def embedding_tables(self) -> Dict[str, nn.Parameter]:
        """The embedding tables (atom type, chirality, per-layer bond type and direction) by name."""
        return {name: p for name, p in self.named_parameters() if "embedding" in name}

    def node_embeddings(self, batch, hook: Optional[LayerHook] = None) -> torch.Tensor:
        """Last-layer atom vectors; ``hook(layer, h)`` is applied to each conv output before batch norm."""
        h = self.x_embedding1(batch.x[:, 0]) + self.x_embedding2(batch.x[:, 1])
        for layer in range(self.num_layer):
            h = self.gnns[layer](h, batch.edge_index, batch.edge_attr)
            if hook is not None:
                h = hook(layer, h)
            h = self.batch_norms[layer](h)
            if layer < self.num_layer - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, training=self.training)
        return h

    def embed(self, batch, hook: Optional[LayerHook] = None) -> torch.Tensor:
        """One vector per molecule: the mean of its atoms' last-layer vectors."""
        return global_mean_pool(self.node_embeddings(batch, hook), batch.batch)

    def forward(self, batch) -> torch.Tensor:
        return self.embed(batch)


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or tensor shapes do not match the encoder."""


def load_pretrained_weights(model: PretrainedGNN, path: Union[str, Path]) -> PretrainedGNN:
    """Load a pretrain-gnns ``*.pth`` state dict into ``model`` (``weights_only=True``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointMismatchError
        Listing every missing, unexpected or wrongly shaped tensor.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pre-trained checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path} holds a {type(state).__name__}, not a state dict")
    expected = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        raise CheckpointMismatchError(
            f"{path} does not fit a {model.num_layer}-layer {model.gnn_type.upper()} with emb_dim "
            f"{model.emb_dim}:\n  " + "\n  ".join(problems))
    model.load_state_dict(state)
    return model


#: Named encoders: (gnn type, file under the shipped data folder, or None when not shipped).
PRETRAINED_ENCODERS: Dict[str, tuple] = {
    "gcn_supervised_contextpred": ("gcn", "pretrain_gnns/gcn_supervised_contextpred.pth"),
    "gin_supervised_contextpred": ("gin", None),
    "gin_attrmask_contextpred_offline": ("gin", "pretrain_gnns/gin_attrmask_contextpred_offline.pth"),
    "gin_scratch": ("gin", None),
    "gcn_scratch": ("gcn", None),
}
GIN_HELP = (
    "The Hu et al. GIN checkpoint 'supervised_contextpred.pth' (7.4 MB, git blob "
    "f2b12b211eace32c070c241b5047484f8fec9b7a) is not shipped: it lives in the snap-stanford/"
    "pretrain-gnns repository under chem/model_gin/. Download it where you have internet access and "
    "pass its path: encoder='gin_supervised_contextpred', encoder_path='/path/to/supervised_contextpred.pth'.")


def build_encoder(encoder: str = "gcn_supervised_contextpred", encoder_path: Optional[Union[str, Path]] = None,
                  num_layer: int = 5, emb_dim: int = 300, dropout: float = 0.1) -> PretrainedGNN:
    """Create a :class:`PretrainedGNN` and load its pre-trained weights.

    Parameters
    ----------
    encoder: str
        A name from :data:`PRETRAINED_ENCODERS` (``*_scratch`` = random initialisation).
    encoder_path: str or Path, optional
        Checkpoint file; required for encoders that are not shipped, and overrides the shipped file.

    Examples
    --------
    >>> gnn = build_encoder("gcn_supervised_contextpred")
    >>> gnn.gnn_type, sum(p.numel() for p in gnn.parameters())
    ('gcn', 504900)
    """
    if encoder not in PRETRAINED_ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(PRETRAINED_ENCODERS)}")
    gnn_type, shipped = PRETRAINED_ENCODERS[encoder]
    model = PretrainedGNN(gnn_type, num_layer=num_layer, emb_dim=emb_dim, dropout=dropout)
    if encoder.endswith("_scratch"):
        return model
    if encoder_path is None:
        if shipped is None:
            raise FileNotFoundError(GIN_HELP if encoder == "gin_supervised_contextpred"
                                    else f"encoder {encoder!r} needs encoder_path")
        from deepchem_pintuning.data import project_data_dir
        encoder_path = project_data_dir() / shipped
    return load_pretrained_weights(model, encoder_path)
