"""The fast path of meta-training and evaluation: the episodes of an outer step in batches.

Same objective as :mod:`deepchem_pintuning.meta_training` (the reference, kept as the test
oracle). Within a batch of ``E`` episodes every tuned parameter is expanded to ``[E, ...]``, one
copy per episode; the support losses of all episodes are summed, so one ``autograd.grad`` yields
every episode's own inner gradient (episode ``e``'s loss depends on copy ``e`` only). The outer
loss then runs on the stacked fast weights and its backward reaches the shared parameters through
the expansion, second order included. Nothing in the step synchronises with the host: losses come
back as tensors.

How the episodes of a step are cut into batches is a device choice: on a GPU one batch of all
episodes (few, large kernels); on a CPU batches of one episode, run by one worker thread per core
(:func:`meta_gradients`), since large batches only add memory traffic there.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from deepchem_pintuning.batched_network import batched_forward
from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.emb_bwc import EmbBWC
from deepchem_pintuning.episode_batch import BatchCapacity, EpisodeBatch, PackedGraphs, episode_batch
from deepchem_pintuning.episodes import Episode
from deepchem_pintuning.grouped_ops import PassState
from deepchem_pintuning.meta_training import adaptation_seed, emb_bwc_penalty, nt_xent, preserved_buffers
from deepchem_pintuning.pintuning import PinTuning

Params = Dict[str, torch.Tensor]


class DeviceDataset:
    """A few-shot dataset's molecules and labels as device tensors, built once per dataset."""

    def __init__(self, data: FewShotDataset, device: Optional[torch.device] = None):
        self.data = data
        self.graphs = PackedGraphs(data.graphs, device)
        self.labels = torch.as_tensor(data.labels, dtype=torch.get_default_dtype(), device=device)

    def batch(self, episodes: Sequence[Episode], queries: Optional[Sequence[np.ndarray]] = None,
              frozen_cache: Optional[torch.Tensor] = None, query_aux_offset: int = 0,
              separate_parts: bool = False, capacity: Optional[BatchCapacity] = None) -> EpisodeBatch:
        """Episodes of equal shape as one :class:`EpisodeBatch` (``queries`` replace the episodes' queries),
        padded to ``capacity`` when given."""
        queries = [e.query for e in episodes] if queries is None else queries

        def stack(arrays) -> torch.Tensor:
            return torch.as_tensor(np.stack(arrays), dtype=torch.long)

        return episode_batch(self.graphs, self.labels, stack([e.support for e in episodes]), stack(queries),
                             stack([e.task_index for e in episodes]), stack([e.aux_task_indices for e in episodes]),
                             frozen_cache, query_aux_offset, torch.as_tensor([e.query_aux_hidden for e in episodes]),
                             separate_parts, capacity)


def expand_per_episode(params: Params, n_episodes: int) -> Params:
    """One (autograd-linked) copy of every parameter per episode: ``[E, ...]`` views."""
    return {name: p.unsqueeze(0).expand(n_episodes, *p.shape) for name, p in params.items()}


def batched_inner_adapt(model: PinTuning, batch: EpisodeBatch, stacked: Params, lr: float, steps: int,
                        create_graph: bool, state: Optional[PassState]) -> Params:
    """Every episode's SGD steps on its own support loss, at once; returns stacked fast weights."""
    fast = dict(stacked)
    for _ in range(steps):
        logits, _ = batched_forward(model, fast, batch, state)
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits[:, :batch.n_support], batch.support_labels, reduction="none").mean(1)
        grads = torch.autograd.grad(losses.sum(), list(fast.values()), create_graph=create_graph, allow_unused=True)
        fast = {name: p if g is None else p - lr * g for (name, p), g in zip(fast.items(), grads)}
    return fast


def batched_episode_terms(model: PinTuning, batch: EpisodeBatch, regularizer: Optional[EmbBWC],
                          state: Optional[PassState] = None) -> Tuple[torch.Tensor, ...]:
    """Per-episode outer terms of ``batch``: query BCE ``[E]``, Emb-BWC penalty ``[E]``, episode vectors ``[E, d]``."""
    config = model.config
    params = model.trainable_parameters()
    # one episode needs no episode axis: plain parameters take the fused, unbatched kernels
    stacked = params if batch.n_episodes == 1 else expand_per_episode(params, batch.n_episodes)
    fast = batched_inner_adapt(model, batch, stacked, config.inner_lr, config.inner_steps, config.second_order,
                               state)
    logits, vectors = batched_forward(model, fast, batch, state)
    query_losses = nn.functional.binary_cross_entropy_with_logits(
        logits[:, batch.n_support:], batch.query_labels, reduction="none").mean(1)
    penalties = emb_bwc_penalty(model, regularizer, params, fast)          # [E], or a scalar for one episode
    return query_losses, penalties.reshape(-1).expand(batch.n_episodes), vectors


def outer_objective(model: PinTuning, query_losses: torch.Tensor, penalties: torch.Tensor, vectors: torch.Tensor,
                    task_ids: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``mean(query BCE) + lambda * mean(Emb-BWC) (+ w_c * NT-Xent)`` from per-episode terms; parts as tensors."""
    config = model.config
    query_loss, penalty = query_losses.mean(), penalties.mean()
    loss = query_loss + config.emb_bwc_weight * penalty
    parts = {"query_bce": query_loss.detach(), "emb_bwc": penalty.detach()}
    if config.contrastive_weight > 0:
        contrastive = nt_xent(vectors, task_ids, config.contrastive_temperature)
        loss = loss + config.contrastive_weight * contrastive
        parts["nt_xent"] = contrastive.detach()
    parts["loss"] = loss.detach()
    return loss, parts


def pass_states(batches: Sequence[EpisodeBatch]) -> List[PassState]:
    """One :class:`PassState` per batch, with a dropout generator seeded from torch's global generator."""
    seeds = torch.randint(0, 2 ** 62, (len(batches),)).tolist()
    states = []
    for batch, seed in zip(batches, seeds):
        generator = torch.Generator(device=batch.graphs.atom_mask.device)
        generator.manual_seed(seed)
        states.append(PassState(generator))
    return states


def meta_gradients(model: PinTuning, batches: Sequence[EpisodeBatch], regularizer: Optional[EmbBWC],
                   workers: int = 1, states: Optional[List[PassState]] = None
                   ) -> Tuple[Dict[str, torch.Tensor], List[PassState]]:
    """Accumulate the outer loss's gradient into ``.grad`` of the tuned parameters.

    Each batch (pass) runs its inner step, outer forward and its share of the backward on its own;
    with ``workers > 1`` the passes run in that many threads (one CPU core each: PyTorch releases
    the GIL inside its kernels and the autograd engine). Only the small tail that couples the
    episodes (the means and the contrastive term) runs once, in between. The gradients are summed
    in batch order and every pass draws dropout from its own seeded generator, so the result does
    not depend on ``workers``. ``states`` replaces those pass states (a CUDA graph capture passes
    states without a generator: dropout then draws from the default generator, which a graph replays).

    Returns the loss parts (tensors) and the pass states, whose BatchNorm statistics the caller
    applies in order (:meth:`PassState.apply`) after the optimiser step.
    """
    params = model.trainable_parameters()
    states = pass_states(batches) if states is None else states
    pool = ThreadPoolExecutor(workers) if workers > 1 and len(batches) > 1 else None
    run = pool.map if pool is not None else map
    try:
        terms = list(run(lambda i: batched_episode_terms(model, batches[i], regularizer, states[i]),
                         range(len(batches))))
        query, penalty, vectors = (torch.cat(parts) for parts in zip(*terms))
        loss, parts = outer_objective(model, query, penalty, vectors, torch.cat([b.task_ids for b in batches]))
        tails = [[t for t in term if t.requires_grad] for term in terms]
        tail_grads = iter(torch.autograd.grad(loss, [t for tail in tails for t in tail], allow_unused=True))
        tail_grads = [[next(tail_grads) for _ in tail] for tail in tails]

        def backward(i: int):
            outputs = [(t, g) for t, g in zip(tails[i], tail_grads[i]) if g is not None]
            if not outputs:
                return [None] * len(params)
            return torch.autograd.grad([t for t, _ in outputs], list(params.values()), [g for _, g in outputs],
                                       allow_unused=True)

        per_batch = list(run(backward, range(len(batches))))
    finally:
        if pool is not None:
            pool.shutdown()
    for k, p in enumerate(params.values()):
        grads = [g[k] for g in per_batch if g[k] is not None]
        if grads:
            total = torch.stack(grads).sum(0) if len(grads) > 1 else grads[0]
            p.grad = total if p.grad is None else p.grad + total
    return parts, states


def _chunks(query: np.ndarray, size: int) -> List[List[np.ndarray]]:
    """Query chunks of ``size`` molecules grouped by length (all full chunks, then the remainder)."""
    chunks = [query[i:i + size] for i in range(0, len(query), size)]
    return [group for group in ([c for c in chunks if len(c) == size], [c for c in chunks if len(c) != size]) if group]


def batched_predict_episode(model: PinTuning, dataset: DeviceDataset, episode: Episode,
                            frozen_cache: Optional[torch.Tensor], seed: int, chunks_per_pass: int = 1,
                            workers: int = 1) -> np.ndarray:
    """Fast ``meta_training.predict_episode``: same adaptation and scores (dropout masks, drawn from
    another generator, aside), deterministic for a given ``seed``.

    The query chunks (one context graph each) are scored ``chunks_per_pass`` at a time (on a GPU,
    many; on a CPU, one), the passes spread over ``workers`` threads.
    """
    config = model.config
    rng = np.random.default_rng(seed)
    context = rng.choice(episode.query, min(config.n_query, len(episode.query)), replace=False)
    with preserved_buffers(model, config.restore_batchnorm_after_eval):
        model.train()
        batch = dataset.batch([episode], [context], frozen_cache, config.query_aux_offset, config.separate_bn_batches)
        generator = torch.Generator(device=batch.graphs.atom_mask.device)
        state = PassState(generator.manual_seed(adaptation_seed(seed, episode.task_index)))
        fast = batched_inner_adapt(model, batch, model.trainable_parameters(), config.inner_lr, config.inner_steps,
                                   False, state)
        state.apply()
        fast = {name: p.detach() for name, p in fast.items()}
        model.eval()
        passes = [group[start:start + chunks_per_pass] for group in _chunks(episode.query, config.eval_query_chunk)
                  for start in range(0, len(group), chunks_per_pass)]

        def score(chunks: List[np.ndarray]) -> torch.Tensor:
            with torch.no_grad():   # eval mode: the support molecules need no adapted encoding or logit
                batch = dataset.batch([episode] * len(chunks), chunks, frozen_cache, config.query_aux_offset,
                                      separate_parts=True)
                logits, _ = batched_forward(model, fast, batch, query_only=True)
                return torch.sigmoid(logits).reshape(-1)

        if workers > 1 and len(passes) > 1:
            with ThreadPoolExecutor(workers) as pool:
                scores = list(pool.map(score, passes))
        else:
            scores = [score(chunks) for chunks in passes]
    return torch.cat(scores).cpu().numpy()
