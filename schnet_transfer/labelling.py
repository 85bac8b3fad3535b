"""Resumable, Dask-parallel xTB labelling into a schnetpack ``ASEAtomsData`` database.

Each molecule is labelled in a Dask task (:func:`label_one`); the client
process is the only writer of the database and stores every result as soon as
it arrives.  A labelled molecule is a database row whose ``input_index``
key-value pair is its row in the source; a failure is an entry of the
``failures`` metadata with the stage and the reason.  A restarted run skips
both, so an interrupted run loses no finished molecule and duplicates none.
One run at a time writes a database: the run holds an exclusive lock on
``<db>.lock`` (:mod:`schnet_transfer.dblock`) and a second run is refused at
once with the pid of the first.

Cluster choice: by default a :class:`dask.distributed.LocalCluster`; pass
``scheduler_address`` to use a running scheduler, or a ready ``client`` (for
example one of a ``dask_jobqueue.SLURMCluster``, an optional dependency).

Examples
--------
>>> import tempfile, os
>>> from schnet_transfer.labelling import label_molecules
>>> from schnet_transfer.pretraining_set import MoleculeInput
>>> from schnet_transfer.xtb_labels import XtbSettings
>>> db = os.path.join(tempfile.mkdtemp(), "xtb.db")
>>> mols = [MoleculeInput(0, "ethanol", smiles="CCO"), MoleculeInput(1, "bad", smiles="C1CC")]
>>> summary = label_molecules(mols, db, XtbSettings(), processes=False, progress=False)
>>> summary.labelled, summary.failed, summary.skipped
(1, 1, 0)
>>> label_molecules(mols, db, XtbSettings(), processes=False, progress=False).skipped
2
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from schnetpack.data import ASEAtomsData
from tqdm.auto import tqdm

from .conformers import StructureError, embed_smiles, read_structure
from .dblock import exclusive_lock
from .pretraining_set import MoleculeInput
from .xtb_labels import LABEL_UNITS, LabelError, XtbSettings, optimize_geometry, xtb_labels

__all__ = ["LabelSummary", "label_one", "label_molecules", "open_label_db"]


@dataclass(frozen=True)
class LabelSummary:
    """Counts of one labelling run: new rows, new failures, inputs already done."""

    labelled: int
    failed: int
    skipped: int


def label_one(item: MoleculeInput, settings: XtbSettings) -> dict[str, Any]:
    """Build the 3D structure of one input and compute its xTB labels.

    Never raises for a bad molecule: the result has ``ok=False`` with the
    failing ``stage`` (parse, read, embedding, geometry, spin, optimisation,
    scf) and ``reason``.
    """
    result: dict[str, Any] = {"index": item.index, "name": item.name, "smiles": item.smiles}
    try:
        if item.path is not None:
            structure = read_structure(item.path, item.record)
        else:
            structure = embed_smiles(item.smiles, seed=settings.seed)
        positions = structure.positions
        if settings.optimize:
            positions = optimize_geometry(structure.numbers, positions, structure.charge, settings)
        labels = xtb_labels(structure.numbers, positions, settings, structure.charge)
    except (StructureError, LabelError) as err:
        return {**result, "ok": False, "stage": err.stage, "reason": err.reason}
    return {
        **result,
        "ok": True,
        "numbers": structure.numbers,
        "positions": positions,
        "charge": structure.charge,
        "labels": labels,
    }


def _check_db_path(path: str) -> None:
    if not path.endswith(".db") or os.path.isdir(path):
        raise ValueError(f"output {path} must be a .db file (an ASE database)")


def open_label_db(path: str, settings: XtbSettings) -> ASEAtomsData:
    """Create the database, or reopen it to resume a run with the same settings.

    Raises
    ------
    ValueError
        If the path is not a ``.db`` file, the file is not a database, or an
        existing database was labelled with different settings.
    """
    provenance = settings.provenance()
    _check_db_path(path)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        data = ASEAtomsData.create(path, distance_unit="Ang", property_unit_dict=LABEL_UNITS)
        data.update_metadata(provenance=provenance, failures={})
        return data
    try:
        data = ASEAtomsData(path)
        stored = data.metadata.get("provenance")
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path} exists but is not an ASE database: {err}") from err
    if stored != provenance:
        raise ValueError(
            f"{path} was labelled with other settings; stored {stored}, requested "
            f"{provenance}. Use another output path or the same settings to resume."
        )
    return data


_NAME_PREFIX = "name:"


def _encode_name(name: str) -> str:
    """ASE refuses key-value strings that parse as numbers (ids like ``00001``): prefix them."""
    try:
        float(name)
    except ValueError:
        return name
    return _NAME_PREFIX + name


def _decode_name(stored: str) -> str:
    return stored[len(_NAME_PREFIX):] if stored.startswith(_NAME_PREFIX) else stored


def _finished(data: ASEAtomsData) -> dict[int, str]:
    """Input index -> name of every molecule already labelled or failed."""
    done = {int(k): v["name"] for k, v in data.metadata["failures"].items()}
    for row in data.conn.select(include_data=False):
        done[int(row.input_index)] = _decode_name(row.name)
    return done


def _check_same_inputs(done: dict[int, str], items: Sequence[MoleculeInput]) -> None:
    names = {m.index: m.name for m in items}
    changed = [i for i, name in done.items() if i in names and names[i] != name]
    if changed:
        raise ValueError(
            f"inputs changed since the database was written (e.g. index {changed[0]}: "
            f"{done[changed[0]]!r} vs {names[changed[0]]!r})"
        )


def _store(data: ASEAtomsData, result: dict[str, Any]) -> None:
    if result["ok"]:
        data.add_system(
            Atoms(numbers=result["numbers"], positions=result["positions"]),
            atoms_metadata={
                "input_index": result["index"],
                "name": _encode_name(result["name"]),
                "smiles": result["smiles"] or "",
                "charge": int(result["charge"]),
            },
            **{k: np.array([v]) for k, v in result["labels"].items()},
        )
    else:
        failures = data.metadata["failures"]
        failures[str(result["index"])] = {
            k: result[k] for k in ("name", "smiles", "stage", "reason")
        }
        data.update_metadata(failures=failures)


@contextlib.contextmanager
def _dask_client(scheduler_address: str | None, n_workers: int | None, processes: bool):
    from dask.distributed import Client, LocalCluster

    if scheduler_address is not None:
        with Client(scheduler_address) as client:
            yield client
        return
    with LocalCluster(
        n_workers=n_workers or os.cpu_count(),
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        yield client


def label_molecules(
    items: Sequence[MoleculeInput],
    db_path: str,
    settings: XtbSettings,
    *,
    client=None,
    scheduler_address: str | None = None,
    n_workers: int | None = None,
    processes: bool = True,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> LabelSummary:
    """Label molecules with xTB on Dask and write them to ``db_path``.

    Parameters
    ----------
    items
        Molecules to label; ``index`` values must be unique.
    db_path
        ``.db`` file; created, or resumed when it exists.
    settings
        xTB settings, stored as provenance and checked on resume.
    client
        A ready ``dask.distributed.Client`` (e.g. of a dask-jobqueue cluster).
    scheduler_address
        Address of a running Dask scheduler, used when ``client`` is None.
    n_workers, processes
        Size and kind of the default ``LocalCluster``.
    progress
        Show a tqdm progress bar.
    on_result
        Called with every stored result (for logging or monitoring).

    Returns
    -------
    LabelSummary

    Raises
    ------
    ValueError
        If indices repeat, the database is not a labelling database of these
        settings or the inputs changed since it was written.
    schnet_transfer.dblock.DatabaseLockedError
        If another run holds the database (its pid is in the message).
    """
    if len({m.index for m in items}) != len(items):
        raise ValueError("input indices must be unique")
    db_path = os.fspath(db_path)
    _check_db_path(db_path)
    with exclusive_lock(db_path):
        data = open_label_db(db_path, settings)
        done = _finished(data)
        _check_same_inputs(done, items)
        pending = [m for m in items if m.index not in done]
        counts = _label_pending(data, pending, len(items), settings, client, scheduler_address,
                                n_workers, processes, progress, on_result)
    return LabelSummary(skipped=len(items) - len(pending), **counts)


def _label_pending(data, pending, total, settings, client, scheduler_address, n_workers,
                   processes, progress, on_result) -> dict[str, int]:
    counts = {"labelled": 0, "failed": 0}
    if not pending:
        return counts
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(_dask_client(scheduler_address, n_workers, processes))
        from dask.distributed import as_completed

        futures = client.map(label_one, pending, settings=settings, pure=False)
        bar = stack.enter_context(
            tqdm(total=total, initial=total - len(pending), disable=not progress,
                 desc="xTB labels")
        )
        for future in as_completed(futures):
            result = future.result()
            _store(data, result)
            counts["labelled" if result["ok"] else "failed"] += 1
            bar.update()
            if on_result is not None:
                on_result(result)
    return counts
