"""The context graph ``support + one molecule`` of inductive scoring, for many molecules at once.

Every scored molecule gets the same context graph apart from its own node: ``P`` property nodes,
the ``n_s`` support molecules and the molecule itself (the last node). In eval mode (no dropout,
BatchNorm on running statistics) this evaluates
:func:`~deepchem_pintuning.batched_context.context_forward` on those graphs with the work that does
not depend on the molecule done once per support set (:class:`SupportContext`), and the work whose
result is never read skipped. Exact rewrites (same numbers as ``context_forward``, which stays the
test oracle):

* first layer: the similarity scores between support molecules and the linear maps
  (``neighbour``, ``root``) of the property and support nodes see only the input vectors, which
  are the same for every molecule: computed once;
* last layer: only two node vectors are read (the target property's and the molecule's), so only
  their root maps and incoming messages are computed, not those of the other ``P + n_s - 1`` nodes.

Middle layers (models with more than two context layers) are computed in full.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepchem_pintuning.batched_context import pair_scores, similarity_scores, top_k_adjacency
from deepchem_pintuning.batched_network import ParamView
from deepchem_pintuning.context_graph import SIMILAR, ContextEncoder
from deepchem_pintuning.episode_batch import LabelGraph
from deepchem_pintuning.grouped_ops import batch_norm, linear


@dataclass
class SupportContext:
    """What the context graphs ``support + molecule`` share: computed once per adapted support set."""

    prop_x: torch.Tensor          # [P, d] property-node inputs (target first)
    support_x: torch.Tensor       # [n_s, d] support-node inputs (frozen-encoder vectors)
    support_scores: torch.Tensor  # [n_s, n_s] first-layer similarity scores among the support molecules
    fixed_neighbour: torch.Tensor  # [P + n_s, d] first-layer neighbour map of the property and support nodes
    fixed_root: torch.Tensor      # [P + n_s, d] first-layer root map of the same nodes
    adjacency: torch.Tensor       # [N, N] label edges (N = P + n_s + 1, the molecule last)
    type_counts: torch.Tensor     # [N, edge types] label edges by type into each node
    in_degree: torch.Tensor       # [N] label in-degree

    @classmethod
    def build(cls, context: ContextEncoder, params: ParamView, prefix: str, prop_x: torch.Tensor,
              support_x: torch.Tensor, labels: LabelGraph) -> "SupportContext":
        """``labels``: the label graph of one ``support + molecule`` graph (leading axis of size 1)."""
        fixed = torch.cat([prop_x, support_x])
        conv = f"{prefix}convs.0."
        support_scores = similarity_scores(context.similarity[0], params, f"{prefix}similarity.0.net.",
                                           support_x.unsqueeze(0), None)[0]
        return cls(prop_x, support_x, support_scores,
                   linear(fixed, params.get(f"{conv}neighbour.weight"), params.get(f"{conv}neighbour.bias")),
                   linear(fixed, params.get(f"{conv}root.weight"), params.get(f"{conv}root.bias")),
                   labels.adjacency[0], labels.type_counts[0], labels.in_degree[0])


def first_layer_scores(context: ContextEncoder, params: ParamView, prefix: str, shared: SupportContext,
                       molecules: torch.Tensor) -> torch.Tensor:
    """First-layer similarity scores ``[B, n_s + 1, n_s + 1]`` of the graphs ``support + molecule``."""
    n_mols, n_support = molecules.size(0), shared.support_x.size(0)
    to_support = pair_scores(context.similarity[0], params, f"{prefix}similarity.0.net.",
                             molecules.unsqueeze(1) - shared.support_x.unsqueeze(0), None)     # [B, n_s]
    scores = shared.support_scores.new_zeros(n_mols, n_support + 1, n_support + 1)
    scores[:, :n_support, :n_support] = shared.support_scores
    scores[:, n_support, :n_support] = to_support
    scores[:, :n_support, n_support] = to_support
    return scores


def molecule_context(context: ContextEncoder, params: ParamView, prefix: str, shared: SupportContext,
                     molecules: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target-property vector, molecule vector)``, each ``[B, d]``, of the graphs ``support + molecule``.

    ``molecules``: the frozen-encoder vectors ``[B, d]`` of the scored molecules. Eval mode only.

    Examples
    --------
    >>> from deepchem_pintuning.context_graph import ContextEncoder
    >>> from deepchem_pintuning.episode_batch import dense_label_graph
    >>> context, nan = ContextEncoder(dim=8, top_k=2).eval(), float("nan")
    >>> params = ParamView(context, {})
    >>> labels = dense_label_graph(torch.tensor([[[1.0, 0.0], [0.0, nan], [1.0, 1.0]]]),  # 3 support, 2 properties
    ...                            torch.full((1, 1, 1), nan))                             # the molecule's aux label
    >>> shared = SupportContext.build(context, params, "", torch.randn(2, 8), torch.randn(3, 8), labels)
    >>> prop, mol = molecule_context(context, params, "", shared, torch.randn(5, 8))     # 5 molecules
    >>> tuple(prop.shape), tuple(mol.shape)
    ((5, 8), (5, 8))
    """
    if context.training:
        raise ValueError("molecule_context computes eval-mode context graphs; call model.eval() first")
    n_mols = molecules.size(0)
    n_props, n_nodes = shared.prop_x.size(0), shared.adjacency.size(0)
    x = torch.cat([shared.prop_x.expand(n_mols, -1, -1), shared.support_x.expand(n_mols, -1, -1),
                   molecules.unsqueeze(1)], dim=1)                                              # [B, N, d]
    last = len(context.similarity) - 1
    for layer, (similarity, norm) in enumerate(zip(context.similarity, context.norms)):
        conv, bn = f"{prefix}convs.{layer}.", f"{prefix}norms.{layer}."
        if layer == 0:
            scores = first_layer_scores(context, params, prefix, shared, molecules)
        else:
            scores = similarity_scores(similarity, params, f"{prefix}similarity.{layer}.net.", x[:, n_props:], None)
        sim_weight, sim_degree = top_k_adjacency(scores, context.top_k)            # [B, M, M], [B, M]
        # the nodes whose new vector is needed: all of them, but in the last layer the two that are read
        out = torch.arange(n_nodes, device=x.device) if layer < last else \
            torch.tensor([0, n_nodes - 1], device=x.device)
        if layer == 0:
            neighbour = torch.cat([shared.fixed_neighbour.expand(n_mols, -1, -1),
                                   linear(molecules, params.get(f"{conv}neighbour.weight"),
                                          params.get(f"{conv}neighbour.bias")).unsqueeze(1)], dim=1)
            root = torch.cat([shared.fixed_root.expand(n_mols, -1, -1),
                              linear(molecules, params.get(f"{conv}root.weight"),
                                     params.get(f"{conv}root.bias")).unsqueeze(1)], dim=1)[:, out]
        else:
            neighbour = linear(x, params.get(f"{conv}neighbour.weight"), params.get(f"{conv}neighbour.bias"))
            root = linear(x[:, out], params.get(f"{conv}root.weight"), params.get(f"{conv}root.bias"))
        type_table = params.get(f"{conv}edge_type_embedding.weight")
        summed = torch.matmul(shared.adjacency[out], neighbour) + shared.type_counts[out] @ type_table
        # similarity edges u -> v into the molecule nodes among ``out`` (property nodes have none)
        mol_out = out[out >= n_props] - n_props
        into = sim_weight[:, :, mol_out]                                                       # [B, M, |mol_out|]
        sim_in = into.transpose(1, 2) @ neighbour[:, n_props:] + \
            into.sum(1).unsqueeze(-1) * type_table[SIMILAR]
        summed[:, out >= n_props] += sim_in
        degree = shared.in_degree[out] + nn.functional.pad(sim_degree, (n_props, 0))[:, out]
        x = summed / degree.clamp(min=1).unsqueeze(-1) + root
        x = nn.functional.leaky_relu(batch_norm(x, norm, params.get(f"{bn}weight"), params.get(f"{bn}bias"), False))
    return x[:, 0], x[:, -1]
