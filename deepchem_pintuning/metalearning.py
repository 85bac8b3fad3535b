"""Few-shot episodes as a task source for :class:`deepchem.metalearning.MetaLearner`.

DeepChem's torch MAML (``deepchem.metalearning.torch_maml.MAML``) calls ``select_task()`` once per
task and then ``get_batch()`` once per inner optimisation step plus once for the meta-loss. The
:class:`EpisodicMetaLearner` below answers the first ``inner_steps`` calls with the support set of
the selected episode and the next call with its query set, so the inner loop adapts on the support
set and the meta-gradient comes from the query set.

Subclasses supply the model: ``compute_model``, ``variables`` and ``parameters``. Only trainable
tensors may be returned by ``parameters()``: MAML calls ``requires_grad_()`` on every one of them.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from deepchem.metalearning import MetaLearner

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.episodes import Episode, EpisodeSampler


class EpisodicMetaLearner(MetaLearner):
    """A :class:`MetaLearner` whose tasks are few-shot episodes.

    ``get_batch()`` returns ``[graphs, labels]``: a PyG batch of the molecules and a float tensor of
    their 0/1 labels for the episode's target property.

    Parameters
    ----------
    sampler: EpisodeSampler
        Draws the training episodes.
    inner_steps: int, default 1
        Must equal the ``optimization_steps`` given to MAML.
    device: torch.device, optional
        Where batches are placed.

    Examples
    --------
    >>> from deepchem_pintuning.data import load_fewshot
    >>> learner = EpisodicMetaLearner(EpisodeSampler(load_fewshot("toxcast-CLD"), n_shot=5, seed=0))
    >>> learner.select_task()
    >>> support, query = learner.get_batch(), learner.get_batch()
    >>> support[0].num_graphs, query[0].num_graphs
    (10, 16)
    """

    def __init__(self, sampler: EpisodeSampler, inner_steps: int = 1,
                 device: Optional[torch.device] = None):
        self.sampler = sampler
        self.inner_steps = inner_steps
        self.device = device
        self.episode: Optional[Episode] = None
        self._calls = 0

    def select_task(self) -> None:
        self.episode = self.sampler.sample()
        self._calls = 0

    def get_batch(self) -> List:
        if self.episode is None:
            raise RuntimeError("call select_task() before get_batch()")
        if self._calls > self.inner_steps:
            raise RuntimeError(f"get_batch() called {self._calls + 1} times for one task; "
                               f"expected {self.inner_steps} support batches and one query batch")
        use_support = self._calls < self.inner_steps
        self._calls += 1
        episode = self.episode
        indices, labels = ((episode.support, episode.support_labels) if use_support
                           else (episode.query, episode.query_labels))
        graphs = collate_graphs([self.sampler.data.graphs[i] for i in indices], self.device)
        return [graphs, torch.as_tensor(labels, device=self.device)]
