"""Scoring a user's own assay: adapt a meta-trained model to 10 + 10 labelled molecules, rank a library.

:class:`AssayScoring` holds the methods of :class:`~deepchem_pintuning.model.PinTuningModel` for
this use (a mixin: they need the model's network, settings, device and worker count). The new
assay takes the model's spare, zero-initialised property row; the meta-training properties are its
auxiliary properties, with every label missing (a user's molecules have none). By default every
molecule is scored on its own context graph (:mod:`deepchem_pintuning.inductive`).
"""
from __future__ import annotations

import logging
from typing import List, Sequence, Tuple, Union

import numpy as np

from deepchem_pintuning.inductive import AdaptedSupport, adapt_to_support, score_molecules
from deepchem_pintuning.meta_training import predict_episode
from deepchem_pintuning.user_assay import FeaturizedLibrary, build_user_episode, featurize_library, featurize_support

logger = logging.getLogger(__name__)


class AssayScoring:
    """``adapt_to_assay`` / ``score_smiles`` / ``predict_smiles`` of ``PinTuningModel``."""

    def adapt_to_assay(self, support_smiles: Sequence[str], support_labels: Sequence[float],
                       seed: int = 0) -> AdaptedSupport:
        """Adapt to a new assay from its labelled support SMILES (for :meth:`score_smiles`).

        The new assay takes the model's spare property row; the meta-training properties are its
        auxiliary properties, with every label missing (a user's molecules have none). The model
        itself is not modified. Raises ``ValueError`` for labels other than 0/1 or fewer than two
        actives or two inactives.
        """
        self._ensure_built()
        graphs, labels, _ = featurize_support(support_smiles, support_labels, self.config.kekulize)
        aux = [i for i in range(self.n_tasks) if i not in set(self.test_task_ids)]
        return adapt_to_support(self.model, graphs, labels, self.n_tasks, aux, seed, device=self.device,
                                mode=self.config.deployment_adaptation)

    def score_smiles(self, adapted: AdaptedSupport, smiles: Union[Sequence[str], FeaturizedLibrary],
                     batch_size: int = 64) -> Tuple[np.ndarray, List[str]]:
        """Inductive scores of ``smiles`` for an assay from :meth:`adapt_to_assay`, and a reason per molecule.

        Every distinct SMILES is featurized and scored once, so copies get identical scores. A
        molecule that cannot be featurized gets NaN and the reason (``""`` for scored molecules).
        ``smiles`` may be featurized already (:func:`~deepchem_pintuning.user_assay.featurize_library`),
        e.g. to score one library for several adaptations or to featurize the next chunk of a
        library while this one is scored.
        """
        library = smiles if isinstance(smiles, FeaturizedLibrary) else featurize_library(smiles, self.config.kekulize)
        scores = np.full(int(library.distinct_index.max(initial=-1)) + 1, np.nan)
        if len(library.graphs):
            scores[library.featurized] = score_molecules(self.model, adapted, library.graphs, batch_size,
                                                         self.workers)
        return scores[library.distinct_index], library.reasons

    def predict_smiles(self, support_smiles: Sequence[str], support_labels: Sequence[float],
                       query_smiles: Sequence[str], seed: int = 0, transductive: bool = False) -> np.ndarray:
        """Probability of activity of ``query_smiles`` on a new assay given its labelled support set.

        By default every molecule is scored on its own context graph (support + that molecule,
        :mod:`deepchem_pintuning.inductive`): the same inputs give the same scores and a score
        does not depend on the other query molecules. ``transductive=True`` scores as in the paper's
        evaluation (query chunks share a context graph; the adaptation sees a random query sample).
        SMILES that cannot be featurized get NaN (logged). Raises ``ValueError`` when fewer than
        two actives or two inactives remain in the support set.
        """
        self._ensure_built()
        scores = np.full(len(query_smiles), np.nan)
        if transductive:
            data, episode, kept = build_user_episode(support_smiles, support_labels, query_smiles, self.n_tasks,
                                                     self.test_task_ids, self.config.kekulize)
            scores[kept] = predict_episode(self.model, data, episode, None, seed, self.device)
            return scores
        scores, reasons = self.score_smiles(self.adapt_to_assay(support_smiles, support_labels, seed), query_smiles)
        failed = [(s, r) for s, r in zip(query_smiles, reasons) if r]
        if failed:
            logger.warning("query: %d of %d molecules cannot be featurized (score NaN), e.g. %r (%s)",
                           len(failed), len(query_smiles), *failed[0])
        return scores
