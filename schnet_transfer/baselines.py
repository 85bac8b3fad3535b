"""Descriptor baselines: atom-averaged SOAP (dscribe) + KRR, a small MLP, gradient boosting.

The baselines read the same ASE database and the same ``split.npz`` as the
PaiNN run, so their test MAEs are directly comparable.  KRR's regularisation
and kernel width and the MLP's weight decay are chosen on the validation split;
all models are fitted on the training split only.

The MLP reads SOAP vectors L2-normalised per molecule, not standardised per
feature: with ~100 training molecules, a feature that is (nearly) constant on
the training split (an element seen in one or two molecules) gets a tiny
standard deviation, test molecules carrying it land at ``|z| ~ 1e5``, and a ReLU
network extrapolates linearly to MAEs of tens of kcal/mol on FreeSolv.  The RBF
kernel of KRR saturates instead, so KRR keeps per-feature standardisation.

Examples
--------
>>> import tempfile, os
>>> from schnet_transfer.datasets import convert_freesolv
>>> from schnet_transfer.baselines import soap_features
>>> db = convert_freesolv("data/freesolv", os.path.join(tempfile.mkdtemp(), "fs.db"), limit=4)
>>> X, y = soap_features(db, "hydration_free_energy", progress=False)
>>> X.shape[0], y.shape
(4, (4,))
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from ase import Atoms
from schnetpack.data import ASEAtomsData
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

__all__ = ["soap_features", "predict_baselines", "fit_baselines", "run_baselines"]


def _molecules(db: str | os.PathLike, property: str) -> tuple[list[Atoms], np.ndarray]:
    if not os.path.isfile(db):
        raise FileNotFoundError(f"no such database: {db}")
    data = ASEAtomsData(str(db))
    if property not in data.available_properties:
        raise KeyError(f"{db} has no property {property!r}; it has {data.available_properties}")
    atoms, y = [], []
    for row in data.conn.select():
        atoms.append(row.toatoms())
        y.append(float(np.asarray(row.data[property]).ravel()[0]))
    y = np.array(y)
    if not np.isfinite(y).all():
        raise ValueError(f"{db}: {property} has {np.sum(~np.isfinite(y))} non-finite labels")
    return atoms, y


def soap_features(
    db: str | os.PathLike,
    property: str,
    r_cut: float = 5.0,
    n_max: int = 6,
    l_max: int = 4,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Atom-averaged SOAP vectors of every molecule in ``db`` and its ``property`` values.

    The species list is taken from the database, so all molecules share one
    feature space. ``progress`` shows a per-molecule progress bar (stderr).
    """
    from dscribe.descriptors import SOAP

    atoms, y = _molecules(db, property)
    species = sorted({s for a in atoms for s in a.get_chemical_symbols()})
    soap = SOAP(species=species, r_cut=r_cut, n_max=n_max, l_max=l_max,
                average="inner", periodic=False)
    rows = [soap.create(a) for a in tqdm(atoms, desc="SOAP", unit="mol", disable=not progress)]
    return np.asarray(rows, dtype=np.float64).reshape(len(atoms), -1), y


def _krr(alpha: float, gamma: float) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(
        make_pipeline(StandardScaler(), KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma)),
        transformer=StandardScaler())


def _mlp(alpha: float, seed: int) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(
        make_pipeline(Normalizer(), MLPRegressor(
            hidden_layer_sizes=(64, 64), alpha=alpha, max_iter=2000, random_state=seed)),
        transformer=StandardScaler())


def _best_on_validation(candidates, X_train, y_train, X_val, y_val):
    """Fit every candidate on the training split; keep the lowest validation MAE."""
    fitted = [model.fit(X_train, y_train) for model in candidates]
    maes = [np.abs(model.predict(X_val) - y_val).mean() for model in fitted]
    return fitted[int(np.argmin(maes))]


def predict_baselines(
    X: np.ndarray, y: np.ndarray, split: Mapping[str, np.ndarray], seed: int = 0
) -> dict[str, np.ndarray]:
    """Fit KRR, MLP and gradient boosting on ``train_idx``; their predictions of ``test_idx``.

    ``mean`` predicts the training mean for every test molecule, the floor any
    model must beat.
    """
    train, val, test = (np.asarray(split[k], dtype=int) for k in ("train_idx", "val_idx", "test_idx"))
    if len(train) < 2 or len(test) < 1:
        raise ValueError("the split needs at least 2 training and 1 test molecule")
    gradient_boosting = GradientBoostingRegressor(
        n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.8,
        max_features="sqrt", random_state=seed)
    gammas = np.array([0.1, 0.3, 1.0, 3.0]) / X.shape[1]
    # small dense problems: threaded BLAS only adds contention (10x slower on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        fitted = {"soap_gradient_boosting": gradient_boosting.fit(X[train], y[train])}
        if len(val):
            fitted["soap_krr"] = _best_on_validation(
                [_krr(a, g) for a in (1e-3, 1e-2, 1e-1, 1.0) for g in gammas],
                X[train], y[train], X[val], y[val])
            fitted["soap_mlp"] = _best_on_validation(
                [_mlp(a, seed) for a in (1e-3, 1e-2, 1e-1, 1.0)], X[train], y[train], X[val], y[val])
        else:
            fitted["soap_mlp"] = _mlp(1e-2, seed).fit(X[train], y[train])
        predictions = {n: np.asarray(m.predict(X[test]), dtype=float) for n, m in fitted.items()}
    predictions["mean"] = np.full(len(test), y[train].mean())
    return dict(sorted(predictions.items()))


def fit_baselines(
    X: np.ndarray, y: np.ndarray, split: Mapping[str, np.ndarray], seed: int = 0
) -> dict[str, float]:
    """Test MAEs of :func:`predict_baselines` (``mean``: predicting the training mean)."""
    test = np.asarray(split["test_idx"], dtype=int)
    return {name: float(np.abs(pred - y[test]).mean())
            for name, pred in predict_baselines(X, y, split, seed).items()}


def run_baselines(
    db: str | os.PathLike, property: str, split_path: str | os.PathLike, seed: int = 0
) -> dict[str, float]:
    """SOAP baselines on the split of a PaiNN run (``split.npz`` written by spktrain)."""
    if not os.path.isfile(split_path):
        raise FileNotFoundError(f"no such split file: {split_path}")
    X, y = soap_features(db, property)
    return fit_baselines(X, y, np.load(split_path), seed=seed)
