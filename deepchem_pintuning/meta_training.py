"""Episodic meta-training of Pin-Tuning: one-step MAML inner loop, outer objective, NT-Xent.

Outer step (paper Sec. 3.4, Eq. 10; official code in brackets)::

    for each of T training properties, draw E episodes (T = 5, E = 2)
        theta'  = theta - alpha * grad_theta BCE(support; theta)         (inner step, all tuned params)
        L_ep    = BCE(query; theta') + lambda * EmbBWC(theta')            [lambda * ||Phi' - Phi||_F]
    L = mean_ep L_ep  (+ w_c * NT-Xent(episode vectors, positives = same property))   [w_c = 0.05]

Second-order gradients flow through the inner step (``second_order=True``).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.context_graph import label_edges
from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.emb_bwc import EmbBWC, inner_step_penalty
from deepchem_pintuning.episodes import Episode
from deepchem_pintuning.pintuning import EpisodeInputs, PinTuning

Params = Dict[str, torch.Tensor]


def episode_inputs(data: FewShotDataset, episode: Episode, query: Optional[np.ndarray] = None,
                   frozen_cache: Optional[torch.Tensor] = None, query_aux_offset: int = 0,
                   device: Optional[torch.device] = None) -> EpisodeInputs:
    """Tensors for the context graph of ``episode`` (support + ``query``, default the episode's query)."""
    query = episode.query if query is None else query
    molecules = np.concatenate([episode.support, query])
    columns = np.concatenate([[episode.task_index], episode.aux_task_indices])
    support_labels = torch.as_tensor(data.labels[np.ix_(episode.support, columns)], dtype=torch.float32)
    query_aux = torch.as_tensor(data.labels[np.ix_(query, episode.aux_task_indices)], dtype=torch.float32)
    if episode.query_aux_hidden:
        query_aux = torch.full_like(query_aux, float("nan"))
    query_target = data.labels[query, episode.task_index]
    dtype = torch.get_default_dtype()
    return EpisodeInputs(
        graphs=collate_graphs([data.graphs[i] for i in molecules], device),
        frozen=None if frozen_cache is None else frozen_cache[torch.as_tensor(molecules)].to(device),
        property_ids=torch.as_tensor(columns, dtype=torch.long, device=device),
        label_edges=label_edges(support_labels, query_aux, query_aux_offset),
        n_support=len(episode.support),
        support_labels=torch.as_tensor(episode.support_labels, dtype=dtype, device=device),
        query_labels=torch.as_tensor(query_target, dtype=dtype, device=device))


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


def inner_adapt(model: PinTuning, inputs: EpisodeInputs, params: Params, lr: float, steps: int,
                create_graph: bool) -> Params:
    """Plain SGD on the support loss over every tuned parameter; returns the fast weights."""
    fast = dict(params)
    for _ in range(steps):
        logits, _ = functional_call(model, fast, (inputs,))
        loss = bce(logits[:inputs.n_support], inputs.support_labels)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph, allow_unused=True)
        fast = {name: p if g is None else p - lr * g for (name, p), g in zip(fast.items(), grads)}
    return fast


def nt_xent(vectors: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over L2-normalised vectors; vectors with the same group id are positives.

    Examples
    --------
    >>> v = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> aligned = nt_xent(v, torch.tensor([0, 0, 1, 1]), 0.1)
    >>> crossed = nt_xent(v, torch.tensor([0, 1, 0, 1]), 0.1)
    >>> bool(aligned < crossed)
    True
    """
    z = nn.functional.normalize(vectors, dim=1)
    sim = z @ z.t() / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    groups = groups.to(z.device)
    positives = (groups.unsqueeze(0) == groups.unsqueeze(1)) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    # mean over the positive pairs, without boolean indexing (which waits for a GPU)
    return -torch.where(positives, log_prob, 0.0).sum() / positives.sum()


def emb_bwc_penalty(model: PinTuning, regularizer: Optional[EmbBWC], before: Params, after: Params) -> torch.Tensor:
    """Emb-BWC term of one episode for ``model.config.emb_bwc``.

    Tables with an episode axis (``[E, rows, dim]``, the fast path) give one term per episode.
    """
    names = model.embedding_table_names()
    if model.config.emb_bwc == "inner_step":
        return inner_step_penalty([before[n] for n in names], [after[n] for n in names])
    if regularizer is None:
        return torch.zeros((), device=next(iter(after.values())).device)
    return regularizer({n.split("encoder.", 1)[1]: after[n] for n in names})


def meta_loss(model: PinTuning, episodes: Sequence[Tuple[int, EpisodeInputs]],
              regularizer: Optional[EmbBWC]) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Outer objective over ``(property id, inputs)`` episodes; returns the loss and its parts."""
    config = model.config
    params = model.trainable_parameters()
    query_losses, penalties, vectors = [], [], []
    for _, inputs in episodes:
        fast = inner_adapt(model, inputs, params, config.inner_lr, config.inner_steps, config.second_order)
        logits, vector = functional_call(model, fast, (inputs,))
        query_losses.append(bce(logits[inputs.n_support:], inputs.query_labels))
        penalties.append(emb_bwc_penalty(model, regularizer, params, fast))
        vectors.append(vector)
    query_loss = torch.stack(query_losses).mean()
    penalty = torch.stack(penalties).mean()
    loss = query_loss + config.emb_bwc_weight * penalty
    parts = {"query_bce": query_loss.item(), "emb_bwc": penalty.item()}
    if config.contrastive_weight > 0:
        groups = torch.as_tensor([task for task, _ in episodes])
        contrastive = nt_xent(torch.stack(vectors), groups, config.contrastive_temperature)
        loss = loss + config.contrastive_weight * contrastive
        parts["nt_xent"] = contrastive.item()
    parts["loss"] = loss.item()
    return loss, parts


@contextlib.contextmanager
def preserved_buffers(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) of ``module`` on exit."""
    saved = {name: b.detach().clone() for name, b in module.named_buffers()} if enabled else None
    try:
        yield
    finally:
        if saved is not None:
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    buffer.copy_(saved[name])


def adaptation_seed(seed: int, task_index: int) -> int:
    """Seed of the dropout of a test-time adaptation step: evaluation seed and target property."""
    return seed * 1_000_003 + task_index


def predict_episode(model: PinTuning, data: FewShotDataset, episode: Episode,
                    frozen_cache: Optional[torch.Tensor], seed: int,
                    device: Optional[torch.device] = None) -> np.ndarray:
    """Adapt on the episode's support set, then score every query molecule (probabilities).

    The inner step sees the support plus a random ``n_query`` chunk of the query molecules as
    unlabelled context; prediction runs in eval mode, one context graph per ``eval_query_chunk``
    query molecules. BatchNorm statistics are restored afterwards unless the config reproduces the
    official code's leak. The adaptation step's dropout is drawn from :func:`adaptation_seed`, so
    the same call gives the same scores (torch's global generator is left as it was).
    """
    config = model.config
    rng = np.random.default_rng(seed)
    context = rng.choice(episode.query, min(config.n_query, len(episode.query)), replace=False)
    with preserved_buffers(model, config.restore_batchnorm_after_eval):
        model.train()
        inputs = episode_inputs(data, episode, context, frozen_cache, config.query_aux_offset, device)
        with torch.random.fork_rng(devices=[]):   # the CPU generator is restored afterwards
            torch.manual_seed(adaptation_seed(seed, episode.task_index))
            fast = inner_adapt(model, inputs, model.trainable_parameters(), config.inner_lr,
                               config.inner_steps, create_graph=False)
        fast = {name: p.detach() for name, p in fast.items()}
        model.eval()
        scores: List[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(episode.query), config.eval_query_chunk):
                chunk = episode.query[start:start + config.eval_query_chunk]
                inputs = episode_inputs(data, episode, chunk, frozen_cache, config.query_aux_offset, device)
                logits, _ = functional_call(model, fast, (inputs,))
                scores.append(torch.sigmoid(logits[inputs.n_support:]).cpu().numpy())
    return np.concatenate(scores)
