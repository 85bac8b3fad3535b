"""Select the molecules of a cheap-QC pre-training set.

Inputs come from a SMILES table (QM9 sample, MOSES, a user-supplied OE62
export, ...) or from structure files.  The filters of Kirschbaum & Bande
(2024) are available: drop molecules containing given elements (As, Se, Br,
Te, I by default), keep only sulfur-containing molecules, and cap the set size
with a seeded subsample.  Every :class:`MoleculeInput` keeps its row index in
the source, which is the key that makes labelling runs resumable.

Examples
--------
>>> from schnet_transfer.pretraining_set import (
...     MoleculeInput, cap, drop_elements, require_element)
>>> mols = [MoleculeInput(0, "a", smiles="CCBr"), MoleculeInput(1, "b", smiles="CCS"),
...         MoleculeInput(2, "c", smiles="CCO")]
>>> [m.name for m in drop_elements(mols)]
['b', 'c']
>>> [m.name for m in require_element(mols, "S")]
['b']
>>> len(cap(mols, 2, seed=0))
2
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from ase.data import chemical_symbols

from .conformers import StructureError, elements_of_smiles, read_structure

__all__ = [
    "MoleculeInput",
    "PAPER_EXCLUDED_ELEMENTS",
    "from_smiles_table",
    "from_structure_files",
    "drop_elements",
    "require_element",
    "cap",
]

#: Elements removed from the pre-training sets in the paper.
PAPER_EXCLUDED_ELEMENTS = ("As", "Se", "Br", "Te", "I")


@dataclass(frozen=True)
class MoleculeInput:
    """One molecule to label: a SMILES string or a structure file.

    Parameters
    ----------
    index
        Row of the molecule in its source; unique within a labelling run.
    name
        Identifier written to the database (e.g. ``gdb_133`` or a file stem).
    smiles
        SMILES string, embedded in 3D when no ``path`` is given.
    path
        ``.sdf``/``.mol``/``.xyz`` file whose coordinates are used as they are.
    """

    index: int
    name: str
    smiles: str | None = None
    path: str | None = None

    def __post_init__(self):
        if (self.smiles is None) == (self.path is None):
            raise ValueError("give exactly one of smiles or path")


def from_smiles_table(
    path: str | Path, smiles_column: str = "smiles", id_column: str | None = None
) -> list[MoleculeInput]:
    """Read molecules from a CSV table (``.csv`` or ``.csv.gz``).

    Rows with a duplicated id (or SMILES when ``id_column`` is None) after the
    first are skipped, since some sources (the shipped QM9 sample) were drawn
    with replacement.

    Raises
    ------
    FileNotFoundError, KeyError
        If the file or a column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such SMILES table: {path}")
    table = pd.read_csv(path)
    for column in (smiles_column, id_column):
        if column is not None and column not in table.columns:
            raise KeyError(f"{path} has no column {column!r}; columns: {list(table.columns)}")
    ids = table[id_column].astype(str) if id_column else table[smiles_column].astype(str)
    keep = ~ids.duplicated()
    return [
        MoleculeInput(int(i), str(ids.iloc[i]), smiles=str(table[smiles_column].iloc[i]))
        for i in np.flatnonzero(keep.to_numpy())
    ]


def from_structure_files(paths: Iterable[str | Path]) -> list[MoleculeInput]:
    """One input per structure file, named after the file stem (sorted by path)."""
    files = sorted(str(p) for p in paths)
    return [MoleculeInput(i, Path(p).stem, path=p) for i, p in enumerate(files)]


def _elements(item: MoleculeInput) -> set[str] | None:
    """Element symbols of an input, None when it cannot be read (kept for labelling)."""
    try:
        if item.path is not None:
            return {chemical_symbols[z] for z in read_structure(item.path).numbers}
        return elements_of_smiles(item.smiles)
    except StructureError:
        return None


def drop_elements(
    items: Sequence[MoleculeInput], elements: Iterable[str] = PAPER_EXCLUDED_ELEMENTS
) -> list[MoleculeInput]:
    """Remove molecules containing any of ``elements``.

    Unreadable molecules are kept so that the labeller records their failure.
    """
    excluded = set(elements)
    unknown = excluded - set(chemical_symbols)
    if unknown:
        raise ValueError(f"unknown element symbols: {sorted(unknown)}")
    return [m for m in items if not ((_elements(m) or set()) & excluded)]


def require_element(items: Sequence[MoleculeInput], element: str = "S") -> list[MoleculeInput]:
    """Keep only molecules that contain ``element`` (the paper's S-only subsets)."""
    if element not in chemical_symbols:
        raise ValueError(f"unknown element symbol: {element!r}")
    return [m for m in items if element in (_elements(m) or set())]


def cap(items: Sequence[MoleculeInput], max_size: int, seed: int = 0) -> list[MoleculeInput]:
    """Seeded subsample of at most ``max_size`` molecules, in source order."""
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    if len(items) <= max_size:
        return list(items)
    chosen = np.random.default_rng(seed).choice(len(items), size=max_size, replace=False)
    return [items[i] for i in np.sort(chosen)]
