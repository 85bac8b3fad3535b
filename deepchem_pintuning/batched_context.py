"""Episode-batched context graph encoder: :class:`~deepchem_pintuning.context_graph.ContextEncoder` for ``E`` episodes at once.

Same mathematics as the reference module, in dense form (a context graph has only
``P + M`` ~ 45 nodes per training episode):

* label edges are the constant matrices of :class:`~deepchem_pintuning.episode_batch.LabelGraph`,
  so ``sum_{u->v} (W_n x_u + T[type_uv])`` is ``A_label @ (W_n x) + counts @ T``;
* the similarity network is a stack of matrix products over molecule pairs instead of 1x1
  convolutions, and runs on one half of the pairs only: ``exp(-|x_i - x_j|)`` is symmetric, so
  the score matrix is too. In train mode the BatchNorm statistics of the reference (over all
  ``M^2`` ordered pairs, diagonal included) are recovered by counting each computed pair twice and
  the diagonal, whose features are all ones, as one row of weight ``M``;
* the top-k similarity edges become a dense weighted adjacency (a scatter of the top-k scores).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from deepchem_pintuning.context_graph import SIMILAR, ContextEncoder, SimilarityEdges
from deepchem_pintuning.episode_batch import LabelGraph
from deepchem_pintuning.grouped_ops import PassState, batch_norm, dropout, dropout_rows, linear


def pair_scores(net: SimilarityEdges, params, prefix: str, difference: torch.Tensor,
                state: Optional[PassState], diagonal_weight: Optional[float] = None) -> torch.Tensor:
    """Edge-network scores ``sigmoid(net(exp(-|x_i - x_j|)))`` of pair differences ``[E, Q, d]`` -> ``[E, Q]``.

    ``difference`` (``x_i - x_j`` per pair) is overwritten when no graph is recorded (evaluation):
    the pair tensor is the largest of the pass. In train mode the BatchNorm statistics must be
    those of the reference's full ``n x n`` pair map: the pairs are then the upper-triangle ones
    (each counted twice) and ``diagonal_weight = n`` adds the diagonal (features all ones) as one
    row of weight ``n``. In eval mode each BatchNorm is folded into the preceding linear map.
    """
    h = difference.abs_().neg_().exp_() if not torch.is_grad_enabled() else torch.exp(-difference.abs())
    n_pairs, row_weight = h.size(1), None
    if diagonal_weight is not None:
        h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
        row_weight = torch.cat([torch.full((n_pairs,), 2.0, device=h.device),
                                torch.full((1,), diagonal_weight, device=h.device)]).unsqueeze(0)
    for conv, norm in ((0, 1), (4, 5)):
        weight = params.get(f"{prefix}{conv}.weight").squeeze(-1).squeeze(-1)
        bn, bn_weight, bn_bias = net.net[norm], params.get(f"{prefix}{norm}.weight"), params.get(f"{prefix}{norm}.bias")
        if bn.training:
            h = batch_norm(linear(h, weight), bn, bn_weight, bn_bias, True, state, row_weight)
        else:  # BN(W h) = (scale * W) h + shift
            scale = bn_weight * torch.rsqrt(bn.running_var + bn.eps)
            h = linear(h, weight * scale.unsqueeze(-1), bn_bias - bn.running_mean * scale)
        h = nn.functional.leaky_relu_(h) if not torch.is_grad_enabled() else nn.functional.leaky_relu(h)
        h = dropout_rows(h, net.net[conv + 3].p, net.training, state)
    score = linear(h, params.get(f"{prefix}8.weight").squeeze(-1).squeeze(-1), params.get(f"{prefix}8.bias"))
    return torch.sigmoid(score[:, :n_pairs, 0])


PAIR_BLOCK_ELEMENTS = 1 << 20  # evaluation: pair features built in blocks of ~4 MB


def similarity_scores(net: SimilarityEdges, params, prefix: str, mol: torch.Tensor,
                      state: Optional[PassState]) -> torch.Tensor:
    """Symmetric score matrix ``[E, M, M]`` of the molecules ``mol`` ``[E, M, d]`` (diagonal 0), one half computed.

    The upper triangle is written into zeros and the transpose added (each cell: its score plus an
    exact zero); its gradient reaches each pair as the sum of its two cells' gradients, as indexing
    both cells would give, without the sort-based backward of advanced indexing.
    """
    n_groups, n, dim = mol.shape
    first, second = torch.triu_indices(n, n, 1, device=mol.device)
    diagonal = float(n) if net.training else None
    if torch.is_grad_enabled() or net.training:  # train-mode BatchNorm needs all pairs in one batch
        score = pair_scores(net, params, prefix, mol.index_select(1, first) - mol.index_select(1, second),
                            state, diagonal)
    else:  # in place, a block of groups at a time: the pair tensor is the largest of an evaluation pass
        block = max(1, PAIR_BLOCK_ELEMENTS // max(1, first.numel() * dim))
        score = torch.cat([pair_scores(net, params, prefix,
                                       part.index_select(1, first).sub_(part.index_select(1, second)), state, diagonal)
                           for part in mol.split(block)])
    upper = score.new_zeros(n_groups, n * n).index_copy(1, first * n + second, score).view(n_groups, n, n)
    return upper + upper.transpose(1, 2)


def top_k_adjacency(scores: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``top_k`` best scores as edges: ``(weight [E, M, M], in_degree [E, M])``.

    ``weight[e, u, v]`` is the score of the edge ``u -> v`` (zero where there is none).
    """
    n_groups, n, _ = scores.shape
    k = max(0, min(top_k, n - 1))
    if k == 0:
        return scores.new_zeros(n_groups, n, n), scores.new_zeros(n_groups, n)
    values, columns = scores.topk(k, dim=-1)
    weight = torch.zeros_like(scores).scatter(-1, columns, values)
    return weight, torch.zeros_like(scores).scatter(-1, columns, 1.0).sum(1)


def context_forward(context: ContextEncoder, params, prefix: str, prop_x: torch.Tensor, mol_x: torch.Tensor,
                    labels: LabelGraph, state: Optional[PassState],
                    first_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Final node vectors ``[E, P + M, d]`` (properties first), as ``ContextEncoder.forward`` per episode.

    ``first_scores`` ``[E, M, M]``: the first layer's similarity scores, when the caller has them
    already (eval mode, where that layer sees the molecule vectors as given).
    """
    n_props = prop_x.size(1)
    training = context.training
    x = dropout(torch.cat([prop_x, mol_x], dim=1), context.dropout, training, state)
    for layer, (similarity, norm) in enumerate(zip(context.similarity, context.norms)):
        scores = first_scores if layer == 0 and first_scores is not None else similarity_scores(
            similarity, params, f"{prefix}similarity.{layer}.net.", x[:, n_props:], state)
        sim_weight, sim_degree = top_k_adjacency(scores, context.top_k)
        conv = f"{prefix}convs.{layer}."
        neighbour = linear(x, params.get(f"{conv}neighbour.weight"), params.get(f"{conv}neighbour.bias"))
        type_table = params.get(f"{conv}edge_type_embedding.weight")                   # [(E,) types, d]
        summed = torch.bmm(labels.adjacency, neighbour) + torch.matmul(labels.type_counts, type_table)
        sim_in = torch.bmm(sim_weight.transpose(1, 2), neighbour[:, n_props:]) + \
            sim_weight.sum(1).unsqueeze(-1) * type_table[..., SIMILAR, :].unsqueeze(-2)
        summed = torch.cat([summed[:, :n_props], summed[:, n_props:] + sim_in], dim=1)
        degree = labels.in_degree + nn.functional.pad(sim_degree, (n_props, 0))
        x = summed / degree.clamp(min=1).unsqueeze(-1) + \
            linear(x, params.get(f"{conv}root.weight"), params.get(f"{conv}root.bias"))
        x = batch_norm(x, norm, params.get(f"{prefix}norms.{layer}.weight"), params.get(f"{prefix}norms.{layer}.bias"),
                       norm.training, state)
        x = dropout(nn.functional.leaky_relu(x), context.dropout, training, state)
    return x
