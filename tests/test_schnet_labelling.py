"""Cheap-QC labelling on real molecules: labels, resume after a crash, recorded failures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from schnetpack.data import ASEAtomsData

from schnet_transfer.conformers import (
    StructureError, elements_of_smiles, embed_smiles, read_structure)
from schnet_transfer.labelling import label_molecules
from schnet_transfer.pretraining_set import (
    MoleculeInput, cap, drop_elements, from_smiles_table, require_element)
from schnet_transfer.xtb_labels import XtbSettings

ROOT = Path(__file__).resolve().parents[1]
QM9 = ROOT / "data" / "qm9" / "qm9_small_sample.csv.gz"


class SimulatedCrash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def qm9_ten():
    """Ten real QM9 molecules plus one unparsable SMILES."""
    items = from_smiles_table(QM9, id_column="mol_id")[:10]
    return items + [MoleculeInput(10**6, "broken", smiles="C1CC(")]


def _rows(db):
    data = ASEAtomsData(str(db))
    rows = list(data.conn.select())
    return data, rows


def test_label_resume_after_crash(tmp_path, qm9_ten):
    db = tmp_path / "xtb.db"
    settings = XtbSettings()
    seen = []

    def crash_after_four(result):
        seen.append(result["index"])
        if len(seen) == 4:
            raise SimulatedCrash

    with pytest.raises(SimulatedCrash):
        label_molecules(qm9_ten, str(db), settings, n_workers=2, processes=False,
                        progress=False, on_result=crash_after_four)
    data, rows = _rows(db)
    n_failed_before = len(data.metadata["failures"])
    assert len(rows) + n_failed_before == 4  # everything finished before the crash is kept

    summary = label_molecules(qm9_ten, str(db), settings, n_workers=2, processes=False,
                              progress=False)
    assert summary.skipped == 4
    assert summary.labelled + summary.failed == len(qm9_ten) - 4

    data, rows = _rows(db)
    indices = [row.input_index for row in rows]
    assert len(indices) == len(set(indices)) == 10  # nothing lost, nothing duplicated
    assert set(indices) == {m.index for m in qm9_ten[:10]}
    failures = data.metadata["failures"]
    assert list(failures) == [str(10**6)]
    assert failures[str(10**6)]["stage"] == "parse"
    assert "C1CC(" in failures[str(10**6)]["reason"]

    gaps = np.array([row.data["gap"][0] for row in rows])
    hfe = np.array([row.data["hydration_free_energy"][0] for row in rows])
    energy = np.array([row.data["energy"][0] for row in rows])
    assert np.all((gaps > 1.0) & (gaps < 20.0)), gaps  # GFN2 gaps of small organics, eV
    assert np.all((hfe > -30.0) & (hfe < 10.0)), hfe  # kcal/mol
    assert np.all(energy < 0.0)
    assert data.units == {"gap": "eV", "energy": "eV", "hydration_free_energy": "kcal/mol"}
    provenance = data.metadata["provenance"]
    assert provenance["method"] == "GFN2-xTB" and provenance["tblite_version"]

    # the same molecules with GFN1 are a different labelling: refused, not mixed
    with pytest.raises(ValueError, match="other settings"):
        label_molecules(qm9_ten, str(db), XtbSettings(method="GFN1-xTB"), processes=False,
                        progress=False)


def test_gfn1_and_gfn2_differ():
    from schnet_transfer.xtb_labels import xtb_labels

    s = embed_smiles("c1ccccc1O", seed=0)
    gfn2 = xtb_labels(s.numbers, s.positions, XtbSettings())
    gfn1 = xtb_labels(s.numbers, s.positions, XtbSettings(method="GFN1-xTB"))
    assert gfn1["gap"] != pytest.approx(gfn2["gap"], abs=1e-3)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(StructureError, match="parse"):
        embed_smiles("not a smiles")
    with pytest.raises(StructureError, match="no such structure file"):
        read_structure(tmp_path / "missing.sdf")
    with pytest.raises(ValueError, match="method"):
        XtbSettings(method="DFTB")
    with pytest.raises(FileNotFoundError):
        from_smiles_table(tmp_path / "missing.csv")


def test_paper_filters_on_real_smiles():
    hopv = from_smiles_table(ROOT / "data" / "hopv" / "hopv.csv")
    kept = drop_elements(hopv)
    dropped = {m.smiles for m in hopv} - {m.smiles for m in kept}
    assert "Cc1cc[se]c1" in dropped
    assert all(elements_of_smiles(s) & {"As", "Se", "Br", "Te", "I"} for s in dropped)
    sulfur = require_element(kept, "S")
    assert 0 < len(sulfur) < len(kept) and all("s" in m.smiles.lower() for m in sulfur)
    a, b = cap(kept, 20, seed=1), cap(kept, 20, seed=1)
    assert a == b and len(a) == 20 and a != cap(kept, 20, seed=2)


def test_cli_label_structure_files(tmp_path):
    import tarfile

    with tarfile.open(ROOT / "data" / "freesolv" / "sdffiles.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".sdf")][:3]
        tar.extractall(tmp_path, members=members, filter="data")
    out = tmp_path / "fs_xtb.db"
    cmd = [sys.executable, "-m", "schnet_transfer.cli", "label", "--structures",
           str(tmp_path / "sdffiles" / "*.sdf"), "--workers", "1", "--no-progress", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["labelled"] + summary["failed"] == 3
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert again["skipped"] == 3 and again["labelled"] == 0
    assert len(ASEAtomsData(str(out))) == summary["labelled"]


def test_xtb_optimisation_lowers_the_energy():
    from schnet_transfer.xtb_labels import optimize_geometry, xtb_labels

    s = embed_smiles("CC(=O)N", seed=0)  # acetamide, MMFF geometry
    settings = XtbSettings(optimize=True)
    relaxed = optimize_geometry(s.numbers, s.positions, s.charge, settings)
    before = xtb_labels(s.numbers, s.positions, settings)["energy"]
    after = xtb_labels(s.numbers, relaxed, settings)["energy"]
    assert after < before and not np.allclose(relaxed, s.positions)


def test_numeric_names_are_stored_and_resumed(tmp_path):
    items = [MoleculeInput(0, "00001", smiles="CCO"), MoleculeInput(1, "2.5", smiles="CC")]
    db = str(tmp_path / "numeric.db")
    first = label_molecules(items, db, XtbSettings(), n_workers=1, processes=False, progress=False)
    again = label_molecules(items, db, XtbSettings(), n_workers=1, processes=False, progress=False)
    assert (first.labelled, again.skipped, again.labelled) == (2, 2, 0)
    with pytest.raises(ValueError, match="inputs changed"):
        label_molecules([MoleculeInput(0, "00002", smiles="CCO")], db, XtbSettings(),
                        processes=False, progress=False)
