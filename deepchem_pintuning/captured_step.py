"""The fast path's outer step replayed as a CUDA graph: the answer to a launch-bound GPU step.

On a GPU the one-batch outer step is bound by its ~5,800 kernel launches, not by arithmetic
(``benchmarks/results/profile_gpu.json``: 0.03 s of kernel time in a 0.13-0.19 s step). A CUDA graph
replays the kernels of one captured call without launching them one by one; on a lent H200 the
captured step replayed in 0.029 s against 0.132 s eager, gradients equal to 1e-6
(``benchmarks/results/cuda_graph_probe.json``).

A graph replays on the memory it was captured on, with the shapes it was captured with. So:

* every batch is padded to one :class:`~deepchem_pintuning.episode_batch.BatchCapacity`, chosen
  before training from the sizes of sampled steps (:func:`training_capacity`); a step whose batch
  does not fit runs eagerly (:meth:`CapturedStep.try_step` declines it);
* each step copies its batch into the *static* batch the graph was captured on, replays, and
  hands back the gradients (re-attached to the parameters' ``.grad``), the loss parts and the
  BatchNorm records, all tensors that the replay refreshed in place.

Departures from the eager fast path, and why:

* dropout draws from the default CUDA generator (each replay advances it) instead of a fresh
  generator per pass, which cannot be seeded inside a capture, and over padded shapes: the step
  equals the eager step exactly only with dropout off; with dropout it is a different, equally
  distributed draw, reproducible for a given seed;
* models that see support and query as separate batches (``separate_bn_batches``, the official
  preset) are not padded and run eagerly.

Without ``capture`` (any device) the same static-batch mechanics run eagerly: the CPU tests check
them against the plain fast path, and the GPU tests check the replay.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from deepchem_pintuning.batched_meta_training import DeviceDataset, meta_gradients
from deepchem_pintuning.emb_bwc import EmbBWC
from deepchem_pintuning.episode_batch import BatchCapacity, CapacityExceeded, EpisodeBatch, PackedGraphs
from deepchem_pintuning.episodes import Episode, EpisodeSampler
from deepchem_pintuning.grouped_ops import PassState
from deepchem_pintuning.pintuning import PinTuning

logger = logging.getLogger(__name__)


def _round_up(value: float, multiple: int) -> int:
    return int(-(-value // multiple) * multiple)


def capacity_for(packed: PackedGraphs, steps: Sequence[np.ndarray], margin: float = 0.1) -> BatchCapacity:
    """A capacity holding every step of ``steps`` (molecule indices ``[E, M]`` each) with ``margin`` to
    spare, rounded up (atom slots to 8, atom entries to 256, bonds to 1,024); at most one atom entry
    per slot (padding atoms need free slots).

    Examples
    --------
    >>> from deepchem_pintuning.featurizer import PretrainGNNFeaturizer
    >>> packed = PackedGraphs(PretrainGNNFeaturizer().featurize(["CCO", "C#N", "C"]))
    >>> capacity_for(packed, [np.array([[0, 1], [2, 1]])])      # two groups of 8 slots: 16 atom entries
    BatchCapacity(atom_slots=8, atoms=16, bonds=1024)
    """
    needed = [BatchCapacity.needed(packed, molecules) for molecules in steps]
    most = {name: max(getattr(n, name) for n in needed) * (1 + margin) for name in ("atom_slots", "atoms", "bonds")}
    n_groups = steps[0].shape[0]
    slots = _round_up(most["atom_slots"], 8)
    atoms = min(_round_up(most["atoms"], 256), n_groups * slots)     # padding atoms need free slots
    return BatchCapacity(slots, atoms, _round_up(most["bonds"], 1024))


def training_capacity(dataset: DeviceDataset, sampler: EpisodeSampler, tasks_per_step: int, episodes_per_task: int,
                      seed: int, n_steps: int = 64) -> BatchCapacity:
    """:func:`capacity_for` ``n_steps`` outer steps drawn as meta-training draws them, from their own
    generator (``seed``): the same capacity for the same data and settings, whatever training draws."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(n_steps):
        tasks = rng.choice(sampler.tasks, tasks_per_step, replace=False)
        episodes = [sampler.sample(task) for task in tasks for _ in range(episodes_per_task)]
        steps.append(np.stack([np.concatenate([e.support, e.query]) for e in episodes]))
    return capacity_for(dataset.graphs, steps)


def copy_batch_(static, batch) -> None:
    """Copy every tensor of ``batch`` into the same-shaped tensor of ``static``, recursively through
    the batch's dataclasses; any other field must be equal."""
    for field in dataclasses.fields(static):
        if field.name == "_cache":
            continue
        target, source = getattr(static, field.name), getattr(batch, field.name)
        if isinstance(target, torch.Tensor):
            if target.shape != source.shape:
                raise ValueError(f"{field.name}: shape {tuple(source.shape)} differs from the static batch's "
                                 f"{tuple(target.shape)}")
            target.copy_(source, non_blocking=True)
        elif dataclasses.is_dataclass(target):
            copy_batch_(target, source)
        elif isinstance(target, tuple):
            for t, s in zip(target, source):
                copy_batch_(t, s)
        elif target != source:
            raise ValueError(f"{field.name}: {source!r} differs from the static batch's {target!r}")


class CapturedStep:
    """:func:`~deepchem_pintuning.batched_meta_training.meta_gradients` of one padded batch per step,
    captured as a CUDA graph at the first call and replayed at every later one.

    Parameters
    ----------
    model: PinTuning
    regularizer: EmbBWC, optional
    capacity: BatchCapacity
        Every batch given is padded to it (``DeviceDataset.batch(..., capacity=...)``).
    capture: bool, default True
        Capture and replay (CUDA only); False runs the same static-batch steps eagerly.
    warmup: int
        Eager steps on a side stream before the capture, as CUDA requires.
    """

    def __init__(self, model: PinTuning, regularizer: Optional[EmbBWC], capacity: BatchCapacity,
                 capture: bool = True, warmup: int = 3):
        self.model, self.regularizer, self.capacity = model, regularizer, capacity
        self.capture, self.warmup = capture, warmup
        self._static: Optional[EpisodeBatch] = None
        self._graph = None
        self._outputs: Optional[Tuple[Dict[str, torch.Tensor], PassState, Dict[str, torch.Tensor]]] = None
        self.replays = 0            # steps computed by replaying the graph

    def try_step(self, dataset: DeviceDataset, episodes: Sequence[Episode], frozen: Optional[torch.Tensor],
                 query_aux_offset: int) -> Optional[Tuple[Dict[str, torch.Tensor], List[PassState]]]:
        """The step of ``episodes`` (:meth:`__call__`) if their batch fits the capacity, else None: the
        caller runs that step eagerly."""
        try:
            batch = dataset.batch(episodes, None, frozen, query_aux_offset, capacity=self.capacity)
        except CapacityExceeded:   # more than the capacity, or no free atom slot left for padding bonds
            return None
        return self(batch)

    def _run(self) -> Tuple[Dict[str, torch.Tensor], PassState]:
        self._static.graphs.clear_cache()     # operators are rebuilt from the static batch's current contents
        state = PassState()
        parts, _ = meta_gradients(self.model, [self._static], self.regularizer, states=[state])
        return parts, state

    def _capture(self, params: Dict[str, torch.nn.Parameter]) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                for p in params.values():
                    p.grad = None
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        for p in params.values():
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            parts, state = self._run()
        self._graph = graph
        self._outputs = parts, state, {name: p.grad for name, p in params.items()}

    def __call__(self, batch: EpisodeBatch) -> Tuple[Dict[str, torch.Tensor], List[PassState]]:
        """Accumulate ``batch``'s outer-loss gradient into ``.grad``; returns the loss parts and the pass state."""
        if not batch.graphs.padded or batch.parts is not None:
            raise ValueError("a captured step takes padded batches without separate parts")
        if self._static is None:
            self._static = batch
        else:
            copy_batch_(self._static, batch)
        params = self.model.trainable_parameters()
        earlier = {name: p.grad for name, p in params.items()}
        if self.capture and self._graph is None:
            try:
                self._capture(params)
            except RuntimeError as error:   # a step that cannot be captured still trains, eagerly
                logger.warning("CUDA graph capture failed, this fit runs its steps eagerly: %s", error)
                self.capture = False
        if self.capture:
            self._graph.replay()
            self.replays += 1
            parts, captured, grads = self._outputs
            state = captured.copy()
        else:
            for p in params.values():
                p.grad = None
            parts, state = self._run()
            grads = {name: p.grad for name, p in params.items()}
        for name, p in params.items():
            grad, before = grads[name], earlier[name]
            p.grad = before if grad is None else grad if before is None else before + grad
        return parts, [state]
