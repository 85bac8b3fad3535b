"""Episodes as one padded tensor batch, gathered from a dataset collated once.

The reference path collates a PyG batch and builds a context graph per episode. The fast path
collates the whole dataset once (:class:`PackedGraphs`, kept on the device) and gathers the
molecules of ``E`` episodes by index tensors into one :class:`EpisodeBatch`:

* atoms in a padded layout ``[E, A]`` (``A`` = most atoms of any episode, padding rows masked out
  of every statistic and with no bonds), so per-episode weights apply as batched matrix products;
* message passing of the molecular GNN as a constant sparse matrix (GCN symmetric degree
  normalisation or GIN sums, self loops included) and the bond embeddings as per-atom counts of
  each (bond type, bond direction) pair, so no per-bond activations are ever formed; pooling atoms
  into molecules and broadcasting molecules to atoms as sparse matrices too
  (:class:`~deepchem_pintuning.sparse_products.SparseOperator`);
* the molecule-property label edges of each context graph as dense ``[E, N, N]`` matrices
  (``N`` = properties + molecules), built from the label matrix without a per-episode loop.

Building a batch never waits for the device: every size (atoms per group, totals) comes from host
copies of the per-molecule counts, index tensors reach the device by asynchronous copies from
pinned memory, and no operation reads a device value back.

Given a :class:`BatchCapacity`, a batch is padded to fixed sizes (atom slots per group, atom and bond
entries), so that every batch of a run has the same tensor shapes, as a replayed CUDA graph needs
(:mod:`~deepchem_pintuning.captured_step`): padding entries sit on padding slots and carry weight 0,
so the batch's products, statistics and gradients equal the unpadded batch's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from deepchem_pintuning.context_graph import NUM_EDGE_TYPES, label_edge_types
from deepchem_pintuning.molecule_graph import NUM_BOND_DIRECTIONS, NUM_BOND_TYPES, SELF_LOOP_BOND_TYPE, FlatGraphs
from deepchem_pintuning.sparse_products import SparseOperator

BOND_CATEGORIES = NUM_BOND_TYPES * NUM_BOND_DIRECTIONS


class PackedGraphs:
    """Every molecule of a dataset in flat tensors: atoms, bonds and per-molecule offsets.

    Examples
    --------
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> packed = PackedGraphs(PretrainGNNFeaturizer().featurize(["CCO", "C#N"]))
    >>> packed.n_atoms.tolist(), packed.n_bonds.tolist()
    ([3, 2], [4, 2])
    """

    def __init__(self, graphs: Sequence, device: Optional[torch.device] = None):
        atoms = [np.asarray(g.node_features, dtype=np.int64) for g in graphs]
        bonds = [np.asarray(g.edge_index, dtype=np.int64).reshape(2, -1) for g in graphs]
        bond_features = [np.asarray(g.edge_features, dtype=np.int64).reshape(-1, 2) for g in graphs]
        self._set([len(a) for a in atoms], [b.shape[1] for b in bonds], np.concatenate(atoms),
                  np.concatenate(bonds, axis=1), np.concatenate(bond_features), device)

    @classmethod
    def from_flat(cls, flat: FlatGraphs, device: Optional[torch.device] = None) -> "PackedGraphs":
        """The molecules of a :class:`~deepchem_pintuning.molecule_graph.FlatGraphs`, without copying on the CPU.

        Examples
        --------
        >>> from deepchem_pintuning.molecule_graph import flat_graphs
        >>> PackedGraphs.from_flat(flat_graphs(["CCO", "C#N"])).n_bonds.tolist()
        [4, 2]
        """
        packed = cls.__new__(cls)
        packed._set(flat.n_atoms, flat.n_bonds, flat.atoms, flat.bonds, flat.bond_features, device)
        return packed

    def _set(self, n_atoms, n_bonds, atoms, bonds, bond_features, device) -> None:
        self.host_n_atoms = np.asarray(n_atoms, dtype=np.int64)      # sizes known without reading the device
        self.host_n_bonds = np.asarray(n_bonds, dtype=np.int64)
        self.n_atoms = torch.as_tensor(n_atoms, dtype=torch.long, device=device)
        self.n_bonds = torch.as_tensor(n_bonds, dtype=torch.long, device=device)
        self.atom_ptr = torch.cat([self.n_atoms.new_zeros(1), self.n_atoms.cumsum(0)])
        self.bond_ptr = torch.cat([self.n_bonds.new_zeros(1), self.n_bonds.cumsum(0)])
        self.atoms = torch.as_tensor(atoms, device=device)                   # [atoms, 2]
        self.bonds = torch.as_tensor(bonds, device=device)                   # [2, bonds], local
        self.bond_features = torch.as_tensor(bond_features, device=device)   # [bonds, 2]

    def __len__(self) -> int:
        return len(self.n_atoms)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host tensor goes to a GPU by an asynchronous copy from pinned memory."""
    if tensor.device == device or device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _segments(starts: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenated ``arange(start, start + count)`` for every (start, count); ``total`` = ``counts.sum()``."""
    offsets = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts, output_size=total)
    return torch.repeat_interleave(starts, counts, output_size=total) + torch.arange(total, device=counts.device) - offsets


class CapacityExceeded(ValueError):
    """A batch's molecules do not fit a :class:`BatchCapacity` (its caller may build them unpadded)."""


@dataclass(frozen=True)
class BatchCapacity:
    """Fixed sizes of a padded :class:`GraphBatch`: atom slots per group, atom entries, bond entries.

    Examples
    --------
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> packed = PackedGraphs(PretrainGNNFeaturizer().featurize(["CCO", "C#N", "C"]))
    >>> BatchCapacity.needed(packed, np.array([[0, 1], [2, 1]]))   # atoms 3 + 2, 1 + 2; bonds 4 + 2 + 0 + 2
    BatchCapacity(atom_slots=5, atoms=8, bonds=8)
    """

    atom_slots: int
    atoms: int
    bonds: int                       # directed bonds, self loops not counted

    @classmethod
    def needed(cls, packed: PackedGraphs, molecules: np.ndarray) -> "BatchCapacity":
        """The sizes that the molecules ``[E, M]`` (dataset indices) need, unpadded."""
        atoms = packed.host_n_atoms[molecules]
        return cls(int(atoms.sum(1).max()), int(atoms.sum()), int(packed.host_n_bonds[molecules].sum()))

    def holds(self, needed: "BatchCapacity") -> bool:
        """Whether a batch that needs ``needed`` fits this capacity (each size at least as large)."""
        return self.atom_slots >= needed.atom_slots and self.atoms >= needed.atoms and self.bonds >= needed.bonds


def _padding(host_atoms: np.ndarray, slots: int, needed: BatchCapacity, capacity: BatchCapacity):
    """Host index arrays of the padding entries: atom entries (one free slot each) and bond entries
    (a free slot's row, distinct other columns), so that no matrix position occurs twice."""
    n_groups = len(host_atoms)
    n_slots = n_groups * slots
    if capacity.atoms > n_slots:
        raise ValueError(f"a capacity of {capacity.atoms} atom entries needs at least that many slots; "
                         f"{n_groups} groups x {slots} slots hold {n_slots}")
    free = np.concatenate([np.arange(g * slots + a, (g + 1) * slots) for g, a in enumerate(host_atoms)])
    extra_bonds = np.arange(capacity.bonds - needed.bonds)
    if len(extra_bonds) > len(free) * (n_slots - 1):
        raise CapacityExceeded(f"{len(extra_bonds)} padding bonds do not fit on {len(free)} free atom slots")
    rows = free[extra_bonds // (n_slots - 1)]
    cols = (rows + 1 + extra_bonds % (n_slots - 1)) % n_slots
    return free[:capacity.atoms - needed.atoms], rows, cols


@dataclass
class GraphBatch:
    """Molecules of ``E`` groups (episodes) of ``M`` molecules each, atoms padded to ``A`` per group."""

    n_groups: int
    n_molecules: int                 # M, per group
    n_atom_slots: int                # A, per group
    atom_type: torch.Tensor          # [E, A] (padding: 0)
    chirality: torch.Tensor          # [E, A]
    atom_mask: torch.Tensor          # [E, A] float, 1 for real atoms
    atom_slot: torch.Tensor          # [atoms] flat slot e * A + a of every real atom
    atom_owner: torch.Tensor         # [atoms] its flat molecule index e * M + m
    source: torch.Tensor             # [B] flat atom slot of each bond and self loop
    target: torch.Tensor             # [B]
    bond_category: torch.Tensor      # [B] bond type * NUM_BOND_DIRECTIONS + direction
    n_atoms: torch.Tensor            # [E * M] atoms per molecule
    atom_entry: torch.Tensor         # [atoms] 1.0 for a real atom, 0.0 for padding (padded batches)
    edge_entry: torch.Tensor         # [B] 1.0 for a real bond or self loop, 0.0 for padding
    padded: bool = False             # padded to a BatchCapacity (a single group may have free slots)
    _cache: Dict = field(default_factory=dict, repr=False)

    def clear_cache(self) -> None:
        """Forget the operators built from this batch's tensors (after its tensors were overwritten)."""
        self._cache.clear()

    def one_hot(self, field: str, n_rows: int, groups: int) -> SparseOperator:
        """``[E*A, groups*n_rows]`` picking, for every atom slot, its row (``field``: ``"atom_type"`` or
        ``"chirality"``) of an embedding table shared by all groups (``groups=1``) or one per group."""
        key = ("one_hot", field, n_rows, groups)
        if key not in self._cache:
            self._cache[key] = SparseOperator.one_hot(getattr(self, field), n_rows, groups)
        return self._cache[key]

    def _edge_weight(self, normalize: bool) -> torch.Tensor:
        if not normalize:
            return self.edge_entry
        degree = torch.zeros(self.n_groups * self.n_atom_slots, device=self.source.device)
        degree.index_add_(0, self.source, self.edge_entry)
        inv_sqrt = degree.clamp(min=1).pow(-0.5)      # a real atom has its self loop; a free slot degree 0
        return inv_sqrt[self.source] * inv_sqrt[self.target] * self.edge_entry

    def adjacency(self, normalize: bool) -> SparseOperator:
        """``[E*A, E*A]`` message-passing matrix (row = receiving atom), self loops included.

        ``normalize=True`` gives the GCN weights ``deg(u)^-1/2 deg(v)^-1/2``, else GIN's ones. Bonds
        come in both directions, so the matrix is symmetric.
        """
        key = ("adjacency", normalize)
        if key not in self._cache:
            size = self.n_groups * self.n_atom_slots
            self._cache[key] = SparseOperator(self.target, self.source, self._edge_weight(normalize), (size, size),
                                              symmetric=True)
        return self._cache[key]

    def bond_counts(self, normalize: bool) -> torch.Tensor:
        """``[E, A, BOND_CATEGORIES]``: summed edge weights of the bonds each atom receives, per category."""
        key = ("bond_counts", normalize)
        if key not in self._cache:
            counts = torch.zeros(self.n_groups * self.n_atom_slots * BOND_CATEGORIES, device=self.source.device)
            counts.index_add_(0, self.target * BOND_CATEGORIES + self.bond_category, self._edge_weight(normalize))
            self._cache[key] = counts.view(self.n_groups, self.n_atom_slots, BOND_CATEGORIES)
        return self._cache[key]

    def mean_pool(self) -> SparseOperator:
        """``[E*M, E*A]`` averaging the atoms of each molecule."""
        if "pool" not in self._cache:
            weight = self.atom_entry / self.n_atoms[self.atom_owner].to(self.atom_mask.dtype)
            self._cache["pool"] = SparseOperator(self.atom_owner, self.atom_slot, weight,
                                                 (self.n_groups * self.n_molecules, self.n_groups * self.n_atom_slots))
        return self._cache["pool"]

    def broadcast(self) -> SparseOperator:
        """``[E*A, E*M]`` giving every atom its molecule's row (padding atoms get zeros)."""
        if "broadcast" not in self._cache:
            self._cache["broadcast"] = SparseOperator(self.atom_slot, self.atom_owner, self.atom_entry,
                                                      (self.n_groups * self.n_atom_slots, self.n_groups * self.n_molecules))
        return self._cache["broadcast"]


def gather_graphs(packed: PackedGraphs, molecules: torch.Tensor,
                  capacity: Optional[BatchCapacity] = None) -> GraphBatch:
    """Collate ``molecules`` ``[E, M]`` (dataset indices, best a host tensor) into a padded :class:`GraphBatch`,
    of the sizes of ``capacity`` when given (:class:`CapacityExceeded` if the molecules do not fit it)."""
    n_groups, n_mols = molecules.shape
    device = packed.atoms.device
    host = molecules.reshape(-1).cpu()
    needed = BatchCapacity.needed(packed, host.numpy().reshape(n_groups, n_mols))
    if capacity is not None and not capacity.holds(needed):
        raise CapacityExceeded(f"these molecules need {needed}, more than the batch capacity {capacity}")
    slots, n_real, n_bonds = (capacity or needed).atom_slots, needed.atoms, needed.bonds
    flat = to_device(host, device)
    atoms_per_mol = packed.n_atoms[flat]
    per_group = atoms_per_mol.view(n_groups, n_mols)
    # slot of each molecule's first atom: group offset + atoms of the group's earlier molecules
    first_slot = (torch.arange(n_groups, device=device) * slots).repeat_interleave(n_mols) + \
        (per_group.cumsum(1) - per_group).reshape(-1)
    atom_src = _segments(packed.atom_ptr[flat], atoms_per_mol, n_real)
    atom_slot = _segments(first_slot, atoms_per_mol, n_real)
    size = n_groups * slots
    atom_type = torch.zeros(size, dtype=torch.long, device=device)
    chirality = torch.zeros(size, dtype=torch.long, device=device)
    atom_type[atom_slot] = packed.atoms[atom_src, 0]
    chirality[atom_slot] = packed.atoms[atom_src, 1]
    mask = torch.zeros(size, device=device).index_fill_(0, atom_slot, 1.0)   # x[i] = 1.0 would copy the 1.0 and wait
    atom_owner = torch.arange(flat.numel(), device=device).repeat_interleave(atoms_per_mol, output_size=n_real)

    bonds_per_mol = packed.n_bonds[flat]
    bond_src = _segments(packed.bond_ptr[flat], bonds_per_mol, n_bonds)
    bond_shift = first_slot.repeat_interleave(bonds_per_mol, output_size=n_bonds)
    source, target = packed.bonds[0, bond_src] + bond_shift, packed.bonds[1, bond_src] + bond_shift
    features = packed.bond_features[bond_src]
    category = features[:, 0] * NUM_BOND_DIRECTIONS + features[:, 1]
    atom_entry, bond_entry = torch.ones(n_real, device=device), torch.ones(n_bonds, device=device)
    if capacity is not None:
        host_atoms = packed.host_n_atoms[host.numpy()].reshape(n_groups, n_mols).sum(1)
        pad_atoms, pad_rows, pad_cols = (to_device(torch.from_numpy(a), device)
                                         for a in _padding(host_atoms, slots, needed, capacity))
        atom_slot = torch.cat([atom_slot, pad_atoms])
        atom_owner = torch.cat([atom_owner, torch.zeros_like(pad_atoms)])
        atom_entry = torch.cat([atom_entry, atom_entry.new_zeros(pad_atoms.numel())])
        source, target = torch.cat([source, pad_rows]), torch.cat([target, pad_cols])
        category = torch.cat([category, torch.zeros_like(pad_rows)])
        bond_entry = torch.cat([bond_entry, bond_entry.new_zeros(pad_rows.numel())])
    category = torch.cat([category, torch.full_like(atom_slot, SELF_LOOP_BOND_TYPE * NUM_BOND_DIRECTIONS)])
    return GraphBatch(n_groups, n_mols, slots, atom_type.view(n_groups, slots), chirality.view(n_groups, slots),
                      mask.view(n_groups, slots), atom_slot, atom_owner, torch.cat([source, atom_slot]),
                      torch.cat([target, atom_slot]), category, atoms_per_mol, atom_entry,
                      torch.cat([bond_entry, atom_entry]), capacity is not None)


@dataclass
class LabelGraph:
    """Label edges of ``E`` context graphs as dense matrices over ``N = P + M`` nodes."""

    adjacency: torch.Tensor   # [E, N, N] 1 where node u (column) sends a label edge to node v (row)
    type_counts: torch.Tensor  # [E, N, NUM_EDGE_TYPES] label edges each node receives, per type
    in_degree: torch.Tensor   # [E, N]


def dense_label_graph(support_labels: torch.Tensor, query_aux_labels: torch.Tensor,
                      query_aux_offset: int = 0) -> LabelGraph:
    """Dense form of :func:`deepchem_pintuning.context_graph.label_edges` for a batch of episodes.

    Parameters
    ----------
    support_labels: Tensor [E, n_support, P]
        Labels on ``[target, aux...]`` (NaN = missing).
    query_aux_labels: Tensor [E, n_query, P - 1]
    """
    n_groups, n_support, n_props = support_labels.shape
    n_query = query_aux_labels.shape[1]
    device = support_labels.device
    kind = torch.full((n_groups, n_props, n_support + n_query), -1, dtype=torch.long, device=device)
    kind[:, :, :n_support] = label_edge_types(support_labels).transpose(1, 2)
    if n_query and n_props > 1:
        rows = torch.arange(1, n_props, device=device) + query_aux_offset
        kind[:, rows, n_support:] = label_edge_types(query_aux_labels).transpose(1, 2)
    edge = (kind >= 0).to(support_labels.dtype)                                   # [E, P, M]
    n_nodes = n_props + n_support + n_query
    adjacency = torch.zeros(n_groups, n_nodes, n_nodes, device=device, dtype=edge.dtype)
    adjacency[:, :n_props, n_props:] = edge
    adjacency[:, n_props:, :n_props] = edge.transpose(1, 2)
    one_hot = (kind.unsqueeze(-1) == torch.arange(NUM_EDGE_TYPES, device=device)).to(edge.dtype)
    type_counts = torch.cat([one_hot.sum(2), one_hot.sum(1)], dim=1)
    return LabelGraph(adjacency, type_counts, adjacency.sum(-1))


@dataclass
class EpisodeBatch:
    """Everything the batched network needs for ``E`` episodes of equal shape."""

    graphs: GraphBatch
    frozen: Optional[torch.Tensor]   # [E, M, d] cached frozen-encoder vectors, or None
    property_ids: torch.Tensor       # [E, P] target first, then auxiliary properties
    labels: LabelGraph
    n_support: int
    support_labels: torch.Tensor     # [E, n_support]
    query_labels: Optional[torch.Tensor]  # [E, n_query] target labels (None when unknown)
    task_ids: torch.Tensor           # [E] target property per episode (contrastive groups)
    # support-only and query-only molecules, when the encoders and the classifier see them as two
    # batches (``separate_bn_batches``); None: one joint batch
    parts: Optional[Tuple[GraphBatch, GraphBatch]] = None

    @property
    def n_episodes(self) -> int:
        return self.graphs.n_groups


def episode_batch(packed: PackedGraphs, labels: torch.Tensor, support: torch.Tensor, query: torch.Tensor,
                  task_ids: torch.Tensor, aux_ids: torch.Tensor, frozen_cache: Optional[torch.Tensor] = None,
                  query_aux_offset: int = 0, query_aux_hidden: Optional[torch.Tensor] = None,
                  separate_parts: bool = False, capacity: Optional[BatchCapacity] = None) -> EpisodeBatch:
    """Assemble an :class:`EpisodeBatch` from index tensors.

    Parameters
    ----------
    packed: PackedGraphs
        The dataset's molecules.
    labels: Tensor [n_molecules, n_properties]
        The dataset's label matrix (NaN = missing), on the same device.
    support, query: Tensor [E, n_support], [E, n_query]
        Molecule indices of each episode, best host tensors (the batch's sizes are computed from them).
    task_ids, aux_ids: Tensor [E], [E, P - 1]
        Target and auxiliary property columns.
    query_aux_hidden: Tensor [E] of bool, optional
        Episodes whose query molecules get no auxiliary labels (all "missing").
    separate_parts: bool
        Also gather the support and the query molecules as two graph batches (``parts``).
    capacity: BatchCapacity, optional
        Pad the (joint) graph batch to these sizes; not with ``separate_parts``.
    """
    if capacity is not None and separate_parts:
        raise ValueError("padded batches (capacity) come without separate support and query parts")
    device = packed.atoms.device
    support, query = support.cpu(), query.cpu()
    molecules = torch.cat([support, query], dim=1)
    columns = to_device(torch.cat([task_ids.view(-1, 1), aux_ids], dim=1), device)        # [E, P]

    def take(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return labels[to_device(rows, device).unsqueeze(-1), cols.unsqueeze(1)]

    support_labels = take(support, columns)
    query_aux = take(query, columns[:, 1:])
    if query_aux_hidden is not None:
        query_aux = query_aux.masked_fill(to_device(query_aux_hidden, device).view(-1, 1, 1), float("nan"))
    return EpisodeBatch(
        graphs=gather_graphs(packed, molecules, capacity),
        frozen=None if frozen_cache is None else to_device(frozen_cache[to_device(molecules, frozen_cache.device)],
                                                           device),
        property_ids=columns,
        labels=dense_label_graph(support_labels, query_aux, query_aux_offset),
        n_support=support.shape[1],
        support_labels=support_labels[:, :, 0],
        query_labels=take(query, columns[:, :1])[:, :, 0],
        task_ids=to_device(task_ids, device),
        parts=(gather_graphs(packed, support), gather_graphs(packed, query))
        if separate_parts and query.shape[1] else None)
