"""Pin-Tuning: parameter-efficient in-context tuning of pre-trained molecular GNNs, for DeepChem.

"""
from deepchem_pintuning.data import FewShotDataset, load_fewshot, task_splits
from deepchem_pintuning.episodes import Episode, EpisodeSampler, evaluation_episodes
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer, UnsupportedMoleculeError
from deepchem_pintuning.metalearning import EpisodicMetaLearner

__version__ = "0.1.0"

__all__ = [
    "Episode", "EpisodeSampler", "EpisodicMetaLearner", "FewShotDataset", "PretrainGNNFeaturizer",
    "UnsupportedMoleculeError", "evaluation_episodes", "load_fewshot", "task_splits",
]

