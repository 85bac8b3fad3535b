"""Episode-batched forward pass of :class:`~deepchem_pintuning.pintuning.PinTuning` (the fast path).

:func:`batched_forward` computes, for ``E`` episodes at once, what ``PinTuning.forward`` computes
for one, with every tuned parameter carrying a leading episode axis (each episode's fast weights).
The reference module stays the specification: tests check that losses, gradients and BatchNorm
statistics of the two agree. Exact rewrites used here (same outputs, less arithmetic):

* the GCN's first linear map is applied to the embedding tables (123 rows) instead of to every
  atom, since ``W (E_a[type] + E_c[chir]) = (E_a W^T)[type] + (E_c W^T)[chir]``;
* bond embeddings enter as ``counts @ (E_type (+) E_dir)`` (per-atom counts of the 18 bond
  categories) instead of per-bond vectors; message passing is a sparse matrix product;
* embedding lookups, pooling and broadcasting molecule vectors to atoms are products with constant
  sparse matrices (:mod:`~deepchem_pintuning.sparse_products`; a lookup is a one-hot product, equal
  to indexing), whose backward needs no sort;
* the MP-Adapters' down-projection of ``[h || c_m || c_p]`` is split: the context parts are
  computed once per molecule and once per episode, then broadcast to the atoms.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from deepchem_pintuning.adapters import MPAdapterStack
from deepchem_pintuning.batched_context import context_forward
from deepchem_pintuning.encoder import PretrainedGNN
from deepchem_pintuning.episode_batch import BOND_CATEGORIES, EpisodeBatch, GraphBatch, PackedGraphs, gather_graphs
from deepchem_pintuning.grouped_ops import PassState, batch_norm, dropout, layer_norm, linear
from deepchem_pintuning.pintuning import PinTuning
from deepchem_pintuning.sparse_products import SparseOperator

AtomHook = Callable[[int, torch.Tensor], torch.Tensor]


class ParamView:
    """Parameters of a module by name: per-episode ``[E, ...]`` where given, else the module's own (shared)."""

    def __init__(self, module: nn.Module, stacked: Dict[str, torch.Tensor]):
        self.stacked = stacked
        self.shared = dict(module.named_parameters())

    def get(self, name: str) -> torch.Tensor:
        return self.stacked[name] if name in self.stacked else self.shared[name]


def _groups(table: torch.Tensor) -> int:
    """How many tables a shared ``[R, d]`` or per-episode ``[E, R, d]`` table stacks (1 when shared)."""
    return table.size(0) if table.dim() > 2 else 1


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``[E, n, d]`` of a shared ``[R, d]`` or per-episode ``[E, R, d]`` table for ``index`` ``[E, n]``."""
    operator = SparseOperator.one_hot(index, table.size(-2), _groups(table))
    return (operator @ table.reshape(-1, table.size(-1))).view(*index.shape, -1)


def atom_lookup(table: torch.Tensor, graphs: GraphBatch, field: str) -> torch.Tensor:
    """:func:`lookup` of an atom field of ``graphs`` (``"atom_type"`` or ``"chirality"``), through the
    batch's cached one-hot matrix: every forward pass of a step reads the same atoms."""
    operator = graphs.one_hot(field, table.size(-2), _groups(table))
    return (operator @ table.reshape(-1, table.size(-1))).view(graphs.n_groups, graphs.n_atom_slots, -1)


def encode(encoder: PretrainedGNN, params: ParamView, prefix: str, graphs: GraphBatch,
           state: Optional[PassState], hook: Optional[AtomHook] = None) -> torch.Tensor:
    """Molecule vectors ``[E, M, d]``: ``PretrainedGNN.embed`` with per-episode embedding tables."""
    n_groups, slots = graphs.n_groups, graphs.n_atom_slots
    gcn = encoder.gnn_type == "gcn"
    adjacency, bond_counts = graphs.adjacency(gcn), graphs.bond_counts(gcn)
    atom_table, chirality_table = params.get(f"{prefix}x_embedding1.weight"), params.get(f"{prefix}x_embedding2.weight")
    atom_weight = graphs.atom_mask if n_groups > 1 or graphs.padded else None  # else no free slots
    h = None
    for layer, conv in enumerate(encoder.gnns):
        name = f"{prefix}gnns.{layer}."
        bond_table = (params.get(f"{name}edge_embedding1.weight").unsqueeze(-2)
                      + params.get(f"{name}edge_embedding2.weight").unsqueeze(-3))
        bond_term = torch.matmul(bond_counts, bond_table.reshape(*bond_table.shape[:-3], BOND_CATEGORIES, -1))
        if gcn:
            if h is None:  # first layer: the linear map applied to the tables, not to every atom
                projected = (atom_lookup(linear_table(atom_table, conv.linear), graphs, "atom_type")
                             + atom_lookup(linear_table(chirality_table, conv.linear, bias=False), graphs, "chirality"))
            else:
                projected = conv.linear(h)
            m = (adjacency @ projected.reshape(n_groups * slots, -1)).view(n_groups, slots, -1)
            m = m + bond_term
        else:
            if h is None:
                h = atom_lookup(atom_table, graphs, "atom_type") + atom_lookup(chirality_table, graphs, "chirality")
            summed = (adjacency @ h.reshape(n_groups * slots, -1)).view(n_groups, slots, -1)
            m = conv.mlp(summed + bond_term)
        if hook is not None:
            m = hook(layer, m)
        norm = encoder.batch_norms[layer]
        h = batch_norm(m, norm, norm.weight, norm.bias, norm.training, state, atom_weight)
        if layer < encoder.num_layer - 1:
            h = torch.relu(h)
        h = dropout(h, encoder.dropout, encoder.training, state)
    pooled = graphs.mean_pool() @ h.reshape(n_groups * slots, -1)
    return pooled.view(n_groups, graphs.n_molecules, -1)


def embed_molecules(encoder: PretrainedGNN, packed: PackedGraphs, molecules: Sequence[int],
                    chunk: int = 256) -> torch.Tensor:
    """``encoder.embed`` of the ``molecules`` of ``packed`` (``[n, d]``) in eval mode, on the fast path.

    Equals ``encoder.embed(collate_graphs(...))`` (tested) at about a third of the CPU time
    (``benchmarks/results/baseline_speed.md``): no PyG collation, and the rewrites of :func:`encode`.
    Its own parameters, no gradient; for an encoder scored as a whole (the frozen, fine-tuned and
    MAML baselines, the frozen-encoder cache).

    Examples
    --------
    >>> from deepchem_pintuning.encoder import build_encoder
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> packed = PackedGraphs(PretrainGNNFeaturizer().featurize(["CCO", "c1ccccc1", "C#N"]))
    >>> embed_molecules(build_encoder("gcn_scratch").eval(), packed, [2, 0]).shape
    torch.Size([2, 300])
    """
    if encoder.training:
        raise ValueError("embed_molecules needs the encoder in eval mode (no batch statistics, no dropout)")
    index = torch.as_tensor(molecules, dtype=torch.long).reshape(1, -1)
    params = ParamView(encoder, {})
    with torch.no_grad():
        parts = [encode(encoder, params, "", gather_graphs(packed, index[:, start:start + chunk]), None)[0]
                 for start in range(0, index.size(1), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, encoder.emb_dim, device=packed.atoms.device)


def linear_table(table: torch.Tensor, layer: nn.Linear, bias: bool = True) -> torch.Tensor:
    """``layer`` applied to every row of an embedding table (shared or per episode)."""
    return nn.functional.linear(table, layer.weight, layer.bias if bias else None)


def adapter_hook(adapters: MPAdapterStack, params: ParamView, prefix: str, graphs: GraphBatch,
                 mol_context: torch.Tensor, prop_context: torch.Tensor) -> AtomHook:
    """Batched ``MPAdapterStack.hook`` (paper Eq. 7) with contexts per molecule ``[E, M, d]``.

    The property context is one per episode ``[E, 1, d]``, or one per molecule ``[E, M, d]`` when
    every molecule has a context graph of its own (inductive scoring).
    """
    dim = mol_context.size(-1)
    n_groups, slots = graphs.n_groups, graphs.n_atom_slots

    def to_atoms(per_molecule: torch.Tensor) -> torch.Tensor:
        return (graphs.broadcast() @ per_molecule.reshape(-1, per_molecule.size(-1))).view(n_groups, slots, -1)

    def apply(layer: int, h: torch.Tensor) -> torch.Tensor:
        name = f"{prefix}adapters.{layer}."
        adapter = adapters.adapters[layer]
        if not adapter.with_context:
            z = linear(h, params.get(f"{name}down.weight"), params.get(f"{name}down.bias"))
        elif adapter.separate:
            parts = [linear(x, params.get(f"{name}down.{i}.weight"), params.get(f"{name}down.{i}.bias"))
                     for i, x in enumerate((h, mol_context, prop_context))]
            prop = parts[2].expand(-1, slots, -1) if parts[2].size(1) == 1 else to_atoms(parts[2])
            z = torch.cat([parts[0], to_atoms(parts[1]), prop], dim=-1)
        else:
            weight, bias = params.get(f"{name}down.weight"), params.get(f"{name}down.bias")
            context = linear(mol_context, weight[..., dim:2 * dim]) + linear(prop_context, weight[..., 2 * dim:], bias)
            z = linear(h, weight[..., :dim]) + to_atoms(context)
        h = h + linear(torch.relu(z), params.get(f"{name}up.weight"), params.get(f"{name}up.bias"))
        if adapters.layer_norms is None:
            return h
        norm = f"{prefix}layer_norms.{layer}."
        return layer_norm(h, params.get(f"{norm}weight"), params.get(f"{norm}bias"), adapters.layer_norms[layer].eps)

    return apply


def batched_forward(model: PinTuning, stacked: Dict[str, torch.Tensor], batch: EpisodeBatch,
                    state: Optional[PassState] = None, query_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(logits [E, M], episode vectors [E, d])`` of ``E`` episodes with per-episode tuned parameters.

    Parameters
    ----------
    model: PinTuning
        Supplies the frozen parameters, the architecture and each module's train/eval mode.
    stacked: dict of str -> Tensor
        Tuned parameters by ``named_parameters`` name, each ``[E, ...]`` (or ``[1, ...]`` shared
        by all episodes); parameters not given are taken from ``model``.
    state: PassState, optional
        Dropout generator; receives the train-mode BatchNorm statistics (apply them after the step).
    query_only: bool
        Logits of the query molecules only (``[E, n_query]``; needs ``batch.parts``): the context
        graph still holds every molecule, but the adapted encoder and the classifier see the query
        molecules alone. That equals the full pass when neither couples molecules, i.e. with their
        BatchNorm in eval mode (required), and spares scoring the support molecules once per query
        chunk at evaluation.
    """
    params = ParamView(model, stacked)
    # the molecules as the encoders and the classifier batch them: jointly, or support and query apart
    n_support, n_mols = batch.n_support, batch.graphs.n_molecules
    parts = [(slice(None), batch.graphs)] if batch.parts is None else \
        list(zip((slice(0, n_support), slice(n_support, n_mols)), batch.parts))
    scored, rows = parts, slice(None)   # the molecules the adapted encoder and the classifier see
    if query_only:
        if batch.parts is None or model.encoder.training or model.classifier.training:
            raise ValueError("query_only needs the query molecules as a batch of their own (batch.parts) and the "
                             "adapted encoder and classifier in eval mode")
        scored, rows = parts[1:], parts[1][0]
    frozen = batch.frozen
    if frozen is None:
        with torch.no_grad():
            frozen = torch.cat([encode(model.frozen_encoder, params, "frozen_encoder.", graphs, state)
                                for _, graphs in parts], dim=1)
    n_props = batch.property_ids.size(1)
    prop_x = lookup(params.get("property_embedding.weight"), batch.property_ids)
    nodes = context_forward(model.context, params, "context.", prop_x, frozen, batch.labels, state)
    prop_context, mol_context = nodes[:, :1], nodes[:, n_props:]
    adapted = torch.cat([encode(model.encoder, params, "encoder.", graphs, state,
                                None if model.adapters is None else
                                adapter_hook(model.adapters, params, "adapters.", graphs, mol_context[:, part],
                                             prop_context))
                         for part, graphs in scored], dim=1)
    features = torch.cat([frozen[:, rows], mol_context[:, rows], prop_context.expand_as(frozen[:, rows]), adapted],
                         dim=-1)
    vectors = prop_context[:, 0] + torch.sigmoid(mol_context[:, :n_support].mean(1))
    if query_only:
        return classify(model, params, features, state), vectors
    logits = torch.cat([classify(model, params, features[:, part], state) for part, _ in parts], dim=1)
    return logits, vectors


def classify(model: PinTuning, params: ParamView, features: torch.Tensor, state: Optional[PassState]) -> torch.Tensor:
    """The classifier MLP on ``[f || c_m || c_p || a]`` features ``[E, M, 4d]``: logits ``[E, M]``."""
    hidden = linear(features, params.get("classifier.0.weight"), params.get("classifier.0.bias"))
    norm = model.classifier[1]
    hidden = torch.relu(batch_norm(hidden, norm, params.get("classifier.1.weight"), params.get("classifier.1.bias"),
                                   norm.training, state))
    return linear(hidden, params.get("classifier.3.weight"), params.get("classifier.3.bias")).squeeze(-1)
