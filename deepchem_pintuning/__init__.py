"""Pin-Tuning: parameter-efficient in-context tuning of pre-trained molecular GNNs, for DeepChem.

Importing the package registers its models on :mod:`deepchem.models` (see :func:`register`), so
DeepChem scripts can write ``dc.models.PinTuningModel(...)`` after ``import deepchem_pintuning``.
"""
import logging
import sys


def _import_deepchem_quietly() -> None:
    """Import DeepChem with its ~16 optional-dependency warnings (TensorFlow, JAX, DGL, ... missing) muted.

    Only DeepChem's own loggers are raised to ERROR, and only while it is first imported; a
    program that imported DeepChem before us keeps whatever it already printed.
    """
    if "deepchem" in sys.modules:
        return
    deepchem_logger = logging.getLogger("deepchem")
    level = deepchem_logger.level
    deepchem_logger.setLevel(logging.ERROR)
    try:
        import deepchem  # noqa: F401
    finally:
        deepchem_logger.setLevel(level)


_import_deepchem_quietly()

from deepchem_pintuning.data import FewShotDataset, load_fewshot, load_fewshot_molnet, task_splits  # noqa: E402
from deepchem_pintuning.episodes import Episode, EpisodeSampler, evaluation_episodes  # noqa: E402
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer, UnsupportedMoleculeError  # noqa: E402
from deepchem_pintuning.metalearning import EpisodicMAML, EpisodicMetaLearner  # noqa: E402
from deepchem_pintuning.model import PinTuningModel  # noqa: E402
from deepchem_pintuning.pintuning import PinTuningConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Episode", "EpisodeSampler", "EpisodicMAML", "EpisodicMetaLearner", "FewShotDataset", "PinTuningConfig",
    "PinTuningModel", "PretrainGNNFeaturizer", "UnsupportedMoleculeError", "evaluation_episodes", "load_fewshot", "load_fewshot_molnet", "register", "task_splits",
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
