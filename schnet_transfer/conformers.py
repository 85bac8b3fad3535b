"""Molecular inputs as 3D structures: SMILES embedding and structure-file reading.

A SMILES string is embedded with RDKit's ETKDG and pre-optimised with MMFF94;
``.sdf``/``.mol``/``.xyz`` files keep their own coordinates; a multi-molecule
SDF or a multi-frame XYZ holds several records, addressed by their position
(:func:`count_records`, ``read_structure(path, record)``).  Every failure is
raised as :class:`StructureError` with the stage that failed, so the labeller
can record it instead of dropping the molecule.

Examples
--------
>>> from schnet_transfer.conformers import embed_smiles
>>> structure = embed_smiles("CCO", seed=0)
>>> structure.numbers.tolist()
[6, 6, 8, 1, 1, 1, 1, 1, 1]
>>> structure.positions.shape, structure.charge
((9, 3), 0)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase.io import read as ase_read
from rdkit import Chem
from rdkit.Chem import AllChem

__all__ = [
    "Structure",
    "StructureError",
    "embed_smiles",
    "read_structure",
    "count_records",
    "elements_of_smiles",
]


class Structure(NamedTuple):
    """A molecule in 3D: atomic numbers, coordinates in Å and total charge."""

    numbers: np.ndarray
    positions: np.ndarray
    charge: int = 0


class StructureError(ValueError):
    """A molecule could not be turned into a 3D structure.

    Parameters
    ----------
    stage
        Which step failed: ``"parse"``, ``"embedding"`` or ``"read"``.
    message
        Human-readable reason.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message


def _parse(smiles: str) -> Chem.Mol:
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles else None
    if mol is None:
        raise StructureError("parse", f"RDKit cannot parse SMILES {smiles!r}")
    return mol


def elements_of_smiles(smiles: str) -> set[str]:
    """Element symbols in a SMILES string (hydrogens included).

    >>> sorted(elements_of_smiles("CS(=O)C"))
    ['C', 'H', 'O', 'S']
    """
    mol = _parse(smiles)
    symbols = {atom.GetSymbol() for atom in mol.GetAtoms()}
    if any(atom.GetTotalNumHs() for atom in mol.GetAtoms()):
        symbols.add("H")
    return symbols


def _from_rdkit(mol: Chem.Mol) -> Structure:
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    return Structure(numbers, positions, Chem.GetFormalCharge(mol))


def embed_smiles(smiles: str, seed: int = 0, max_attempts: int = 5) -> Structure:
    """Embed a SMILES string in 3D (ETKDG v3) and pre-optimise it with MMFF94.

    Parameters
    ----------
    smiles
        Molecule as SMILES; explicit hydrogens are added.
    seed
        Random seed of the embedding, so labels are reproducible.
    max_attempts
        Embedding attempts with random coordinates after ETKDG fails.

    Returns
    -------
    Structure
        Atomic numbers ``(n,)``, coordinates in Å ``(n, 3)`` and formal charge.

    Raises
    ------
    StructureError
        If the SMILES does not parse or no conformer can be embedded.
    """
    mol = Chem.AddHs(_parse(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        params.maxIterations = max_attempts * 200
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise StructureError("embedding", f"ETKDG found no conformer for {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    else:
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    return _from_rdkit(mol)


def count_records(path: str | Path) -> int:
    """Number of molecules in a structure file: records of an SDF, frames of an XYZ.

    A ``.mol`` file holds one molecule.  A file that cannot be read, or holds
    no record, counts as one, so that reading it fails in the labeller and is
    recorded there instead of the file being dropped silently.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".mol":
            return 1
        if path.suffix.lower() == ".sdf":
            count = len(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False))
        else:
            count = len(ase_read(str(path), index=":"))
    except Exception:  # RDKit and ASE raise many types for bad files; read_structure reports
        return 1
    return max(count, 1)


def _read_sdf(path: Path, record: int) -> Chem.Mol | None:
    if path.suffix.lower() == ".mol":
        if record > 0:
            return None
        return Chem.MolFromMolFile(str(path), removeHs=False, sanitize=False)
    try:
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)
        return supplier[record] if record < len(supplier) else None
    except Exception:  # an empty or binary file
        return None


def read_structure(path: str | Path, record: int = 0) -> Structure:
    """Read a molecule with coordinates (Å) from an ``.sdf``, ``.mol`` or ``.xyz`` file.

    SDF/MOL files are read with RDKit keeping explicit hydrogens (formal charges
    kept); other formats go through :func:`ase.io.read` (charge 0).

    Parameters
    ----------
    path
        Structure file.
    record
        Position of the molecule in the file (0-based): the record of a
        multi-molecule SDF or the frame of a multi-frame XYZ.

    Raises
    ------
    StructureError
        If the file or the record is missing or holds no 3D structure.
    """
    path = Path(path)
    where = f"{path}" if record == 0 else f"record {record + 1} of {path}"
    if not path.is_file():
        raise StructureError("read", f"no such structure file: {path}")
    if path.suffix.lower() in {".sdf", ".mol"}:
        mol = _read_sdf(path, record)
        if mol is None or mol.GetNumConformers() == 0:
            raise StructureError("read", f"RDKit cannot read a conformer from {where}")
        structure = _from_rdkit(mol)
    else:
        try:
            atoms = ase_read(str(path), index=record)
        except Exception as err:  # ASE raises many types for bad files
            raise StructureError("read", f"ASE cannot read {where}: {err}") from err
        structure = Structure(atoms.numbers.astype(np.int64), atoms.positions.copy())
    positions = structure.positions
    if not np.isfinite(positions).all() or np.ptp(positions, axis=0).max() == 0.0:
        raise StructureError("read", f"{where} has no usable 3D coordinates")
    return structure
