"""Inductive few-shot scoring: each molecule scored on a context graph of its own.

The paper's evaluation is transductive: up to 128 query molecules share one context graph, so a
molecule's score depends on which molecules it was batched with, and the test-time adaptation sees
a random sample of the library. For ranking a user's library that is the wrong contract. Here:

1. :func:`adapt_to_support`: the inner step(s) on the support set alone (its own context graph).
   ``mode="train"``: as in meta-training (BatchNorm on the support's batch statistics, dropout from
   a generator seeded by ``seed``); ``mode="eval"``: BatchNorm on its running statistics, no
   dropout. The model itself is left untouched (running statistics are not updated).
2. :func:`score_molecules`: for every molecule, the context graph ``support + that molecule`` in
   eval mode. With BatchNorm in eval mode nothing else couples the molecules, so only the scored
   molecule goes through the adapted encoder (the support molecules' own outputs are not needed),
   what the context graphs share is computed once (:mod:`deepchem_pintuning.inductive_context`),
   and many molecules are scored at once as a batch of small graphs.

A score therefore depends only on the model, the support set, ``seed`` and the molecule: the same
call gives the same scores, and a molecule's score does not change with the rest of the library.
Auxiliary-property labels are whatever the caller passes: a user's molecules have none (all
"missing"), which is also the deployment protocol of the benchmarks.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from deepchem_pintuning.batched_meta_training import batched_inner_adapt
from deepchem_pintuning.batched_network import ParamView, adapter_hook, classify, encode, lookup
from deepchem_pintuning.episode_batch import EpisodeBatch, GraphBatch, PackedGraphs, dense_label_graph, gather_graphs
from deepchem_pintuning.grouped_ops import PassState
from deepchem_pintuning.inductive_context import SupportContext, molecule_context
from deepchem_pintuning.pintuning import PinTuning


@dataclass
class AdaptedSupport:
    """A model adapted to one assay's support set: what :func:`score_molecules` needs."""

    fast: Dict[str, torch.Tensor]   # adapted tuned parameters (shared by every scored molecule)
    frozen: torch.Tensor            # [n_support, d] frozen-encoder vectors of the support (eval mode)
    labels: torch.Tensor            # [n_support, P] support labels on [target, aux...] (NaN = missing)
    property_ids: torch.Tensor      # [1, P] property-embedding rows of the target and auxiliary properties
    query_aux_labels: torch.Tensor  # [P - 1] auxiliary labels every scored molecule gets (NaN = missing)


def _frozen_vectors(model: PinTuning, graphs: GraphBatch) -> torch.Tensor:
    """Frozen-encoder vectors ``[E, M, d]`` in eval mode (per molecule, no batch statistics)."""
    was_training = model.frozen_encoder.training
    model.frozen_encoder.eval()
    try:
        with torch.no_grad():
            return encode(model.frozen_encoder, ParamView(model, {}), "frozen_encoder.", graphs, None)
    finally:
        model.frozen_encoder.train(was_training)


def adapt_to_support(model: PinTuning, graphs: Sequence, labels: np.ndarray, task_id: int, aux_ids: Sequence[int],
                     seed: int = 0, query_aux_labels: Optional[np.ndarray] = None,
                     device: Optional[torch.device] = None, mode: str = "train") -> AdaptedSupport:
    """Test-time adaptation on a support set alone; the model is not modified.

    Parameters
    ----------
    graphs: sequence of GraphData
        Featurized support molecules.
    labels: array [n_support] or [n_support, P]
        Target labels (0/1), the auxiliary labels then all missing; or labels on
        ``[target, aux...]`` (auxiliary labels NaN when unknown).
    task_id, aux_ids: int, sequence of int
        Property-embedding rows of the target and of the auxiliary properties.
    seed: int
        Seeds the dropout of the adaptation step (train mode).
    mode: str, default "train"
        ``"train"``: the adaptation step as in meta-training (support-batch BatchNorm statistics,
        seeded dropout); ``"eval"``: running BatchNorm statistics, no dropout.
    query_aux_labels: array [P - 1], optional
        Auxiliary labels every scored molecule gets (default: all missing).
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"adaptation mode must be 'train' or 'eval', got {mode!r}")
    n_props = 1 + len(aux_ids)
    if np.ndim(labels) == 1:  # no auxiliary labels: all missing
        labels = np.concatenate([np.asarray(labels, dtype=float)[:, None],
                                 np.full((len(labels), n_props - 1), np.nan)], axis=1)
    n_support = len(labels)
    dtype = torch.get_default_dtype()
    graph_batch = gather_graphs(PackedGraphs(graphs, device), torch.arange(n_support).view(1, -1))
    label_table = torch.as_tensor(labels, dtype=dtype, device=device)
    property_ids = torch.as_tensor([task_id, *aux_ids], device=device).view(1, -1)
    frozen = _frozen_vectors(model, graph_batch)
    batch = EpisodeBatch(
        graphs=graph_batch, frozen=None if mode == "train" and model.config.frozen_encoder_train_mode else frozen,
        property_ids=property_ids,
        labels=dense_label_graph(label_table[None], label_table.new_zeros(1, 0, n_props - 1),
                                 model.config.query_aux_offset),
        n_support=n_support, support_labels=label_table[None, :, 0], query_labels=None,
        task_ids=property_ids[:, 0])
    was_training = model.training
    model.train(mode == "train")
    try:
        generator = torch.Generator(device=label_table.device).manual_seed(seed)
        # the pass state collects BatchNorm statistics and is dropped: running statistics stay as they are
        fast = batched_inner_adapt(model, batch, model.trainable_parameters(), model.config.inner_lr,
                                   model.config.inner_steps, False, PassState(generator))
    finally:
        model.train(was_training)
    aux = np.full(n_props - 1, np.nan) if query_aux_labels is None else np.asarray(query_aux_labels, dtype=float)
    return AdaptedSupport({name: p.detach() for name, p in fast.items()}, frozen[0], label_table, property_ids,
                          torch.as_tensor(aux, dtype=dtype, device=label_table.device))


def score_molecules(model: PinTuning, adapted: AdaptedSupport, graphs: Union[Sequence, PackedGraphs],
                    batch_size: int = 64, workers: int = 1, frozen: Optional[torch.Tensor] = None) -> np.ndarray:
    """Probability of activity of every molecule in ``graphs``, each on its own context graph.

    ``graphs``: featurized molecules (``GraphData``), or already packed. Batches of ``batch_size``
    molecules are scored in ``workers`` threads (one CPU core each). ``frozen``: the molecules'
    frozen-encoder vectors ``[n, d]`` (eval mode) when the caller has them, e.g. cached for a
    dataset scored on many properties; otherwise they are computed here.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            params = ParamView(model, adapted.fast)
            prop_x = lookup(params.get("property_embedding.weight"), adapted.property_ids)[0]
            # label edges of a support + one molecule graph: the same for every molecule
            labels = dense_label_graph(adapted.labels[None], adapted.query_aux_labels.view(1, 1, -1),
                                       model.config.query_aux_offset)
            shared = SupportContext.build(model.context, params, "context.", prop_x, adapted.frozen, labels)

        packed = graphs if isinstance(graphs, PackedGraphs) else PackedGraphs(graphs, shared.support_x.device)
        n_graphs = len(packed)

        def score(start: int) -> np.ndarray:
            with torch.no_grad():
                stop = min(start + batch_size, n_graphs)
                return _score_chunk(model, params, shared, packed, start, stop,
                                    None if frozen is None else frozen[start:stop])

        starts = range(0, n_graphs, batch_size)
        if workers > 1 and len(starts) > 1:
            with ThreadPoolExecutor(workers) as pool:
                scores = list(pool.map(score, starts))
        else:
            scores = [score(start) for start in starts]
    finally:
        model.train(was_training)
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def _score_chunk(model: PinTuning, params: ParamView, shared: SupportContext, packed: PackedGraphs, start: int,
                 stop: int, frozen: Optional[torch.Tensor]) -> np.ndarray:
    chunk = gather_graphs(packed, torch.arange(start, stop).view(1, -1))
    frozen = _frozen_vectors(model, chunk)[0] if frozen is None else frozen                    # [B, d]
    prop_context, mol_context = molecule_context(model.context, params, "context.", shared, frozen)
    hook = None if model.adapters is None else adapter_hook(model.adapters, params, "adapters.", chunk,
                                                            mol_context.unsqueeze(0), prop_context.unsqueeze(0))
    vectors = encode(model.encoder, params, "encoder.", chunk, None, hook)[0]                   # [B, d]
    features = torch.cat([frozen, mol_context, prop_context, vectors], dim=-1).unsqueeze(0)
    return torch.sigmoid(classify(model, params, features, None)).view(-1).cpu().numpy()
