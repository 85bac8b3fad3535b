"""Few-shot evaluation of a meta-trained model: the fixed evaluation episodes of a seed, scored under
the paper's transductive protocol or the deployment one, and the published protocol's best-of.

:class:`FewShotEvaluation` holds ``evaluate_fewshot`` of :class:`~deepchem_pintuning.model.PinTuningModel`
(a mixin: it needs the model's network, settings, device, worker count and its cached dataset tensors).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import deepchem as dc
import numpy as np
from tqdm.auto import tqdm

from deepchem_pintuning.batched_meta_training import batched_predict_episode
from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.episodes import class_sorted, evaluation_episodes
from deepchem_pintuning.inductive import adapt_to_support, score_molecules
from deepchem_pintuning.meta_training import predict_episode


def best_of_evaluations(history: Sequence[Dict]) -> Dict:
    """The evaluation record with the highest ROC-AUC: the published protocol's number (best of the
    evaluations made during meta-training, each on fresh supports with ``resample_eval_support``).

    Examples
    --------
    >>> best_of_evaluations([{"step": 1, "loss": 0.7}, {"step": 1, "eval_roc_auc": 0.71},
    ...                      {"step": 2, "eval_roc_auc": 0.75}, {"step": 3, "eval_roc_auc": 0.73}])["step"]
    2
    """
    evaluations = [h for h in history if "eval_roc_auc" in h]
    if not evaluations:
        raise ValueError("the history holds no evaluation (fit with eval_every)")
    return max(evaluations, key=lambda h: h["eval_roc_auc"])


DEFAULT_METRICS = (dc.metrics.Metric(dc.metrics.roc_auc_score, name="roc_auc"),
                   dc.metrics.Metric(dc.metrics.prc_auc_score, name="pr_auc"))


class FewShotEvaluation:
    """``evaluate_fewshot`` of ``PinTuningModel``."""

    def evaluate_fewshot(self, data: FewShotDataset, seed: int = 0, tasks: Optional[Sequence[str]] = None,
                         metrics: Sequence[dc.metrics.Metric] = DEFAULT_METRICS, fast: bool = True,
                         protocol: str = "paper", progress: bool = False, return_scores: bool = False) -> Dict:
        """Score the fixed evaluation episodes of ``seed`` (default: the meta-test properties).

        Parameters
        ----------
        protocol: str, default "paper"
            ``"paper"``: the published, transductive protocol (up to ``eval_query_chunk`` query
            molecules share a context graph; query molecules' labels on the training properties are
            visible; the adaptation step sees a random sample of the query). ``"deployment"``: what
            :meth:`predict_smiles` does for a user: no auxiliary labels for any molecule, adaptation
            on the support alone, every query molecule on a context graph of its own
            (:mod:`deepchem_pintuning.inductive`).
        fast: bool, default True
            ``False`` scores the paper protocol with the per-chunk reference implementation.
        progress: bool, default False
            A progress bar over the properties.
        return_scores: bool, default False
            Also keep every query molecule's label and score per property (``per_task[task]
            ["labels"]``, ``["scores"]``), e.g. for :func:`deepchem_pintuning.plotting.roc_pr_curves`.

        Returns the unweighted mean over properties of each metric, plus ``per_task`` scores.
        """
        if protocol not in ("paper", "deployment"):
            raise ValueError(f"protocol must be 'paper' or 'deployment', got {protocol!r}")
        self._ensure_built()
        self._check_featurization(data)
        frozen = self._frozen(data)
        per_task: Dict[str, Dict[str, float]] = {}
        episodes = evaluation_episodes(data, self.config.n_shot, seed, tasks, self.config.shuffle_aux)
        for episode in tqdm(episodes, desc=f"evaluating ({protocol} protocol)", unit="property", disable=not progress):
            if protocol == "paper" and self.config.eval_query_order == "class_sorted":
                episode = class_sorted(episode)
            if protocol == "deployment":
                adapted = adapt_to_support(self.model, [data.graphs[i] for i in episode.support],
                                           episode.support_labels, episode.task_index, episode.aux_task_indices,
                                           seed, device=self.device, mode=self.config.deployment_adaptation)
                scores = score_molecules(self.model, adapted, [data.graphs[i] for i in episode.query],
                                         workers=self.workers, frozen=None if frozen is None else frozen[episode.query])
            elif fast:
                scores = batched_predict_episode(self.model, self._on_device(data), episode, frozen, seed,
                                                 self.eval_chunks_per_pass, self.workers)
            else:
                scores = predict_episode(self.model, data, episode, frozen, seed, self.device)
            per_task[episode.task] = {m.name: float(m.compute_metric(episode.query_labels, scores))
                                      for m in metrics}
            if return_scores:
                per_task[episode.task].update(labels=episode.query_labels.tolist(), scores=scores.tolist())
        result: Dict = {m.name: float(np.mean([s[m.name] for s in per_task.values()])) for m in metrics}
        result["per_task"] = per_task
        return result
