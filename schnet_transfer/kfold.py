"""K-fold splits of the paper protocol, written as schnetpack split files.

Kirschbaum & Bande evaluate with 5-fold cross-validation (``KFold`` with
shuffling, seed 12345): fold ``k`` is the test set, and here the next fold
``(k + 1) % 5`` is the validation set, the other three the training set
(HOPV, 349 molecules: 209-210 / 70 / 69-70).  Each fold is saved as a
schnetpack ``split.npz`` (``train_idx``, ``val_idx``, ``test_idx``), so
``spktrain data.split_file=<file>`` trains on exactly these molecules, and
every method (PaiNN variants, SOAP baselines, calibrated xTB) reads the same
file.  Learning curves use nested subsets of each training fold
(:func:`subsample_train`); validation and test stay the same.

Examples
--------
>>> from schnet_transfer.kfold import kfold_splits, subsample_train
>>> folds = kfold_splits(349)
>>> [(len(f["train_idx"]), len(f["val_idx"]), len(f["test_idx"])) for f in folds]
[(209, 70, 70), (209, 70, 70), (209, 70, 70), (210, 69, 70), (210, 70, 69)]
>>> small = subsample_train(folds[0], 25)
>>> len(small["train_idx"]), set(small["train_idx"]) <= set(folds[0]["train_idx"])
(25, True)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

__all__ = ["PAPER_SEED", "kfold_splits", "subsample_train", "write_split_file", "write_split_files",
           "read_split"]

#: Shuffle seed of the paper's ``KFold``.
PAPER_SEED = 12345

_KEYS = ("train_idx", "val_idx", "test_idx")


def kfold_splits(n: int, k: int = 5, seed: int = PAPER_SEED) -> list[dict[str, np.ndarray]]:
    """``k`` train/validation/test splits of ``n`` molecules (test = fold i, validation = fold i+1).

    Every molecule is in exactly one test fold and one validation fold; the
    folds depend only on ``n``, ``k`` and ``seed``.

    Raises
    ------
    ValueError
        If ``k < 3`` (no training fold would remain) or ``n < k``.
    """
    if k < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {k}")
    if n < k:
        raise ValueError(f"cannot cut {n} molecules into {k} folds")
    folds = [test for _, test in KFold(k, shuffle=True, random_state=seed).split(np.arange(n))]
    splits = []
    for i in range(k):
        test, val = folds[i], folds[(i + 1) % k]
        train = np.sort(np.concatenate([folds[j] for j in range(k) if j not in (i, (i + 1) % k)]))
        splits.append({"train_idx": train, "val_idx": np.sort(val), "test_idx": np.sort(test)})
    return splits


def subsample_train(
    split: dict[str, np.ndarray], n_train: int, seed: int = PAPER_SEED
) -> dict[str, np.ndarray]:
    """The split with only ``n_train`` training molecules (nested: smaller sets are subsets).

    The training fold is put in one seeded order and its first ``n_train``
    molecules kept, so the 25-molecule set is part of the 50-molecule set.

    Raises
    ------
    ValueError
        If ``n_train`` is below 2 or above the training fold.
    """
    train = np.asarray(split["train_idx"])
    if not 2 <= n_train <= len(train):
        raise ValueError(f"n_train must be between 2 and {len(train)}, got {n_train}")
    order = np.random.default_rng(seed).permutation(train)
    return {**split, "train_idx": np.sort(order[:n_train])}


def write_split_file(split: dict[str, np.ndarray], path: str | os.PathLike) -> str:
    """Save one split as a schnetpack split file; returns the path.

    An existing file with other indices is an error (a protocol's folds never
    change under the runs that used them); one with the same indices is kept.
    """
    path = Path(path)
    if path.exists():
        old = read_split(path)
        if any(not np.array_equal(old[key], split[key]) for key in _KEYS):
            raise ValueError(f"{path} exists with other indices; remove it or use another folder")
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key: np.asarray(split[key], dtype=np.int64) for key in _KEYS})
    return str(path)


def write_split_files(
    splits: list[dict[str, np.ndarray]], folder: str | os.PathLike, prefix: str = "fold"
) -> list[str]:
    """Save the splits as ``<folder>/<prefix><i>.npz`` (:func:`write_split_file`); returns the paths."""
    return [write_split_file(split, Path(folder) / f"{prefix}{i}.npz") for i, split in enumerate(splits)]


def read_split(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``train_idx``, ``val_idx``, ``test_idx`` of a split file."""
    with np.load(path) as data:
        return {key: np.asarray(data[key]) for key in _KEYS}
