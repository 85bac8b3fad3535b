"""Emb-BWC: Bayesian weight consolidation of the encoder's embedding tables.

The embedding tables (atom type, chirality and every layer's bond type and bond direction) are
the only pre-trained weights Pin-Tuning leaves trainable. With a Laplace approximation of the
pre-training posterior around the pre-trained values ``Phi``, fine-tuned values ``Phi'`` pay (paper,
Sec. 3.3) one of three diagonal penalties:

* ``"identity"`` (IM, L2-SP; the paper's default)::

      0.5 * sum_ij (Phi'_ij - Phi_ij)^2

* ``"fisher"`` (FIM, EWC) with ``F_ij = E[(dL_pre/dPhi_ij)^2]``::

      0.5 * sum_ij w_ij (Phi'_ij - Phi_ij)^2,   w = normalised F

* ``"embedding_fisher"`` (EFIM) with one importance per embedding row, ``F~_i = sum_j F_ij``, acting
  on the sum of the row's update::

      0.5 * sum_i w~_i (sum_j Phi'_ij - sum_j Phi_ij)^2,   w~ = normalised F~

Normalisation (:func:`normalise_importances`), so that ``emb_bwc_weight`` means the same for the
three variants: the raw Fisher of a pre-trained encoder is tiny (squared gradients of a converged
loss) and mostly exactly zero (atom and bond types absent from the Fisher sample), which made the
raw FIM / EFIM penalties ~1e5x / ~400x smaller than IM's, i.e. no regularisation at all. The
importances are divided by their mean over every entry (FIM) or row (EFIM) of all tables, then
raised to at least ``FISHER_FLOOR`` = 0.1: an entry the sample never exercised keeps a tenth of the
average pull instead of none. For an isotropic random displacement all three penalties then have
about the same expected size (IM: 1 per squared unit; FIM, EFIM: their mean weight, slightly above 1
because of the floor).

The official code instead penalises ``||Phi_after - Phi_before||_F`` (Frobenius norm, not squared)
between the tables before and after the inner-loop step: :func:`inner_step_penalty`.

The Fisher of the pre-training loss is estimated by :func:`estimate_fisher` from squared gradients
of an attribute-masking loss (Hu et al.'s self-supervised task) over a molecule sample.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from deepchem_pintuning.encoder import PretrainedGNN

IMPORTANCES = ("identity", "fisher", "embedding_fisher")
FISHER_FLOOR = 0.1


def normalise_importances(importances: Dict[str, torch.Tensor], floor: float = FISHER_FLOOR) -> Dict[str, torch.Tensor]:
    """Importances divided by their mean over all entries of all tables, then at least ``floor``.

    Examples
    --------
    >>> w = normalise_importances({"a": torch.tensor([0.0, 1e-6, 3e-6])})["a"]
    >>> [round(float(v), 3) for v in w]
    [0.1, 0.75, 2.25]
    """
    total = sum(float(v.sum()) for v in importances.values())
    count = sum(v.numel() for v in importances.values())
    if not total > 0:
        raise ValueError("the Fisher estimate is zero everywhere: no molecule of the sample exercised the tables")
    mean = total / count
    return {name: (v / mean).clamp(min=floor) for name, v in importances.items()}


class EmbBWC(nn.Module):
    """Penalty pulling embedding tables toward their pre-trained values.

    Parameters
    ----------
    anchors: dict of str -> Tensor
        Pre-trained values of each regularised table (copied and stored as buffers).
    importance: str, default "identity"
        ``"identity"``, ``"fisher"`` or ``"embedding_fisher"``.
    fisher: dict of str -> Tensor, optional
        Diagonal Fisher per table (same shapes as the anchors); required unless ``identity``.
        Normalised by :func:`normalise_importances` (entries for FIM, row sums for EFIM).

    Examples
    --------
    >>> table = torch.zeros(3, 2)
    >>> bwc = EmbBWC({"atoms": table})
    >>> float(bwc({"atoms": table}))
    0.0
    >>> float(bwc({"atoms": table + 1.0}))  # 0.5 * 6 squared unit offsets
    3.0
    """

    def __init__(self, anchors: Dict[str, torch.Tensor], importance: str = "identity",
                 fisher: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
        if importance != "identity" and fisher is None:
            raise ValueError(f"importance={importance!r} needs a Fisher estimate (see estimate_fisher)")
        self.importance = importance
        self.names = list(anchors)
        weights = {}
        if importance == "fisher":
            weights = normalise_importances({n: fisher[n].detach() for n in self.names})
        elif importance == "embedding_fisher":
            weights = normalise_importances({n: fisher[n].detach().sum(dim=1) for n in self.names})
        for i, name in enumerate(self.names):
            self.register_buffer(f"anchor_{i}", anchors[name].detach().clone())
            if name in weights:
                self.register_buffer(f"weight_{i}", weights[name].clone())

    def forward(self, tables: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Penalty of ``tables`` (``[rows, dim]`` each); tables stacked ``[E, rows, dim]`` give one value per episode."""
        total = 0.0
        for i, name in enumerate(self.names):
            delta = tables[name] - getattr(self, f"anchor_{i}")
            if self.importance == "identity":
                total = total + 0.5 * delta.pow(2).sum((-2, -1))
            elif self.importance == "fisher":
                total = total + 0.5 * (getattr(self, f"weight_{i}") * delta.pow(2)).sum((-2, -1))
            else:
                total = total + 0.5 * (getattr(self, f"weight_{i}") * delta.sum(dim=-1).pow(2)).sum(-1)
        return torch.as_tensor(total)


def inner_step_penalty(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """Official-code Emb-BWC: Frobenius norm of the inner-step change of the stacked tables.

    Tables ``after`` stacked per episode (``[E, rows, dim]``) give one norm per episode.

    Examples
    --------
    >>> float(inner_step_penalty([torch.zeros(2, 2)], [torch.full((2, 2), 2.0)]))
    4.0
    >>> inner_step_penalty([torch.zeros(2, 2)], [torch.zeros(3, 2, 2)]).shape
    torch.Size([3])
    """
    delta = torch.cat([(a - b).flatten(-2) for a, b in zip(after, before)], dim=-1)
    return delta.norm(dim=-1)


def estimate_fisher(encoder: PretrainedGNN, batches: Sequence, mask_rate: float = 0.15,
                    probe_steps: int = 200, seed: int = 0,
                    head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Diagonal Fisher of the attribute-masking loss with respect to the embedding tables.

    Procedure: in each molecule batch, ``mask_rate`` of the atoms get the mask token (atom type
    119, chirality 0); a linear head predicts their atom type from the encoder's last-layer atom
    vectors. Without a pre-training ``head``, a linear probe is first fitted on the frozen encoder
    for ``probe_steps`` Adam steps (the pre-trained checkpoints ship without their heads). The
    Fisher is the mean over batches of the squared gradient of the masked-atom cross-entropy with
    respect to each embedding table; the encoder runs in eval mode and is not changed.

    Parameters
    ----------
    encoder: PretrainedGNN
    batches: sequence of PyG batches
        Molecules to average over (for example collated shipped MOSES molecules).
    """
    from deepchem_pintuning.molecule_graph import MASK_ATOM_TYPE

    generator = torch.Generator().manual_seed(seed)
    was_training = encoder.training
    encoder.eval()

    def masked(batch):
        n_mask = max(1, int(mask_rate * batch.num_nodes))
        atoms = torch.randperm(batch.num_nodes, generator=generator)[:n_mask]
        masked_batch = batch.clone()
        masked_batch.x = batch.x.clone()
        masked_batch.x[atoms] = torch.tensor([MASK_ATOM_TYPE, 0])
        return masked_batch, atoms, batch.x[atoms, 0]

    if head is None:
        probe = nn.Linear(encoder.emb_dim, encoder.x_embedding1.num_embeddings)
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        with torch.no_grad():
            frozen = [(encoder.node_embeddings(mb)[atoms], target)
                      for mb, atoms, target in (masked(b) for b in batches)]
        for step in range(probe_steps):
            h, target = frozen[step % len(frozen)]
            optimizer.zero_grad()
            nn.functional.cross_entropy(probe(h), target).backward()
            optimizer.step()
        head = probe

    tables = encoder.embedding_tables()
    fisher = {name: torch.zeros_like(p) for name, p in tables.items()}
    for batch in batches:
        mb, atoms, target = masked(batch)
        loss = nn.functional.cross_entropy(head(encoder.node_embeddings(mb)[atoms]), target)
        grads = torch.autograd.grad(loss, list(tables.values()), allow_unused=True)
        for name, grad in zip(tables, grads):
            if grad is not None:
                fisher[name] += grad.detach().pow(2) / len(batches)
    encoder.train(was_training)
    return fisher
