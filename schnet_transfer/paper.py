"""The paper protocol as resumable cells: one JSON per (method, fold, training-set size).

Kirschbaum & Bande's evaluation, run through ``spktrain`` with the ``paper_*``
experiments (PaiNN 30 features / 3 interactions / 5 A / 20 RBF, AdamW 5e-4 with
weight decay 0.01, plateau halving after 5 epochs, batch 10, best-validation
model): 5 folds (:mod:`schnet_transfer.kfold`) shared by every method, each
method trained on the training fold, selected on the validation fold and
scored on the test fold.

Methods (``METHODS``):

* ``painn_scratch`` - PaiNN on the z-scored target.
* ``painn_finetune_v2`` - the whole pre-trained model fine-tuned; every set
  z-scored with its own statistics (the paper's final version).
* ``painn_finetune_v1`` - the same, but the cheap labels are mapped linearly
  onto the target (fit on the training fold).  Because z-scoring removes any
  linear map, pre-training on the mapped labels gives the same network as
  pre-training on the raw ones; only the label statistics change, to
  ``slope * mean + intercept`` and ``slope * std``.  So v1 reuses the one
  pre-training run and fixes the fine-tuning normalizer to these statistics:
  the pre-trained model then starts at calibrated xTB instead of ~3 standard
  deviations off.
* ``painn_delta_scratch`` / ``painn_delta_finetune`` - Delta-learning: PaiNN
  learns target minus calibrated xTB (calibration fitted on the training
  fold) and adds it back (:class:`schnet_transfer.calibration.CalibratedResidual`).
* baselines on the same folds: ``xtb_linear`` (calibrated xTB), ``soap_krr``,
  ``soap_mlp``, ``soap_gradient_boosting``, ``mean``; and the pre-trained
  model without fine-tuning (``painn_pretrained_v1`` / ``_v2``, :meth:`Protocol.run_zero_shot`).

Pre-training excludes every target molecule (same InChIKey) through its split
file, so no test molecule is ever seen in pre-training.  A cell is finished
when its JSON exists; an interrupted ``spktrain`` run continues from its last
checkpoint.  The command is ``benchmarks/schnet_transfer/paper_protocol.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger
from schnetpack.data import ASEAtomsData

from .baselines import predict_baselines, soap_features
from .calibration import fit_linear_calibration
from .evaluate import predict
from .finetune import load_pretrained_state
from .kfold import kfold_splits, read_split, subsample_train, write_split_file, write_split_files
from .target_labels import cheap_label_array

__all__ = ["Target", "TARGETS", "METHODS", "BASELINES", "Protocol", "inchikeys",
           "pretraining_split", "set_selection", "v1_statistics", "regression_metrics"]


@dataclass(frozen=True)
class Target:
    """A target set of the protocol: property, unit and the ``paper_*`` experiment suffix."""

    name: str
    property: str
    unit: str


TARGETS = {
    "hopv": Target("hopv", "gap", "eV"),
    "freesolv": Target("freesolv", "hydration_free_energy", "kcal/mol"),
}

#: PaiNN methods: experiment template, pre-trained start, label correction, Delta-learning.
METHODS = {
    "painn_scratch": ("paper_scratch_{t}", False, None, False),
    "painn_finetune_v2": ("paper_finetune_{t}", True, "v2", False),
    "painn_finetune_v1": ("paper_finetune_{t}", True, "v1", False),
    "painn_delta_scratch": ("paper_delta_scratch_{t}", False, None, True),
    "painn_delta_finetune": ("paper_delta_finetune_{t}", True, "v2", True),
}
BASELINES = ("xtb_linear", "soap_krr", "soap_mlp", "soap_gradient_boosting", "mean")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R2 (1 - SSE / SST) of predictions.

    Examples
    --------
    >>> import numpy as np
    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    {'mae': 0.3333333333333333, 'rmse': 0.5773502691896257, 'r2': 0.5}
    """
    err = np.asarray(y_pred, float) - np.asarray(y_true, float)
    sst = float(((y_true - np.mean(y_true)) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": float(1.0 - (err ** 2).sum() / sst) if sst > 0 else float("nan")}


def inchikeys(db: str | os.PathLike) -> list[str | None]:
    """InChIKey of every row's ``smiles`` (None where there is none or it does not parse)."""
    RDLogger.DisableLog("rdApp.*")
    keys = []
    for row in ASEAtomsData(str(db)).conn.select(sort="id"):
        mol = Chem.MolFromSmiles(row.key_value_pairs.get("smiles", "") or "")
        keys.append(Chem.MolToInchiKey(mol) if mol is not None else None)
    return keys


def pretraining_split(pretrain_db: str | os.PathLike, target_db: str | os.PathLike,
                      out: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Write a 90/10 split of ``pretrain_db`` without any molecule of ``target_db``.

    Molecules are compared by InChIKey of their SMILES; rows without a
    readable SMILES are left out too (they cannot be checked).  Returns the
    counts and the path.
    """
    target = {k for k in inchikeys(target_db) if k}
    keys = inchikeys(pretrain_db)
    keep = np.array([i for i, k in enumerate(keys) if k is not None and k not in target])
    order = np.random.default_rng(seed).permutation(keep)
    n_val = max(1, int(round(val_fraction * len(order))))
    np.savez(out, train_idx=np.sort(order[n_val:]), val_idx=np.sort(order[:n_val]),
             test_idx=np.array([], dtype=np.int64))
    return {"split": str(out), "rows": len(keys), "n_train": int(len(keep) - n_val),
            "n_val": int(n_val),
            "overlap_with_target": int(sum(k in target for k in keys if k)),
            "without_smiles": int(sum(k is None for k in keys))}


def set_selection(metadata: dict) -> str:
    """The order a pre-training set was cut from, read from its database metadata.

    ``make_pretraining_sets.py cut`` states it in the set's rule; a database without a rule
    (a seeded random subsample of ``schnet-transfer label``) counts as ``random``.

    Examples
    --------
    >>> set_selection({"pretraining_set": {"rule": "first 10000 labelled molecules of the "
    ...                                            "'hopv_similar' order of plan.json"}})
    'hopv_similar'
    >>> set_selection({"provenance": {"method": "GFN2-xTB"}})
    'random'
    """
    found = re.search(r"'([^']+)' order", metadata.get("pretraining_set", {}).get("rule", ""))
    return found.group(1) if found else "random"


def v1_statistics(pretrained_model: str | os.PathLike, cheap: np.ndarray, y: np.ndarray,
                  train_idx: np.ndarray) -> dict[str, float]:
    """Normalizer statistics of the v1 correction: the pre-training statistics mapped onto the target.

    ``slope, intercept`` are fitted on the training fold only (``cheap[train_idx]``
    against ``y[train_idx]``); mean -> ``slope * mean + intercept``, std ->
    ``slope * std``.

    Raises
    ------
    ValueError
        If the slope is not positive (the pre-trained output would have to flip sign).
    """
    state = load_pretrained_state(pretrained_model, trust_pickle=True)
    mean, std = (float(state[f"postprocessors.1.{k}"]) for k in ("mean", "stddev"))
    slope, intercept = fit_linear_calibration(cheap[train_idx], y[train_idx])
    if slope <= 0:
        raise ValueError(f"v1 needs a positive calibration slope, got {slope:.3g}")
    return {"label_mean": slope * mean + intercept, "label_stddev": slope * std,
            "slope": slope, "intercept": intercept, "pretrain_mean": mean, "pretrain_stddev": std}


@dataclass
class Protocol:
    """One target's k-fold protocol in a work folder, writing cells to ``cells_dir``.

    Parameters
    ----------
    target
        Key of :data:`TARGETS`.
    work
        Folder with ``dbs/<target>.db``, ``dbs/<target>_with_xtb.db``,
        ``dbs/<target>_xtb.db`` (prepared by the benchmark script) and the runs.
    cells_dir
        One JSON per cell goes to ``cells_dir/<target>/``.
    epochs, pretrain_epochs
        ``trainer.max_epochs`` of target runs and of pre-training.
    accelerator
        ``trainer.accelerator`` (``cpu``, ``gpu``, ``auto``).
    k
        Number of folds.
    seed
        ``spktrain`` seed of every run.
    overrides
        More ``spktrain`` overrides for every run (e.g. a smaller model).
    budget
        Description of the budget, copied into every cell.
    """

    target: str
    work: Path
    cells_dir: Path
    epochs: int = 60
    pretrain_epochs: int = 30
    accelerator: str = "cpu"
    k: int = 5
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)

    def __post_init__(self):
        self.work, self.cells_dir = Path(self.work).resolve(), Path(self.cells_dir)
        self.spec = TARGETS[self.target]
        self.db = self.work / "dbs" / f"{self.target}.db"
        self.cheap_db = self.work / "dbs" / f"{self.target}_with_xtb.db"
        data = ASEAtomsData(str(self.db))
        self.y = np.array([float(np.ravel(r.data[self.spec.property])[0])
                           for r in data.conn.select(sort="id")])
        self.cheap = cheap_label_array(self.work / "dbs" / f"{self.target}_xtb.db",
                                       self.spec.property, len(self.y))
        self.folds = kfold_splits(len(self.y), self.k)
        write_split_files(self.folds, self.work / "folds" / self.target)
        self._soap = None

    def split_file(self, fold: int, n_train: int | None) -> Path:
        """The schnetpack split file of ``fold`` (``n_train``: nested subset of its training fold)."""
        if n_train is None:
            return self.work / "folds" / self.target / f"fold{fold}.npz"
        path = self.work / "folds" / self.target / f"fold{fold}_n{n_train}.npz"
        return Path(write_split_file(subsample_train(self.folds[fold], n_train), path))

    def cell_path(self, method: str, fold: int, n_train: int | None, pretrain: str | None) -> Path:
        size = "all" if n_train is None else str(n_train)
        tag = f"{method}@{pretrain}" if pretrain else method
        return self.cells_dir / self.target / f"{tag}_fold{fold}_n{size}.json"

    def _spktrain(self, run_id: str, overrides: list[str]) -> float:
        env = {**os.environ, "SCHNET_TRANSFER_DATA": str(self.work / "dbs"), "PWD": str(self.work)}
        (self.work / "logs").mkdir(exist_ok=True)
        start = time.time()
        with open(self.work / "logs" / f"{run_id}.log", "a") as log:
            done = subprocess.run(
                [str(Path(sys.executable).parent / "spktrain"), f"run.id={run_id}",
                 f"run.path={self.work / 'train'}", "logger=csv",
                 f"trainer.accelerator={self.accelerator}", *overrides, *self.overrides],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"spktrain {run_id} failed, see {self.work / 'logs' / run_id}.log")
        return time.time() - start

    def pretrain(self, name: str, db: str | os.PathLike) -> Path:
        """Pre-train on ``db`` (target molecules excluded); returns the ``best_model`` path."""
        run_id = f"pretrain_{name}_{self.spec.property}"
        model = self.work / "train" / run_id / "best_model"
        record = self.work / "train" / f"{run_id}.json"
        if record.exists():
            done = json.loads(record.read_text())
            if done.get("epochs") != self.pretrain_epochs or done.get("db") != str(Path(db).resolve()):
                raise ValueError(f"{record} is a pre-training of {done.get('db')} for {done.get('epochs')} epochs, "
                                 f"not of {Path(db).resolve()} for {self.pretrain_epochs}; use another work folder "
                                 "or another set name")
            return model
        (self.work / "train").mkdir(parents=True, exist_ok=True)
        info = pretraining_split(db, self.db, self.work / "train" / f"{run_id}_split.npz")
        seconds = self._spktrain(run_id, [
            "experiment=paper_pretrain_xtb", f"globals.property={self.spec.property}",
            f"globals.aggregation={self.aggregation}", f"data.datapath={Path(db).resolve()}",
            f"data.split_file={info['split']}", f"data.num_train={info['n_train']}",
            f"data.num_val={info['n_val']}", "data.num_test=0",
            f"trainer.max_epochs={self.pretrain_epochs}", f"seed={self.seed}"])
        record.write_text(json.dumps({**info, "db": str(Path(db).resolve()), "seconds": seconds,
                                      "epochs": self.pretrain_epochs}, indent=2))
        return model

    def pretraining_info(self, name: str) -> dict:
        """What cells pre-trained on set ``name`` record of it (``details["pretraining"]``).

        ``molecules``: pre-training molecules used (training + validation, target molecules
        excluded); ``selection``: the order the set was cut from (``random``, ``hopv_similar``,
        ...) as the set's database states it (``make_pretraining_sets.py cut``), ``random`` for a
        database without that statement (a seeded subsample of ``schnet-transfer label``);
        ``epochs`` and ``seconds`` of the pre-training run.
        """
        record = json.loads((self.work / "train" / f"pretrain_{name}_{self.spec.property}.json").read_text())
        return {"name": name, "molecules": record["n_train"] + record["n_val"],
                "selection": set_selection(ASEAtomsData(record["db"]).metadata),
                "epochs": record["epochs"], "seconds": record["seconds"]}

    @property
    def aggregation(self) -> str:
        return "sum" if self.spec.property == "hydration_free_energy" else "avg"

    def run_painn(self, method: str, fold: int, n_train: int | None = None,
                  pretrain: tuple[str, Path] | None = None) -> dict:
        """Train and score one PaiNN cell (skipped when its JSON exists)."""
        experiment, pretrained, correction, delta = METHODS[method]
        tag = pretrain[0] if pretrained else None
        path = self.cell_path(method, fold, n_train, tag)
        if path.exists():
            cell = json.loads(path.read_text())
            if cell["details"].get("epochs") != self.epochs:
                raise ValueError(f"{path} was trained for {cell['details'].get('epochs')} epochs, "
                                 f"not {self.epochs}; use another cells folder")
            return cell
        split_path = self.split_file(fold, n_train)
        split = read_split(split_path)
        db = self.cheap_db if delta else self.db
        run_id = f"{self.target}_{path.stem}"
        overrides = [f"experiment={experiment.format(t=self.target)}", f"data.datapath={db}",
                     f"data.split_file={split_path}", f"seed={self.seed}",
                     *(f"data.num_{k}={len(split[k + '_idx'])}" for k in ("train", "val", "test")),
                     f"trainer.max_epochs={self.epochs}"]
        extra = {}
        if pretrained:
            overrides += [f"globals.pretrained_model={pretrain[1]}"]
        if correction == "v1":
            extra = v1_statistics(pretrain[1], self.cheap, self.y, split["train_idx"])
            overrides += [f"globals.label_mean={extra['label_mean']!r}",
                          f"globals.label_stddev={extra['label_stddev']!r}"]
        seconds = self._spktrain(run_id, overrides)
        pred, ref = predict(self.work / "train" / run_id / "best_model", db, split["test_idx"],
                            self.spec.property, trust_pickle=True,
                            extra_properties=[f"xtb_{self.spec.property}"] if delta else ())
        return self._write(path, method, fold, split, pred, tag, seconds,
                           {"experiment": experiment.format(t=self.target), "epochs": self.epochs,
                            "pretrain_epochs": self.pretrain_epochs if pretrained else None,
                            "label_correction": correction, "delta": delta, **extra,
                            **({"pretraining": self.pretraining_info(tag)} if pretrained else {})})

    def run_zero_shot(self, fold: int, pretrain: tuple[str, Path],
                      n_train: int | None = None) -> dict[str, dict]:
        """The pre-trained model on the test fold without fine-tuning, with v1 and v2 statistics.

        ``painn_pretrained_v1`` maps the network's standardized output with the
        v1 statistics (so it predicts calibrated xTB as far as the network
        learned xTB); ``painn_pretrained_v2`` with the target's training-fold
        mean and std (where v2 fine-tuning starts).  ``details`` hold the mean
        z-score of the test molecules' xTB labels on the pre-training scale.
        """
        paths = {m: self.cell_path(m, fold, n_train, pretrain[0])
                 for m in ("painn_pretrained_v1", "painn_pretrained_v2")}
        if all(p.exists() for p in paths.values()):
            return {m: json.loads(p.read_text()) for m, p in paths.items()}
        split = read_split(self.split_file(fold, n_train))
        train, test = split["train_idx"], split["test_idx"]
        start = time.time()
        z, _ = predict(pretrain[1], self.db, test, self.spec.property, postprocess=False,
                       trust_pickle=True)
        v1 = v1_statistics(pretrain[1], self.cheap, self.y, train)
        preds = {"painn_pretrained_v1": z * v1["label_stddev"] + v1["label_mean"],
                 "painn_pretrained_v2": z * self.y[train].std() + self.y[train].mean()}
        details = {"epochs": 0, "pretrain_epochs": self.pretrain_epochs,
                   "pretraining": self.pretraining_info(pretrain[0]), "network_z_mean": float(z.mean()),
                   "cheap_z_mean": float(np.mean((self.cheap[test] - v1["pretrain_mean"])
                                                 / v1["pretrain_stddev"]))}
        seconds = time.time() - start
        return {m: self._write(paths[m], m, fold, split, preds[m], pretrain[0], seconds, details)
                for m in paths}

    def run_baselines(self, fold: int, n_train: int | None = None) -> dict[str, dict]:
        """Calibrated xTB, SOAP models and the mean on one split (one cell each)."""
        paths = {m: self.cell_path(m, fold, n_train, None) for m in BASELINES}
        if all(p.exists() for p in paths.values()):
            return {m: json.loads(p.read_text()) for m, p in paths.items()}
        split = read_split(self.split_file(fold, n_train))
        start = time.time()
        if self._soap is None:
            self._soap, _ = soap_features(self.db, self.spec.property)
        predictions = predict_baselines(self._soap, self.y, split, seed=self.seed)
        slope, intercept = fit_linear_calibration(self.cheap[split["train_idx"]],
                                                  self.y[split["train_idx"]])
        predictions["xtb_linear"] = slope * self.cheap[split["test_idx"]] + intercept
        seconds = time.time() - start
        return {m: self._write(paths[m], m, fold, split, predictions[m], None, seconds,
                               {"slope": slope, "intercept": intercept} if m == "xtb_linear" else {})
                for m in BASELINES}

    def _write(self, path: Path, method: str, fold: int, split: dict, pred: np.ndarray,
               pretrain: str | None, seconds: float, details: dict) -> dict:
        test = np.asarray(split["test_idx"])
        cell = {"target": self.target, "property": self.spec.property, "unit": self.spec.unit,
                "method": method, "pretrain": pretrain, "fold": fold,
                "size": "all" if path.stem.endswith("_nall") else int(len(split["train_idx"])),
                "n_train": int(len(split["train_idx"])), "n_val": int(len(split["val_idx"])),
                "n_test": int(len(test)), **regression_metrics(self.y[test], pred),
                "seconds": seconds, "details": details, "budget": self.budget,
                "test_idx": test.tolist(), "y_true": self.y[test].tolist(),
                "y_pred": np.asarray(pred, float).tolist()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cell, indent=1))
        os.replace(tmp, path)
        return cell
