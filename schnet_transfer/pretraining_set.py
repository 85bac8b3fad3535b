"""Select the molecules of a cheap-QC pre-training set.

Inputs come from a SMILES table (QM9 sample, MOSES, a user-supplied OE62
export, ...) or from structure files.  The filters of Kirschbaum & Bande
(2024) are available: drop molecules containing given elements (As, Se, Br,
Te, I by default), keep only sulfur-containing molecules, and cap the set size
with a seeded subsample.  Every :class:`MoleculeInput` keeps its row index in
the source, which is the key that makes labelling runs resumable.

Nothing is dropped silently: an id that appears twice with different molecules
is refused (``ValueError`` naming both rows or files), identical duplicates are
skipped and counted (:class:`InputSet`), and every record of a multi-molecule
SDF or multi-frame XYZ file becomes its own input.

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
>>> [m.name for m in seeded_order(mols, seed=0)][:2]  # sets of size k: the first k
['c', 'a']
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from ase.data import chemical_symbols

from .conformers import StructureError, count_records, elements_of_smiles, read_structure

__all__ = [
    "MoleculeInput",
    "InputSet",
    "PAPER_EXCLUDED_ELEMENTS",
    "read_smiles_table",
    "read_structure_files",
    "from_smiles_table",
    "from_structure_files",
    "drop_elements",
    "require_element",
    "cap",
    "seeded_order",
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
    record
        Position of the molecule in ``path`` (0-based; multi-molecule files).
    """

    index: int
    name: str
    smiles: str | None = None
    path: str | None = None
    record: int = 0

    def __post_init__(self):
        if (self.smiles is None) == (self.path is None):
            raise ValueError("give exactly one of smiles or path")


class InputSet(NamedTuple):
    """Molecules read from a source and the number of identical duplicates skipped."""

    items: list[MoleculeInput]
    duplicates: int


def read_smiles_table(
    path: str | Path, smiles_column: str = "smiles", id_column: str | None = None
) -> InputSet:
    """Read molecules from a CSV table (``.csv`` or ``.csv.gz``).

    Rows that repeat an earlier id with the same SMILES (or repeat a SMILES when
    ``id_column`` is None) are skipped and counted, since some sources (the
    shipped QM9 sample) were drawn with replacement.

    Raises
    ------
    FileNotFoundError, KeyError
        If the file or a column is missing.
    ValueError
        If the file is not a CSV table, has no rows, or an id is repeated with
        a different SMILES (the message names both lines of the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such SMILES table: {path}")
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError, EOFError) as err:  # pandas parser, gzip and decoding errors
        raise ValueError(f"cannot read {path} as a CSV table: {err}") from err
    for column in (smiles_column, id_column):
        if column is not None and column not in table.columns:
            raise KeyError(f"{path} has no column {column!r}; columns: {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{path} has no rows")
    smiles = table[smiles_column].astype(str)
    ids = table[id_column].astype(str) if id_column else smiles
    repeated = ids.duplicated().to_numpy()
    first_smiles = smiles.groupby(ids).transform("first")
    conflicts = np.flatnonzero(repeated & (smiles != first_smiles).to_numpy())
    if len(conflicts):
        row = int(conflicts[0])
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise ValueError(
            f"{path}: id {ids.iloc[row]!r} on lines {first + 2} and {row + 2} holds different "
            f"SMILES ({smiles.iloc[first]!r} vs {smiles.iloc[row]!r}); {len(conflicts)} "
            f"row(s) repeat an id with another molecule; make the ids unique"
        )
    items = [
        MoleculeInput(int(i), str(ids.iloc[i]), smiles=str(smiles.iloc[i]))
        for i in np.flatnonzero(~repeated)
    ]
    return InputSet(items, int(repeated.sum()))


def from_smiles_table(
    path: str | Path, smiles_column: str = "smiles", id_column: str | None = None
) -> list[MoleculeInput]:
    """The molecules of :func:`read_smiles_table` (identical duplicates skipped)."""
    return read_smiles_table(path, smiles_column, id_column).items


def read_structure_files(paths: Iterable[str | Path]) -> InputSet:
    """One input per molecule of the structure files (sorted by path).

    A file is named after its stem; the records of a multi-molecule SDF or
    multi-frame XYZ are named ``<stem>#1``, ``<stem>#2``, ...  A file given
    twice (same real path, or same stem and same content) is read once and
    counted as a duplicate.

    Raises
    ------
    ValueError
        If two different files share a stem (the id of their molecules).
    """
    by_stem: dict[str, str] = {}
    seen: set[str] = set()
    duplicates = 0
    for path in sorted(str(p) for p in paths):
        real, stem = os.path.realpath(path), Path(path).stem
        if real in seen or (stem in by_stem and _same_file(by_stem[stem], path)):
            duplicates += 1
            continue
        if stem in by_stem:
            raise ValueError(
                f"structure files {by_stem[stem]} and {path} share the id {stem!r} but differ; "
                "rename one or label them into separate databases"
            )
        seen.add(real)
        by_stem[stem] = path
    items: list[MoleculeInput] = []
    for stem, path in sorted(by_stem.items(), key=lambda kv: kv[1]):
        n = count_records(path)
        for record in range(n):
            name = stem if n == 1 else f"{stem}#{record + 1}"
            items.append(MoleculeInput(len(items), name, path=path, record=record))
    return InputSet(items, duplicates)


def _same_file(a: str, b: str) -> bool:
    return os.path.isfile(a) and os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)


def from_structure_files(paths: Iterable[str | Path]) -> list[MoleculeInput]:
    """The molecules of :func:`read_structure_files` (duplicate files skipped)."""
    return read_structure_files(paths).items


def _elements(item: MoleculeInput) -> set[str] | None:
    """Element symbols of an input, None when it cannot be read (kept for labelling)."""
    try:
        if item.path is not None:
            return {chemical_symbols[z] for z in read_structure(item.path, item.record).numbers}
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


def seeded_order(items: Sequence[MoleculeInput], seed: int = 0) -> list[MoleculeInput]:
    """The inputs in one seeded random order, for nested sets of several sizes.

    Unlike :func:`cap`, whose subsamples of different sizes are drawn
    independently, the first ``k`` inputs of this order are the set of size
    ``k``: the 10k set is part of the 20k set, which is part of the 50k set,
    and one labelling run in this order serves every size.
    """
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
