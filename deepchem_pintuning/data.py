"""Few-shot molecular property benchmarks built on DeepChem's MoleculeNet loaders.

:func:`load_fewshot` featurizes a MoleculeNet dataset (Tox21, SIDER, MUV, ToxCast, PCBA) or one of
the nine GS-Meta ToxCast assay-provider groups with :class:`PretrainGNNFeaturizer`, keeps the
multi-task label matrix (missing labels as NaN, never as negatives) and attaches the published
meta-train / meta-test property split from ``task_splits.json``.

Nothing is downloaded: the files are read from the project's ``data/`` folder (or a ``data_dir``
you pass, or ``$PINTUNING_DATA_DIR``). PCBA is not shipped; pass the folder that holds your copy of
MoleculeNet's ``pcba.csv.gz``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import deepchem as dc
import numpy as np
import pandas as pd
from rdkit import rdBase
from tqdm.auto import tqdm

from deepchem_pintuning.featurized_cache import load_featurized, save_featurized
from deepchem_pintuning.featurizer import PretrainGNNFeaturizer

logger = logging.getLogger(__name__)

TOXCAST_GROUPS = ("APR", "ATG", "BSK", "CEETOX", "CLD", "NVS", "OT", "TOX21", "Tanguay")
MOLECULENET_DATASETS = ("tox21", "sider", "muv", "toxcast", "pcba")
DATASETS = MOLECULENET_DATASETS + tuple(f"toxcast-{g}" for g in TOXCAST_GROUPS)

# The raw file each MoleculeNet loader reads from ``data_dir`` (it would download it if missing,
# so the presence is checked before the loader runs).
_RAW_FILES = {
    "tox21": "tox21.csv.gz",
    "sider": "sider.csv.gz",
    "muv": "muv.csv.gz",
    "toxcast": "toxcast_data.csv.gz",
    "pcba": "pcba.csv.gz",
}
_MOLNET_LOADERS = {
    "tox21": dc.molnet.load_tox21,
    "sider": dc.molnet.load_sider,
    "muv": dc.molnet.load_muv,
    "toxcast": dc.molnet.load_toxcast,
    "pcba": dc.molnet.load_pcba,
}
PCBA_HELP = (
    "PCBA is not shipped with deepchem-pintuning (MoleculeNet's pcba.csv.gz, 437,929 molecules x "
    "128 assays, is too large to ship). Download it from DeepChem's MoleculeNet mirror "
    "(https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/pcba.csv.gz) on a machine with "
    "internet access and pass the folder that holds it: load_fewshot('pcba', data_dir=FOLDER).")


class DataFileNotFoundError(FileNotFoundError):
    """A dataset file is not where the loader looks for it."""


def project_data_dir() -> Path:
    """Folder holding the shipped data: ``$PINTUNING_DATA_DIR`` or the project's ``data/``.

    Examples
    --------
    >>> (project_data_dir() / "tox21" / "tox21.csv.gz").exists()
    True
    """
    env = os.environ.get("PINTUNING_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "data"
    if not path.is_dir():
        raise DataFileNotFoundError(
            f"Shipped data folder {path} does not exist. Set PINTUNING_DATA_DIR to the project's "
            "data/ folder or pass data_dir explicitly.")
    return path


def default_cache_dir() -> Path:
    """Where featurized datasets are cached: ``$PINTUNING_CACHE_DIR`` or ``~/.cache/deepchem_pintuning``."""
    env = os.environ.get("PINTUNING_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deepchem_pintuning"


def task_splits() -> Dict[str, Dict[str, List[str]]]:
    """Published meta-train / meta-test property lists for every supported dataset.

    Examples
    --------
    >>> task_splits()["tox21"]["test"]
    ['SR-HSE', 'SR-MMP', 'SR-p53']
    """
    with open(Path(__file__).with_name("task_splits.json")) as handle:
        splits = json.load(handle)["splits"]
    groups = [splits[f"toxcast-{g}"] for g in TOXCAST_GROUPS]
    splits["toxcast"] = {part: [t for g in groups for t in g[part]] for part in ("train", "test")}
    return splits


@dataclass
class FewShotDataset:
    """A featurized multi-property dataset with its meta-train / meta-test property split.

    Attributes
    ----------
    name: str
        Dataset name as passed to :func:`load_fewshot`.
    dataset: deepchem.data.Dataset
        The DeepChem dataset: ``X`` holds one :class:`~deepchem.feat.GraphData` per molecule, ``y``
        the labels, ``w`` is 0 where a label is missing, ``ids`` are the SMILES.
    tasks: list of str
        All property names, in label-column order.
    train_tasks, test_tasks: list of str
        Meta-training and meta-test properties.
    skipped: list of (str, str)
        Molecules of the raw file that could not be featurized, with the reason.
    kekulized: bool
        Whether the molecules were kekulized before featurization (``PinTuningConfig.kekulize``
        must agree).
    """

    name: str
    dataset: dc.data.Dataset
    tasks: List[str]
    train_tasks: List[str]
    test_tasks: List[str]
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    kekulized: bool = False

    def __post_init__(self) -> None:
        y = np.asarray(self.dataset.y, dtype=np.float64).reshape(len(self.dataset), -1)
        w = np.asarray(self.dataset.w).reshape(y.shape)
        self.labels = np.where(w > 0, y, np.nan)
        self.graphs = list(self.dataset.X)
        self.smiles = [str(s) for s in self.dataset.ids]
        self._task_index = {t: i for i, t in enumerate(self.tasks)}

    def __len__(self) -> int:
        return len(self.graphs)

    def task_index(self, task: str) -> int:
        """Column of ``task`` in :attr:`labels`."""
        try:
            return self._task_index[task]
        except KeyError:
            raise KeyError(f"{self.name} has no property {task!r}; properties: {self.tasks}") from None

    def label_counts(self, task: str) -> Tuple[int, int, int]:
        """``(n_active, n_inactive, n_missing)`` of a property."""
        column = self.labels[:, self.task_index(task)]
        missing = int(np.isnan(column).sum())
        active = int(np.nansum(column > 0.5))
        return active, len(column) - missing - active, missing

    def summary(self) -> pd.DataFrame:
        """One row per property: split, actives, inactives, missing labels."""
        rows = []
        for task in self.train_tasks + self.test_tasks:
            active, inactive, missing = self.label_counts(task)
            rows.append({"property": task, "split": "train" if task in self.train_tasks else "test",
                         "active": active, "inactive": inactive, "missing": missing})
        return pd.DataFrame(rows)


def _featurize_toxcast_group(raw_file: Path, tasks: List[str], featurizer, scratch: str) -> dc.data.Dataset:
    """One GS-Meta ToxCast assay-provider file, featurized with DeepChem's CSV loader into ``scratch``."""
    loader = dc.data.CSVLoader(tasks=tasks, feature_field="smiles", featurizer=featurizer)
    return loader.create_dataset(str(raw_file), data_dir=scratch, shard_size=8192)


@contextlib.contextmanager
def _quiet_featurization() -> Iterator[None]:
    feat_logger = logging.getLogger("deepchem.feat.base_classes")
    level = feat_logger.level
    feat_logger.setLevel(logging.ERROR)
    try:
        with rdBase.BlockLogs():
            yield
    finally:
        feat_logger.setLevel(level)


@contextlib.contextmanager
def _featurization_progress(featurizer, total: int, desc: str, enabled: bool) -> Iterator[None]:
    """A molecule-by-molecule progress bar over whatever DeepChem loader drives ``featurizer``.

    DeepChem's loaders featurize in chunks of thousands, so the bar ticks in the featurizer's
    per-molecule ``_featurize`` (wrapped on this instance only, for the duration); molecules that
    RDKit cannot parse never reach it and are counted when their chunk ends.
    """
    bar = tqdm(total=total, desc=desc, unit="mol", disable=not enabled)
    per_molecule, per_chunk = featurizer._featurize, featurizer.featurize

    def featurize_one(datapoint, **kwargs):
        try:
            return per_molecule(datapoint, **kwargs)
        finally:
            bar.update()

    def featurize_chunk(datapoints, *args, **kwargs):
        start = bar.n
        try:
            return per_chunk(datapoints, *args, **kwargs)
        finally:
            if hasattr(datapoints, "__len__"):
                bar.update(max(0, start + len(datapoints) - bar.n))

    featurizer._featurize, featurizer.featurize = featurize_one, featurize_chunk
    try:
        yield
    finally:
        del featurizer._featurize, featurizer.featurize
        bar.close()


def _file_digest(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _raw_smiles(path: Path) -> List[str]:
    if "smiles" not in pd.read_csv(path, nrows=0).columns:
        raise KeyError(f"{path} has no 'smiles' column")
    return pd.read_csv(path, usecols=["smiles"])["smiles"].astype(str).tolist()


def _find_skipped(raw: Sequence[str], kept: Sequence[str], featurizer) -> List[Tuple[str, str]]:
    """Molecules of the raw file missing from the featurized dataset, with the reason."""
    remaining: Dict[str, int] = {}
    for smiles in kept:
        remaining[smiles] = remaining.get(smiles, 0) + 1
    skipped = []
    for smiles in raw:
        if remaining.get(smiles, 0) > 0:
            remaining[smiles] -= 1
        else:
            reason = featurizer.explain_failure(smiles) if hasattr(featurizer, "explain_failure") else None
            skipped.append((smiles, reason or "dropped by the loader"))
    return skipped


def load_fewshot(name: str,
                 data_dir: Optional[str] = None,
                 save_dir: Optional[str] = None,
                 featurizer: Optional[dc.feat.Featurizer] = None,
                 reload: bool = True,
                 progress: bool = True) -> FewShotDataset:
    """Load a few-shot molecular property benchmark.

    Parameters
    ----------
    name: str
        One of ``tox21``, ``sider``, ``muv``, ``toxcast``, ``pcba`` or ``toxcast-<GROUP>`` with
        GROUP in APR, ATG, BSK, CEETOX, CLD, NVS, OT, TOX21, Tanguay (the GS-Meta ToxCast split).
    data_dir: str, optional
        Folder holding the raw file (``tox21.csv.gz``, ``sider.csv.gz``, ``muv.csv.gz``,
        ``toxcast_data.csv.gz``, ``pcba.csv.gz`` or ``toxcast-<GROUP>.csv.gz``). Defaults to the
        shipped copy under the project's ``data/``. Required for ``pcba``.
    save_dir: str, optional
        Cache folder for the featurized dataset (default :func:`default_cache_dir`); each raw file
        content and featurizer gets its own file (``<name>-<sha256 prefix>-<featurizer>.npz``), so a
        changed file is featurized anew. The cache holds plain arrays and is read without
        unpickling (:mod:`deepchem_pintuning.featurized_cache`).
    featurizer: deepchem Featurizer, optional
        Defaults to ``PretrainGNNFeaturizer()`` (what Pin-Tuning needs). Any DeepChem featurizer
        whose features are numeric arrays (fingerprints, descriptors) also works, e.g. for
        baselines; graph featurizers other than PretrainGNNFeaturizer are refused (their objects
        could only be cached by pickling).
    reload: bool, default True
        Reuse a cached featurization when one exists.
    progress: bool, default True
        Show a progress bar (stderr) while featurizing; a cached dataset loads without one.

    Returns
    -------
    FewShotDataset

    Examples
    --------
    >>> fs = load_fewshot("toxcast-CLD")
    >>> len(fs.train_tasks), len(fs.test_tasks)
    (14, 5)
    >>> fs.labels.shape[1]
    19
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown few-shot dataset {name!r}. Valid names: {', '.join(DATASETS)}")
    featurizer = featurizer or PretrainGNNFeaturizer()
    save_dir = str(save_dir or default_cache_dir())
    split = task_splits()[name]

    if name.startswith("toxcast-"):
        folder = Path(data_dir) if data_dir else project_data_dir() / "fewshot_gsmeta" / name
        raw_file = folder / f"{name}.csv.gz"
    else:
        if name == "pcba" and data_dir is None:
            raise DataFileNotFoundError(PCBA_HELP)
        folder = Path(data_dir) if data_dir else project_data_dir() / name
        raw_file = folder / _RAW_FILES[name]
    if not raw_file.exists():
        raise DataFileNotFoundError(f"{raw_file} not found." + (" " + PCBA_HELP if name == "pcba" else ""))
    # one cache file per raw-file content and featurizer: an edited copy is never served a stale featurization
    cache_file = Path(save_dir) / f"{name}-{_file_digest(raw_file)}-{featurizer}.npz"
    raw_smiles = _raw_smiles(raw_file)   # the progress bar's total and the skipped-molecule report
    cached = load_featurized(cache_file) if reload else None
    if cached is None:
        # DeepChem logs every unparsable molecule with a traceback; they are reported once below instead.
        # Its own cache (pickled shards) is written to a scratch folder and never read back.
        with _quiet_featurization(), tempfile.TemporaryDirectory() as scratch, \
                _featurization_progress(featurizer, len(raw_smiles), f"featurizing {name}", progress):
            if name.startswith("toxcast-"):
                tasks = list(pd.read_csv(raw_file, nrows=0).columns[1:])
                featurized = _featurize_toxcast_group(raw_file, tasks, featurizer, scratch)
            else:
                tasks, (featurized,), _ = _MOLNET_LOADERS[name](
                    featurizer=featurizer, splitter=None, transformers=[], reload=False,
                    data_dir=str(folder), save_dir=scratch)
            save_featurized(cache_file, featurized, list(tasks))
        cached = load_featurized(cache_file)
    dataset, tasks = cached

    skipped = _find_skipped(raw_smiles, [str(s) for s in dataset.ids], featurizer)
    if skipped:
        logger.warning("%s: skipped %d of %d molecules that cannot be featurized, e.g. %s (%s)",
                       name, len(skipped), len(skipped) + len(dataset), skipped[0][0], skipped[0][1])
    missing = [t for t in split["train"] + split["test"] if t not in tasks]
    if missing:
        raise ValueError(f"{raw_file} lacks the properties {missing} of the published {name} split")
    return FewShotDataset(name=name, dataset=dataset, tasks=tasks, train_tasks=list(split["train"]),
                          test_tasks=list(split["test"]), skipped=skipped,
                          kekulized=bool(getattr(featurizer, "kekulize", False)))


def load_fewshot_molnet(name: str, featurizer: Optional[dc.feat.Featurizer] = None, data_dir: Optional[str] = None,
                        save_dir: Optional[str] = None, reload: bool = True) -> Tuple[List[str], Tuple, List]:
    """MoleculeNet-style entry: ``(tasks, (train_dataset, test_dataset), transformers)``.

    The "split" of a few-shot benchmark is a split of its *properties*: ``train_dataset`` holds
    every molecule with the labels of the meta-training properties, ``test_dataset`` the same
    molecules with the labels of the meta-test properties; no transformers. Arguments as for
    :func:`load_fewshot`, whose :class:`FewShotDataset` view is the one Pin-Tuning trains on.

    Examples
    --------
    >>> tasks, (train, test), transformers = load_fewshot_molnet("toxcast-CLD")
    >>> len(tasks), train.y.shape, test.y.shape, transformers
    (19, (302, 14), (302, 5), [])
    >>> str(test.get_task_names()[0])
    'CLD_CYP1A2_48hr'
    """
    data = load_fewshot(name, data_dir=data_dir, save_dir=save_dir, featurizer=featurizer, reload=reload)

    def columns(tasks: List[str]) -> dc.data.Dataset:
        index = [data.task_index(t) for t in tasks]
        y, w = np.asarray(data.dataset.y)[:, index], np.asarray(data.dataset.w)[:, index]
        return dc.data.DiskDataset.from_numpy(data.dataset.X, y, w, data.dataset.ids, tasks=tasks,
                                              data_dir=tempfile.mkdtemp(prefix=f"{name}-"))

    return list(data.tasks), (columns(data.train_tasks), columns(data.test_tasks)), []
