"""Convert the HOPV and FreeSolv target sets to schnetpack ``ASEAtomsData`` databases.

* HOPV15 (``kirschbaum_hopv.csv.gz``): conformer-1 geometries with PBE0/def2-SVP
  HOMO, LUMO and gap.  The file stores them in **Hartree**; they are written in eV.
* FreeSolv v0.52: geometries from ``sdffiles.tar.gz`` and a hydration free
  energy (kcal/mol) from ``database.txt``: ``label="expt"`` (default) the
  experimental value, ``label="calc"`` FreeSolv's calculated (GAFF/TIP3P
  alchemical) value, the label Kirschbaum & Bande trained on (the ``hfe``
  column of ``kirschbaum_freesolv.csv.gz`` equals ``calc`` for all 642).

Command line: ``schnet-transfer convert hopv data/hopv OUT.db`` and
``schnet-transfer convert freesolv [--label calc] data/freesolv OUT.db``.

Examples
--------
>>> import tempfile, os
>>> from schnet_transfer.datasets import convert_hopv
>>> db = convert_hopv("data/hopv", os.path.join(tempfile.mkdtemp(), "hopv.db"), limit=3)
>>> from schnetpack.data import ASEAtomsData
>>> data = ASEAtomsData(db)
>>> len(data), data.units["gap"]
(3, 'eV')
>>> 1.0 < float(data[0]["gap"]) < 7.0
True
"""

from __future__ import annotations

import ast
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from ase.units import Hartree
from rdkit import Chem
from schnetpack.data import ASEAtomsData

__all__ = ["convert_hopv", "convert_freesolv", "read_freesolv_table", "FREESOLV_LABELS"]

#: FreeSolv label choices of :func:`convert_freesolv` and what they are.
FREESOLV_LABELS = {
    "expt": "expt (experimental hydration free energy) from database.txt",
    "calc": "calc (calculated GAFF/TIP3P alchemical hydration free energy) from database.txt",
}


def _new_db(out: str | Path, units: dict[str, str], source: dict) -> ASEAtomsData:
    out = str(out)
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; remove it or choose another path")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    data = ASEAtomsData.create(out, distance_unit="Ang", property_unit_dict=units)
    data.update_metadata(provenance=source)
    return data


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing input file {path}")
    return path


def convert_hopv(source_dir: str | Path, out: str | Path, limit: int | None = None) -> str:
    """Write HOPV15 (geometries + PBE0 HOMO/LUMO/gap in eV) to an ASE database.

    Parameters
    ----------
    source_dir
        Folder holding ``kirschbaum_hopv.csv.gz``.
    out
        New ``.db`` path.
    limit
        Convert only the first ``limit`` molecules (for tests).

    Returns
    -------
    str
        ``out``.
    """
    table = pd.read_csv(_require(Path(source_dir) / "kirschbaum_hopv.csv.gz"), nrows=limit)
    data = _new_db(
        out,
        {"gap": "eV", "homo": "eV", "lumo": "eV"},
        {
            "dataset": "HOPV15 (Lopez et al. 2016), conformer 1",
            "file": "kirschbaum_hopv.csv.gz",
            "method": "QChem PBE0/def2-SVP",
            "conversion": "Hartree -> eV (ase.units.Hartree)",
        },
    )
    for i, row in table.iterrows():
        symbols = ast.literal_eval(row["atoms"])
        positions = np.array(ast.literal_eval(row["coords"]), dtype=float)
        values = {k: float(row[k]) * Hartree for k in ("gap", "homo", "lumo")}
        if not all(np.isfinite(v) for v in values.values()):
            raise ValueError(f"HOPV row {i} has a non-finite label: {values}")
        data.add_system(
            Atoms(symbols=symbols, positions=positions),
            atoms_metadata={"name": f"hopv_{i}", "smiles": row["smiles"]},
            **{k: np.array([v]) for k, v in values.items()},
        )
    return str(out)


def read_freesolv_table(path: str | Path) -> pd.DataFrame:
    """Parse FreeSolv's ``database.txt`` (``;``-separated, ``#`` comments).

    Returns a frame indexed by compound id with ``smiles``, ``expt``,
    ``expt_uncertainty`` and ``calc`` (kcal/mol).
    """
    rows = []
    for line in _require(Path(path)).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append(
            {
                "id": fields[0],
                "smiles": fields[1],
                "expt": float(fields[3]),
                "expt_uncertainty": float(fields[4]),
                "calc": float(fields[5]),
            }
        )
    return pd.DataFrame(rows).set_index("id")


def convert_freesolv(
    source_dir: str | Path, out: str | Path, limit: int | None = None, label: str = "expt"
) -> str:
    """Write FreeSolv (SDF geometries + a hydration free energy) to a database.

    Parameters
    ----------
    source_dir
        Folder holding ``database.txt`` and ``sdffiles.tar.gz``.
    out
        New ``.db`` path.
    limit
        Convert only the first ``limit`` compounds of ``database.txt``.
    label
        ``"expt"``: experimental value; ``"calc"``: FreeSolv's calculated
        (GAFF) value, as in Kirschbaum & Bande.  Stored as
        ``hydration_free_energy``; the database's provenance names the choice.

    Examples
    --------
    >>> import tempfile, os
    >>> from schnetpack.data import ASEAtomsData
    >>> folder = tempfile.mkdtemp()
    >>> expt = ASEAtomsData(convert_freesolv("data/freesolv", os.path.join(folder, "e.db"), limit=1))
    >>> calc = ASEAtomsData(convert_freesolv("data/freesolv", os.path.join(folder, "c.db"), limit=1,
    ...                                      label="calc"))
    >>> float(expt[0]["hydration_free_energy"][0]), float(calc[0]["hydration_free_energy"][0])
    (-2.49, -3.3)
    """
    if label not in FREESOLV_LABELS:
        raise ValueError(f"FreeSolv label must be one of {sorted(FREESOLV_LABELS)}, got {label!r}")
    source_dir = Path(source_dir)
    table = read_freesolv_table(source_dir / "database.txt").iloc[:limit]
    blocks = {}
    with tarfile.open(_require(source_dir / "sdffiles.tar.gz")) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".sdf"):
                blocks[Path(member.name).stem] = tar.extractfile(member).read().decode()
    data = _new_db(
        out,
        {"hydration_free_energy": "kcal/mol"},
        {
            "dataset": "FreeSolv v0.52 (Mobley & Guthrie 2014)",
            "label": FREESOLV_LABELS[label],
            "geometries": "sdffiles.tar.gz",
        },
    )
    for compound, row in table.iterrows():
        if compound not in blocks:
            raise FileNotFoundError(f"no SDF for {compound} in sdffiles.tar.gz")
        mol = Chem.MolFromMolBlock(blocks[compound], removeHs=False, sanitize=False)
        if mol is None:
            raise ValueError(f"RDKit cannot read the SDF of {compound}")
        data.add_system(
            Atoms(
                numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
                positions=mol.GetConformer().GetPositions(),
            ),
            atoms_metadata={"name": compound, "smiles": row["smiles"]},
            hydration_free_energy=np.array([row[label]]),
        )
    return str(out)
