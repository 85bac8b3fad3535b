"""Pre-training molecules that resemble a target set, and never the target molecules themselves.

Kirschbaum & Bande (2024) draw their pre-training sets at random (QM9, OE62).
:func:`select_similar` offers the selection they did not try: rank a pool of
candidate molecules by their Morgan-fingerprint Tanimoto similarity to the
nearest molecule of a reference set (HOPV, FreeSolv, or the training fold of
one) and keep the most similar ones.

A molecule of the reference set is never selected: its fingerprint would rank
it first, and a target molecule in the pre-training set leaks its test fold.
Identity is the connectivity block of the InChIKey (the first 14 characters),
so stereoisomers and isotopologues of a target molecule are excluded too;
:func:`exclude_molecules` applies the same check to any pre-training set.

Selecting by similarity to *all* target molecules uses the structures (never
the labels) of the test folds, as a deployment that knows the molecules to be
predicted would; for a strictly inductive protocol pass the training fold's
SMILES as the reference.

Examples
--------
>>> from schnet_transfer.pretraining_set import MoleculeInput
>>> from schnet_transfer.target_similar import exclude_molecules, select_similar
>>> pool = [MoleculeInput(0, "ethanol", smiles="CCO"),
...         MoleculeInput(1, "propanol", smiles="CCCO"),
...         MoleculeInput(2, "benzene", smiles="c1ccccc1"),
...         MoleculeInput(3, "toluene", smiles="Cc1ccccc1")]
>>> [m.name for m in select_similar(pool, ["OCC", "CCCCO"], size=2)]
['propanol', 'toluene']
>>> [m.name for m in exclude_molecules(pool, ["OCC"])]
['propanol', 'benzene', 'toluene']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.rdBase import BlockLogs

from .pretraining_set import MoleculeInput

__all__ = [
    "TARGETS",
    "connectivity_key",
    "read_target_smiles",
    "find_molecules",
    "exclude_molecules",
    "max_tanimoto",
    "rank_similar",
    "select_similar",
]

#: Target sets whose SMILES :func:`read_target_smiles` reads, and the shipped file of each.
TARGETS = {"hopv": "kirschbaum_hopv.csv.gz", "freesolv": "database.txt"}


def _mol(smiles: str | None) -> Chem.Mol | None:
    if not smiles:
        return None
    with BlockLogs():  # unparsable inputs are expected; the labeller reports them
        return Chem.MolFromSmiles(smiles)


def connectivity_key(smiles: str | None) -> str | None:
    """First block of the InChIKey (connectivity), None when RDKit cannot parse the SMILES.

    >>> connectivity_key("OCC") == connectivity_key("CCO")
    True
    >>> connectivity_key("C[C@H](N)O") == connectivity_key("C[C@@H](N)O")
    True
    """
    mol = _mol(smiles)
    return None if mol is None else _key(mol)


def read_target_smiles(name: str, source_dir: str | Path) -> list[str]:
    """SMILES of a shipped target set: ``"hopv"`` or ``"freesolv"``.

    Parameters
    ----------
    name
        Key of :data:`TARGETS`.
    source_dir
        Folder with the shipped file (``data/hopv`` or ``data/freesolv``).

    Raises
    ------
    ValueError
        If ``name`` is not a known target set.
    FileNotFoundError
        If the file is missing.
    """
    if name not in TARGETS:
        raise ValueError(f"unknown target set {name!r}; choose one of {sorted(TARGETS)}")
    path = Path(source_dir) / TARGETS[name]
    if not path.is_file():
        raise FileNotFoundError(f"missing target file {path}")
    if name == "hopv":
        return pd.read_csv(path, usecols=["smiles"])["smiles"].astype(str).tolist()
    from .datasets import read_freesolv_table

    return read_freesolv_table(path)["smiles"].astype(str).tolist()


def _smiles_of(items: Sequence[MoleculeInput]) -> list[str | None]:
    paths = [m.name for m in items if m.smiles is None]
    if paths:
        raise ValueError(
            f"target matching needs SMILES inputs; {len(paths)} input(s) are structure files "
            f"(e.g. {paths[0]!r})"
        )
    return [m.smiles for m in items]


def _composition(mol: Chem.Mol) -> tuple[int, ...]:
    """Sorted atomic numbers of the heavy atoms: equal for every pair of equal InChIKey
    connectivity blocks (protonation, charge, tautomers and isotopes leave them alone).

    Hydrogens written as atoms (``[H]``) are left out, so it also holds before sanitization.
    """
    return tuple(sorted(a.GetAtomicNum() for a in mol.GetAtoms() if a.GetAtomicNum() > 1))


def _key(mol: Chem.Mol) -> str | None:
    with BlockLogs():  # InChI warnings (e.g. about stereo) do not change the key
        key = Chem.MolToInchiKey(mol)
    return key.split("-")[0] if key else None


class _Reference:
    """Connectivity blocks of reference molecules, indexed by heavy-atom composition."""

    def __init__(self, reference_smiles: Iterable[str]):
        self.keys: dict[tuple[int, ...], set[str]] = {}
        for smiles in reference_smiles:
            mol = _mol(smiles)
            if mol is None or _key(mol) is None:
                raise ValueError(f"RDKit cannot parse the reference SMILES {smiles!r}")
            self.keys.setdefault(_composition(mol), set()).add(_key(mol))

    def __contains__(self, smiles: str | None) -> bool:
        # composition from the unsanitized parse (fast); InChIKey only for candidates
        with BlockLogs():
            raw = Chem.MolFromSmiles(smiles, sanitize=False) if smiles else None
        candidates = None if raw is None else self.keys.get(_composition(raw))
        if not candidates:
            return False
        mol = _mol(smiles)
        return mol is not None and _key(mol) in candidates


def find_molecules(smiles: Sequence[str | None], reference_smiles: Iterable[str]) -> list[int]:
    """Positions in ``smiles`` of molecules that are reference molecules.

    A match has the InChIKey connectivity block of a reference molecule; only
    molecules with the heavy atoms of a reference molecule are given an InChIKey,
    so a large set is checked in about the time RDKit takes to parse it.

    Raises
    ------
    ValueError
        If a reference SMILES does not parse.

    Examples
    --------
    >>> find_molecules(["CCO", "c1ccccc1", "[2H]OCC", "C[C@@H](O)CC"], ["OCC", "CCC(C)O"])
    [0, 2, 3]
    """
    reference = _Reference(reference_smiles)
    return [i for i, s in enumerate(smiles) if s in reference]


def exclude_molecules(
    items: Sequence[MoleculeInput], reference_smiles: Iterable[str]
) -> list[MoleculeInput]:
    """Drop every input whose InChIKey connectivity block is that of a reference molecule.

    Unparsable inputs are kept (the labeller records their failure).

    Raises
    ------
    ValueError
        If an input is a structure file or a reference SMILES does not parse.
    """
    found = set(find_molecules(_smiles_of(items), reference_smiles))
    return [m for i, m in enumerate(items) if i not in found]


def _fingerprints(smiles: Sequence[str | None], radius: int, n_bits: int) -> list:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return [None if (mol := _mol(s)) is None else generator.GetFingerprint(mol) for s in smiles]


def _reference_fingerprints(reference_smiles: Sequence[str], radius: int, n_bits: int) -> list:
    fingerprints = _fingerprints(reference_smiles, radius, n_bits)
    for smiles, fp in zip(reference_smiles, fingerprints):
        if fp is None:
            raise ValueError(f"RDKit cannot parse the reference SMILES {smiles!r}")
    return fingerprints


def max_tanimoto(
    items: Sequence[MoleculeInput],
    reference_smiles: Iterable[str],
    radius: int = 2,
    n_bits: int = 2048,
) -> np.ndarray:
    """Tanimoto similarity of each input to its nearest reference molecule (Morgan bits).

    Returns
    -------
    numpy.ndarray
        ``(len(items),)`` values in [0, 1]; NaN for an input RDKit cannot parse.

    Raises
    ------
    ValueError
        If an input is a structure file or a reference SMILES does not parse.
    """
    reference = _reference_fingerprints(list(reference_smiles), radius, n_bits)
    similarity = np.full(len(items), np.nan)
    for i, fp in enumerate(_fingerprints(_smiles_of(items), radius, n_bits)):
        if fp is not None:
            similarity[i] = max(DataStructs.BulkTanimotoSimilarity(fp, reference))
    return similarity


def rank_similar(
    items: Sequence[MoleculeInput],
    reference_smiles: Iterable[str],
    radius: int = 2,
    n_bits: int = 2048,
) -> list[tuple[MoleculeInput, float]]:
    """Every selectable input with its similarity to the reference set, most similar first.

    Reference molecules themselves (same InChIKey connectivity block) and
    unparsable inputs are left out; ties are broken by the input index.

    Raises
    ------
    ValueError
        If an input is a structure file or a reference SMILES does not parse.
    """
    reference_smiles = list(reference_smiles)
    pool = exclude_molecules(items, reference_smiles)
    similarity = max_tanimoto(pool, reference_smiles, radius, n_bits)
    scored = np.flatnonzero(~np.isnan(similarity))
    order = scored[np.lexsort(([pool[i].index for i in scored], -similarity[scored]))]
    return [(pool[i], float(similarity[i])) for i in order]


def select_similar(
    items: Sequence[MoleculeInput],
    reference_smiles: Iterable[str],
    size: int,
    radius: int = 2,
    n_bits: int = 2048,
) -> list[MoleculeInput]:
    """The ``size`` inputs most similar to the reference set, most similar first.

    The first ``size`` of :func:`rank_similar`: reference molecules and
    unparsable inputs are never selected, ties go to the lower input index, so
    the result is deterministic and the first ``k`` of a selection are the
    selection of size ``k``.

    Parameters
    ----------
    items
        Candidate pool (SMILES inputs), e.g. filtered MOSES molecules.
    reference_smiles
        The target molecules to resemble.
    size
        Number of molecules to select (fewer when the pool is smaller).
    radius, n_bits
        Morgan fingerprint radius and length.

    Raises
    ------
    ValueError
        If ``size`` < 1, an input is a structure file or a reference SMILES
        does not parse.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return [m for m, _ in rank_similar(items, reference_smiles, radius, n_bits)[:size]]
