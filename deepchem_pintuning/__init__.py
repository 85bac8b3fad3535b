"""Pin-Tuning: parameter-efficient in-context tuning of pre-trained molecular GNNs, for DeepChem.

Importing the package registers its models on :mod:`deepchem.models` (see :func:`register`), so
DeepChem scripts can write ``dc.models.PinTuningModel(...)`` after ``import deepchem_pintuning``.
"""
from deepchem_pintuning.data import FewShotDataset, load_fewshot, task_splits
from deepchem_pintuning.episodes import Episode, EpisodeSampler, evaluation_episodes
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer, UnsupportedMoleculeError
from deepchem_pintuning.metalearning import EpisodicMetaLearner
from deepchem_pintuning.model import PinTuningModel
from deepchem_pintuning.pintuning import PinTuningConfig

__version__ = "0.1.0"

__all__ = [
    "Episode", "EpisodeSampler", "EpisodicMetaLearner", "FewShotDataset", "PinTuningConfig", "PinTuningModel",
    "PretrainGNNFeaturizer",
    "UnsupportedMoleculeError", "evaluation_episodes", "load_fewshot", "register", "task_splits",
]


def register() -> None:
    """Expose this package's models as attributes of :mod:`deepchem.models`. Safe to call twice.

    Examples
    --------
    >>> import deepchem as dc
    >>> register()
    >>> register()
    >>> dc.models.PinTuningModel.__name__
    'PinTuningModel'
    """
    import deepchem.models

    deepchem.models.PinTuningModel = PinTuningModel


register()
