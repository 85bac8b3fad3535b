"""A molecule library read in chunks (CSV or SDF), every row kept, and the checks done before any work.

:func:`read_library` yields ``(rows, smiles)`` chunks: ``rows`` is a DataFrame of the input rows as
they are (CSV: every column, as text; SDF: record number, name, SMILES and the requested id
property), ``smiles`` the SMILES to featurize (an empty string where the record has none, e.g. an
SDF record RDKit cannot read). Scores are written next to the rows by the caller, so output rows
equal input rows, in order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pandas as pd
from rdkit import Chem, rdBase


class UserInputError(ValueError):
    """A problem with a user's file or argument, reported as one line (the CLI exits with status 2)."""


def check_readable_file(path: str, what: str) -> Path:
    """``path`` as a Path if it is an existing, readable file; else :class:`UserInputError`."""
    file = Path(path)
    if not file.exists():
        raise UserInputError(f"{what} {path} does not exist")
    if not file.is_file():
        raise UserInputError(f"{what} {path} is not a file")
    if not os.access(file, os.R_OK):
        raise UserInputError(f"{what} {path} is not readable")
    return file


def check_writable_output(path: str) -> Path:
    """Refuse an output path that cannot be written, before any work is done."""
    out = Path(path)
    if out.is_dir():
        raise UserInputError(f"--out {path} is a directory; give a file name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UserInputError(f"--out {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserInputError(f"--out {path} is not writable")
    return out


def find_column(columns: List[str], wanted: Optional[str], default: str, path: Path, flag: str) -> str:
    """The column named ``wanted`` (or ``default``, case-insensitively); else a one-line error."""
    if wanted is not None:
        if wanted not in columns:
            raise UserInputError(f"{path} has no column {wanted!r} ({flag}); columns: {columns}")
        return wanted
    matches = [c for c in columns if c.strip().lower() == default]
    if not matches:
        raise UserInputError(f"{path} has no {default!r} column; name it with {flag} (columns: {columns})")
    return matches[0]


def count_records(path: Path) -> int:
    """Number of rows (CSV, header excluded) or records (SDF), for the progress bar."""
    with open(path, "rb") as handle:
        if path.suffix.lower() == ".sdf":
            return sum(line.startswith(b"$$$$") for line in handle)
        return max(0, sum(1 for _ in handle) - 1)


def read_library(path: Path, smiles_column: Optional[str] = None, id_column: Optional[str] = None,
                 chunk_size: int = 1000) -> Iterator[Tuple[pd.DataFrame, List[str]]]:
    """Yield ``(rows, smiles)`` chunks of a CSV or SDF library, see the module docstring."""
    if path.suffix.lower() == ".sdf":
        yield from _read_sdf(path, id_column, chunk_size)
        return
    try:
        header = list(pd.read_csv(path, nrows=0, dtype=str).columns)
    except (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserInputError(f"{path} is not a readable CSV file: {str(error).splitlines()[0]}") from None
    column = find_column(header, smiles_column, "smiles", path, "--smiles-column")
    if id_column is not None:
        find_column(header, id_column, id_column, path, "--id-column")
    try:
        for rows in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_size):
            yield rows, rows[column].str.strip().tolist()
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserInputError(f"{path}: {str(error).splitlines()[0]}") from None


def _read_sdf(path: Path, id_column: Optional[str], chunk_size: int) -> Iterator[Tuple[pd.DataFrame, List[str]]]:
    records: List[dict] = []
    with open(path, "rb") as handle, rdBase.BlockLogs():
        for number, mol in enumerate(Chem.ForwardSDMolSupplier(handle), start=1):
            record = {"record": number, "name": mol.GetProp("_Name") if mol is not None else "",
                      "smiles": Chem.MolToSmiles(mol) if mol is not None else ""}
            if id_column is not None:
                record[id_column] = mol.GetProp(id_column) if mol is not None and mol.HasProp(id_column) else ""
            records.append(record)
            if len(records) == chunk_size:
                rows = pd.DataFrame(records)
                records = []
                yield rows, rows["smiles"].tolist()
    if records:
        rows = pd.DataFrame(records)
        yield rows, rows["smiles"].tolist()
