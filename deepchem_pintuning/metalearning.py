"""Few-shot episodes as DeepChem meta-learning tasks: :class:`EpisodicMetaLearner` and :class:`EpisodicMAML`.

DeepChem's torch MAML (``deepchem.metalearning.torch_maml.MAML``) asks its learner for batches with
``get_batch()`` and leaves the learner to guess whether a call wants adaptation data or the
meta-loss data; it checkpoints by pickling ``learner.__dict__``. For few-shot episodes both go wrong:
a learner that counts calls hands the **query** set to ``train_on_current_task()`` when the user
looked at one batch first, and the checkpoint holds the sampler and the whole dataset (17.5 MB for a
4,481-parameter learner on Tox21) which ``MAML.restore()`` cannot read back with torch's default
``weights_only=True`` loading. Hence the two classes here:

* :class:`EpisodicMetaLearner` names the two halves of an episode: ``support_batch()`` and
  ``query_batch()``. Its ``get_batch()`` refuses, with a message pointing at :class:`EpisodicMAML`,
  instead of guessing.
* :class:`EpisodicMAML` subclasses DeepChem's ``MAML`` (same constructor, ``fit``, ``restore``,
  ``train_on_current_task``, ``predict_on_batch``, checkpoint files) and only changes what the
  episode structure forces: the inner steps adapt on ``support_batch()``, the meta-loss uses
  ``query_batch()``, ``train_on_current_task`` adapts on the support set, and checkpoints hold the
  learner's tensors only (``learner.state_dict()``), loaded with ``weights_only=True`` and copied in
  place so the optimizers keep updating the learner's own tensors after ``restore()``.

Subclasses of the learner supply the model: ``compute_model``, ``variables`` and ``parameters``.
Only trainable tensors may be returned by ``parameters()``: MAML calls ``requires_grad_()`` on every
one of them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from deepchem.metalearning import MetaLearner
from deepchem.metalearning.torch_maml import MAML
from deepchem.models.optimizers import GradientDescent

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.episodes import Episode, EpisodeSampler


class EpisodicMetaLearner(MetaLearner):
    """A :class:`MetaLearner` whose tasks are few-shot episodes, with explicit support and query batches.

    ``support_batch()`` and ``query_batch()`` return ``[graphs, labels]``: a PyG batch of the
    episode's support (query) molecules and a float tensor of their 0/1 labels for the episode's
    target property. Train it with :class:`EpisodicMAML`.

    Parameters
    ----------
    sampler: EpisodeSampler
        Draws the training episodes.
    device: torch.device, optional
        Where batches are placed.

    Examples
    --------
    >>> from deepchem_pintuning.data import load_fewshot
    >>> learner = EpisodicMetaLearner(EpisodeSampler(load_fewshot("toxcast-CLD"), n_shot=5, seed=0))
    >>> learner.select_task()
    >>> learner.support_batch()[0].num_graphs, learner.query_batch()[0].num_graphs
    (10, 16)
    """

    def __init__(self, sampler: EpisodeSampler, device: Optional[torch.device] = None):
        self.sampler = sampler
        self.device = device
        self.episode: Optional[Episode] = None

    def select_task(self) -> None:
        self.episode = self.sampler.sample()

    def support_batch(self) -> List:
        """The selected episode's support molecules and labels (what the inner loop adapts on)."""
        return self._batch(query=False)

    def query_batch(self) -> List:
        """The selected episode's query molecules and labels (what the meta-loss is computed on)."""
        return self._batch(query=True)

    def get_batch(self) -> List:
        raise RuntimeError("EpisodicMetaLearner gives support_batch() and query_batch() explicitly; train it "
                           "with deepchem_pintuning.EpisodicMAML (a subclass of DeepChem's MAML)")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The learner's variables by position (``{"variables.0": tensor, ...}``), for checkpoints."""
        return {f"variables.{i}": v.detach().clone() for i, v in enumerate(self.variables)}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Copy saved variables into the learner's own tensors (optimizers stay bound to them)."""
        variables = list(self.variables)
        if sorted(state) != sorted(f"variables.{i}" for i in range(len(variables))):
            raise ValueError(f"checkpoint holds {len(state)} variables, the learner has {len(variables)}")
        with torch.no_grad():
            for i, v in enumerate(variables):
                saved = state[f"variables.{i}"]
                if saved.shape != v.shape:
                    raise ValueError(f"checkpoint variable {i} has shape {tuple(saved.shape)}, "
                                     f"the learner's {tuple(v.shape)}")
                v.copy_(saved)

    def _batch(self, query: bool) -> List:
        if self.episode is None:
            raise RuntimeError("call select_task() before asking for a batch")
        episode = self.episode
        indices, labels = ((episode.query, episode.query_labels) if query
                           else (episode.support, episode.support_labels))
        graphs = collate_graphs([self.sampler.data.graphs[i] for i in indices], self.device)
        return [graphs, torch.as_tensor(labels, device=self.device)]


class EpisodicMAML(MAML):
    """DeepChem's second-order MAML on few-shot episodes: adapt on the support set, meta-loss on the query.

    Takes the arguments of ``deepchem.metalearning.torch_maml.MAML`` and an
    :class:`EpisodicMetaLearner`. ``fit`` is MAML's loop (``meta_batch_size`` episodes per step,
    ``optimization_steps`` inner gradient steps with ``learning_rate``, meta-gradients summed over
    the episodes) with the batches chosen by name. Checkpoints (``checkpoint1.pt``, ... in
    ``model_dir``) hold only tensors: a few kB for a small learner.

    Examples
    --------
    >>> import deepchem as dc, torch
    >>> from deepchem_pintuning.data import load_fewshot
    >>> class Bias(EpisodicMetaLearner):   # a one-parameter learner: the log-odds of "active"
    ...     def __init__(self, sampler):
    ...         super().__init__(sampler)
    ...         self.bias = torch.zeros(())
    ...     def compute_model(self, inputs, variables, training):
    ...         graphs, labels = inputs
    ...         logits = variables[0].expand(graphs.num_graphs)
    ...         return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels), [logits]
    ...     @property
    ...     def variables(self):
    ...         return [self.bias]
    ...     def parameters(self):
    ...         return iter(self.variables)
    >>> learner = Bias(EpisodeSampler(load_fewshot("toxcast-CLD"), n_shot=5, seed=0))
    >>> maml = EpisodicMAML(learner, learning_rate=0.1, meta_batch_size=2,
    ...                     optimizer=dc.models.optimizers.Adam(learning_rate=0.1), device=torch.device("cpu"))
    >>> maml.fit(3)
    >>> restored = EpisodicMAML(Bias(learner.sampler), model_dir=maml.model_dir, device=torch.device("cpu"))
    >>> restored.restore()
    >>> bool(restored.learner.bias == learner.bias), restored._global_step
    (True, 3)
    """

    def fit(self, steps: int, max_checkpoints_to_keep: int = 5, checkpoint_interval: int = 600,
            restore: bool = False) -> None:
        if not isinstance(self.learner, EpisodicMetaLearner):
            raise TypeError("EpisodicMAML needs an EpisodicMetaLearner; use DeepChem's MAML for other learners")
        if restore:
            self.restore()
        checkpoint_time = time.time()
        learner = self.learner
        variables = list(learner.variables)
        for step in range(steps):
            self._pytorch_optimizer.zero_grad()
            summed = None
            for _ in range(self.meta_batch_size):
                learner.select_task()
                support = learner.support_batch()
                fast = variables
                for _ in range(self.optimization_steps):
                    loss, _ = learner.compute_model(support, fast, True)
                    grads = torch.autograd.grad(loss, fast, create_graph=True, allow_unused=True)
                    fast = [v if g is None else v - self.learning_rate * g for v, g in zip(fast, grads)]
                meta_loss, _ = learner.compute_model(learner.query_batch(), fast, True)
                meta_grads = torch.autograd.grad(meta_loss, variables, allow_unused=True)
                meta_grads = [torch.zeros_like(v) if g is None else g for v, g in zip(variables, meta_grads)]
                summed = meta_grads if summed is None else [s + g for s, g in zip(summed, meta_grads)]
            for param, grad in zip(learner.parameters(), summed):
                param.grad = grad
            self._pytorch_optimizer.step()
            if self._lr_schedule is not None:
                self._lr_schedule.step()
            self._global_step += 1
            if step == steps - 1 or time.time() >= checkpoint_time + checkpoint_interval:
                self.save_checkpoint(max_checkpoints_to_keep)
                checkpoint_time = time.time()

    def train_on_current_task(self, optimization_steps: int = 1, restore: bool = True) -> None:
        """``optimization_steps`` gradient-descent steps on the selected episode's **support** set."""
        if restore:
            self.restore()
        learner = self.learner
        optimizer = GradientDescent(learning_rate=self.learning_rate)._create_pytorch_optimizer(
            learner.parameters())
        support = learner.support_batch()
        for _ in range(optimization_steps):
            optimizer.zero_grad()
            loss, _ = learner.compute_model(support, learner.variables, True)
            loss.backward()
            optimizer.step()

    def save_checkpoint(self, max_checkpoints_to_keep: int = 5, model_dir: Optional[str] = None) -> None:
        """Write ``checkpoint1.pt`` (newest) ... ``checkpoint<max_checkpoints_to_keep>.pt`` like MAML,
        holding ``learner.state_dict()`` instead of the learner's ``__dict__``."""
        folder = Path(model_dir or self.model_dir)
        folder.mkdir(parents=True, exist_ok=True)
        data = {"model_state_dict": {"state_dict": self.learner.state_dict()},
                "learning_rate": self.learning_rate,
                "optimizer_state_dict": self._pytorch_optimizer.state_dict(),
                "task_optimizer_state_dict": self._pytorch_task_optimizer.state_dict(),
                "global_step": self._global_step}
        temp = folder / "temp_checkpoint.pt"
        torch.save(data, temp)
        paths = [folder / f"checkpoint{i + 1}.pt" for i in range(max_checkpoints_to_keep)]
        paths[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1])):
            if newer.exists():
                newer.rename(older)
        temp.rename(paths[0])

    def restore(self) -> None:
        """Load the newest checkpoint (``weights_only=True``) into the learner's own tensors and the optimizers."""
        checkpoints = sorted(self.get_checkpoints(self.model_dir))
        if not checkpoints:
            raise ValueError(f"No checkpoint found in {self.model_dir}")
        data = torch.load(checkpoints[0], map_location=self.device, weights_only=True)
        self.learner.load_state_dict(data["model_state_dict"]["state_dict"])
        self.learning_rate = data["learning_rate"]
        self._pytorch_optimizer.load_state_dict(data["optimizer_state_dict"])
        self._pytorch_task_optimizer.load_state_dict(data["task_optimizer_state_dict"])
        self._global_step = data["global_step"]
