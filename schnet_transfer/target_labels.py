"""Cheap (xTB) labels of the target molecules at their own geometries.

Calibrated xTB, the v1 label correction and Delta-learning all need the cheap
label of every target molecule: :func:`label_target` runs the resumable xTB
labelling (:func:`schnet_transfer.labelling.label_molecules`) on the target
database's own structures, and :func:`with_cheap_labels` writes a copy of the
target database whose rows also hold the cheap labels (``xtb_gap``,
``xtb_hydration_free_energy``, ...), so one ``AtomsDataModule`` serves the
target and its baseline (``LinearCalibration``, ``CalibratedResidual``).

Examples
--------
>>> import os, tempfile
>>> from schnet_transfer.datasets import convert_freesolv
>>> from schnet_transfer.target_labels import label_target, with_cheap_labels
>>> folder = tempfile.mkdtemp()
>>> target = convert_freesolv("data/freesolv", os.path.join(folder, "fs.db"), limit=2)
>>> xtb = label_target(target, os.path.join(folder, "fs_xtb.db"), n_workers=1, processes=False,
...                    progress=False)
>>> both = with_cheap_labels(target, xtb, os.path.join(folder, "fs_both.db"),
...                          {"hydration_free_energy": "xtb_hydration_free_energy"})
>>> from schnetpack.data import ASEAtomsData
>>> sorted(ASEAtomsData(both).available_properties)
['hydration_free_energy', 'xtb_hydration_free_energy']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase.io import write as ase_write
from schnetpack.data import ASEAtomsData

from .labelling import label_molecules
from .pretraining_set import from_structure_files
from .xtb_labels import LABEL_UNITS, XtbSettings

__all__ = ["label_target", "cheap_label_array", "with_cheap_labels"]


def label_target(
    target_db: str | os.PathLike,
    xtb_db: str | os.PathLike,
    settings: XtbSettings | None = None,
    n_workers: int | None = 1,
    processes: bool = True,
    progress: bool = True,
) -> str:
    """Label every molecule of ``target_db`` with xTB at its stored geometry.

    The structures are written as ``<xtb_db stem>_xyz/<row index>.xyz`` (kept
    for a resumed run); the labels go to ``xtb_db`` with ``input_index`` equal
    to the target row index (0-based).  Rerunning resumes.  ``n_workers`` and
    ``processes`` size the Dask ``LocalCluster`` (threads with ``processes=False``).

    Returns
    -------
    str
        ``xtb_db``.
    """
    target = ASEAtomsData(str(target_db))
    xyz_dir = Path(xtb_db).with_name(Path(xtb_db).stem + "_xyz")
    xyz_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(target.conn.select(sort="id")):
        path = xyz_dir / f"{i:05d}.xyz"
        if not path.exists():
            ase_write(path, row.toatoms())
        paths.append(path)
    label_molecules(from_structure_files(paths), str(xtb_db), settings or XtbSettings(),
                    n_workers=n_workers, processes=processes, progress=progress)
    return str(xtb_db)


def cheap_label_array(xtb_db: str | os.PathLike, property: str, n: int) -> np.ndarray:
    """``property`` of target rows ``0..n-1`` from a :func:`label_target` database (NaN: failed)."""
    values = np.full(n, np.nan)
    for row in ASEAtomsData(str(xtb_db)).conn.select():
        values[int(row.input_index)] = float(np.ravel(row.data[property])[0])
    return values


def with_cheap_labels(
    target_db: str | os.PathLike,
    xtb_db: str | os.PathLike,
    out: str | os.PathLike,
    properties: Mapping[str, str],
) -> str:
    """Copy ``target_db`` to ``out`` adding cheap labels: ``{xtb property: new key}``.

    Rows, order, geometries, units and metadata of the target are kept.

    Raises
    ------
    FileExistsError
        If ``out`` exists.
    ValueError
        If a target molecule has no xTB label (a failed calculation); the
        message names the rows.
    """
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; remove it or choose another path")
    target = ASEAtomsData(str(target_db))
    n = len(target)
    cheap = {new: cheap_label_array(xtb_db, prop, n) for prop, new in properties.items()}
    missing = sorted({i for v in cheap.values() for i in np.flatnonzero(~np.isfinite(v))})
    if missing:
        raise ValueError(f"{len(missing)} target molecules have no xTB label (rows {missing[:10]})")
    units = {**target.units, **{new: LABEL_UNITS[prop] for prop, new in properties.items()}}
    data = ASEAtomsData.create(str(out), distance_unit="Ang", property_unit_dict=units)
    kept = {k: v for k, v in target.metadata.items() if not k.startswith("_")}  # units etc.
    data.update_metadata(**kept, cheap_labels={"source": os.path.abspath(xtb_db),
                                                          "properties": dict(properties)})
    for i, row in enumerate(target.conn.select(sort="id")):
        labels = {k: np.asarray(row.data[k]) for k in target.available_properties}
        labels.update({new: np.array([values[i]]) for new, values in cheap.items()})
        data.add_system(row.toatoms(), atoms_metadata=dict(row.key_value_pairs), **labels)
    return str(out)
