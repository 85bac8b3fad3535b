"""Bad inputs to schnet_transfer: one line and status 2 for user errors, failures recorded.

Every user error goes through the real ``schnet-transfer`` entry point and must
print exactly one line on stderr (no traceback), exit with 2 and write nothing.
Molecules that cannot be labelled (open shell, broken geometry) must not stop a
run: they are recorded in the database's ``failures`` with a reason and listed
in the printed summary; nothing is dropped, duplicated or lost.
"""

import doctest
import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write as ase_write
from schnetpack.data import ASEAtomsData, AtomsDataModule

from schnet_transfer.cli import main

ROOT = Path(__file__).resolve().parents[1]

WATER = "3\n\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n"
O2 = "2\n\nO 0 0 0\nO 0 0 1.21\n"  # 16 electrons, triplet ground state
METHYL = "4\n\nC 0 0 0\nH 1.08 0 0\nH -0.54 0.935 0\nH -0.54 -0.935 0\n"  # 9 electrons
CLASH = "3\n\nO 0 0 0\nH 0 0 0.01\nH 0.96 0 0\n"  # two atoms 0.01 Å apart


def _cli(argv, capsys):
    """Run ``schnet-transfer`` in-process: exit code, stdout, stderr lines."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def _assert_user_error(rc, out, err, pattern):
    assert rc == 2, (rc, out, err)
    assert len(err) == 1, err  # one line, nothing else
    assert "Traceback" not in err[0]
    assert re.match(r"schnet-transfer( label)?: error: ", err[0]), err[0]
    assert re.search(pattern, err[0]), err[0]
    assert out == ""


def _db_state(db):
    """(row input indices, failure indices) of a labelling database."""
    data = ASEAtomsData(str(db))
    rows = sorted(int(r.input_index) for r in data.conn.select(include_data=False))
    return rows, sorted(int(k) for k in data.metadata["failures"])


def _three_record_sdf(path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    writer = Chem.SDWriter(str(path))
    for smiles in ("CCO", "CC", "CN"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=0)
        writer.write(mol)
    writer.close()


# --- user errors: refused before any labelling, one line, status 2, nothing written ---

CSV = {"ok.csv": "id,smiles\na,CCO\nb,CC\n"}

USER_ERRORS = [
    # (files in the folder, argv after "label", regex the one line must match)
    (CSV, ["--smiles-table", "ok.csv", "--max-size", "0"], r"--max-size: must be >= 1, got 0"),
    (CSV, ["--smiles-table", "ok.csv", "--max-size", "-3"], r"--max-size: must be >= 1, got -3"),
    (CSV, ["--smiles-table", "ok.csv", "--max-size", "many"], r"--max-size: invalid int"),
    (CSV, ["--smiles-table", "ok.csv", "--workers", "0"], r"--workers: must be >= 1, got 0"),
    (CSV, ["--smiles-table", "ok.csv", "--multiplicity", "0"], r"--multiplicity: must be >= 1"),
    ({}, ["--structures", "nothing/*.xyz"], r"--structures 'nothing/\*\.xyz' matches no file"),
    ({"w.xyz": WATER}, ["--structures", "w.xyz", "missing.sdf"],
     r"--structures 'missing\.sdf' matches no file"),
    ({"sub/w.xyz": WATER}, ["--structures", "sub"], r"--structures 'sub' matches the folder"),
    ({"a/mol.xyz": WATER, "b/mol.xyz": O2}, ["--structures", "*/mol.xyz"],
     r"a/mol\.xyz and .*b/mol\.xyz share the id 'mol' but differ"),
    ({"ids.csv": "id,smiles\na,CCO\nb,CC\na,CCN\n"},
     ["--smiles-table", "ids.csv", "--id-column", "id"],
     r"ids\.csv: id 'a' on lines 2 and 4 holds different SMILES \('CCO' vs 'CCN'\)"),
    ({"empty.csv": "id,smiles\n"}, ["--smiles-table", "empty.csv"], r"empty\.csv has no rows"),
    ({"bad.csv.gz": "not gzip at all\n"}, ["--smiles-table", "bad.csv.gz"],
     r"cannot read .*bad\.csv\.gz as a CSV table"),
    (CSV, ["--smiles-table", "ok.csv", "--smiles-column", "SMILES"],
     r"error: ok\.csv has no column 'SMILES'"),  # not a quoted KeyError repr
]


@pytest.mark.parametrize("files,argv,pattern", USER_ERRORS,
                         ids=[re.sub(r"\W+", "_", p)[:40] for *_, p in USER_ERRORS])
def test_user_errors_are_one_line_with_status_2(tmp_path, monkeypatch, capsys, files, argv,
                                                pattern):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text)
    rc, out, err = _cli(["label", "out.db", *argv], capsys)  # out first: --structures is greedy
    _assert_user_error(rc, out, err, pattern)
    assert not Path("out.db").exists()


def test_output_must_be_a_database(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("ok.csv").write_text(CSV["ok.csv"])
    rc, out, err = _cli(["label", "--smiles-table", "ok.csv", "out.txt"], capsys)
    _assert_user_error(rc, out, err, r"output out\.txt must be a \.db file")
    assert list(Path().iterdir()) == [Path("ok.csv")]
    Path("notes.db").write_text("my notes\n")  # an existing file that is no database
    rc, out, err = _cli(["label", "--smiles-table", "ok.csv", "notes.db"], capsys)
    _assert_user_error(rc, out, err, r"notes\.db exists but is not an ASE database")
    assert Path("notes.db").read_text() == "my notes\n"


# --- one writer per database: the lock ---

HOLDER = """
import sys, time
from schnet_transfer.dblock import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


def _lock_is_free(db):
    with open(f"{db}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_second_run_on_a_locked_database_is_refused(tmp_path, monkeypatch, capsys):
    from schnet_transfer.labelling import label_molecules
    from schnet_transfer.pretraining_set import MoleculeInput
    from schnet_transfer.xtb_labels import XtbSettings

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "xtb.db"
    label_molecules([MoleculeInput(0, "a", smiles="CCO")], str(db), XtbSettings(),
                    n_workers=1, processes=False, progress=False)
    before = _db_state(db)
    # table: a is done, b is new, a again (identical: skipped and counted), r a radical
    Path("t.csv").write_text("id,smiles\na,CCO\nb,CC\na,CCO\nr,[CH3]\n")
    argv = ["label", "--smiles-table", "t.csv", "--id-column", "id", "--workers", "1",
            "--no-progress", db]

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, out, err = _cli(argv, capsys)
        _assert_user_error(rc, out, err, rf"xtb\.db is in use by another labelling run: "
                                         rf"process {holder.pid} on .* holds .*xtb\.db\.lock")
        assert _db_state(db) == before  # nothing written
    finally:
        holder.kill()  # dies holding the lock: its pid stays in the file
        holder.wait()
    assert f"process {holder.pid}" in Path(f"{db}.lock").read_text()

    rc, out, _ = _cli(argv, capsys)  # the stale lock file does not block
    assert rc == 0
    summary = json.loads(out)
    assert (summary["read"], summary["duplicates_skipped"], summary["inputs"]) == (3, 1, 3)
    assert (summary["skipped"], summary["labelled"], summary["failed"]) == (1, 1, 1)
    assert summary["failures"] == [{"name": "r", "stage": "spin", "reason": summary[
        "failures"][0]["reason"]}]
    assert re.search(r"9 electrons .* odd count .* multiplicity", summary["failures"][0]["reason"])
    rows, failures = _db_state(db)
    assert rows == [0, 1] and failures == [3]  # each table row once: nothing lost or doubled
    assert _lock_is_free(db) and Path(f"{db}.lock").read_text() == ""  # released on exit


def test_lock_is_released_on_error_and_interrupt(tmp_path, monkeypatch, capsys):
    from schnet_transfer import labelling

    monkeypatch.chdir(tmp_path)
    Path("t.csv").write_text("id,smiles\na,CCO\nb,CC\nc,CN\n")
    argv = ["label", "--smiles-table", "t.csv", "--id-column", "id", "--workers", "1",
            "--no-progress", "xtb.db"]
    store = labelling._store

    def interrupt_after_one(data, result):  # Ctrl-C arriving in the client loop
        store(data, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(labelling, "_store", interrupt_after_one)
    try:
        rc, out, err = _cli(argv, capsys)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped the CLI (a traceback for the user)")
    assert rc == 130 and out == ""
    assert len(err) == 1 and "interrupted" in err[0] and "rerun" in err[0]
    assert _lock_is_free("xtb.db")
    rows, failures = _db_state("xtb.db")
    assert len(rows) + len(failures) == 1  # the finished molecule is kept
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    rc, out, err = _cli([*argv[:-1], "--method", "GFN1-xTB", "xtb.db"], capsys)
    _assert_user_error(rc, out, err, r"xtb\.db was labelled with other settings")
    assert _lock_is_free("xtb.db")  # released after the error
    assert _db_state("xtb.db") == (rows, failures)


# --- molecules xTB would label wrongly: recorded failures, the run goes on ---

@pytest.fixture(scope="module")
def structures_run(tmp_path_factory):
    """One CLI run over good, open-shell, broken and multi-record structure files."""
    work = tmp_path_factory.mktemp("structures")
    for name, text in {"o2.xyz": O2, "methyl.xyz": METHYL, "clash.xyz": CLASH,
                       "water.xyz": WATER}.items():
        (work / name).write_text(text)
    ase_write(work / "frames.xyz", [molecule("H2O"), molecule("CH4")])
    _three_record_sdf(work / "three.sdf")
    db = work / "xtb.db"
    rc = main(["label", "--structures", str(work / "*.xyz"), str(work / "*.sdf"),
               "--workers", "1", "--no-progress", str(db)])
    return rc, db


def test_structure_run_keeps_every_record(structures_run):
    rc, db = structures_run
    assert rc == 0
    data = ASEAtomsData(str(db))
    names = sorted(r.name for r in data.conn.select(include_data=False))
    failed = sorted(f["name"] for f in data.metadata["failures"].values())
    # 3 SDF records + 2 XYZ frames + water labelled; O2, CH3 and the clash refused
    assert names == ["frames#1", "frames#2", "three#1", "three#2", "three#3", "water"]
    assert failed == ["clash", "methyl", "o2"]
    rows, failures = _db_state(db)
    assert sorted(rows + failures) == list(range(9))  # each input exactly once
    formulas = {r.name: r.formula for r in data.conn.select(include_data=False)}
    assert formulas["three#1"] == "C2H6O" and formulas["three#3"] == "CH5N"
    assert formulas["frames#1"] == "H2O" and formulas["frames#2"] == "CH4"


@pytest.mark.parametrize("name,stage,pattern", [
    ("methyl", "spin", r"^9 electrons \(atomic numbers sum to 9, charge 0\): an odd count"),
    ("o2", "spin", r"half filled .* open-shell ground state .* multiplicity \(3 for a triplet\)"),
    ("clash", "geometry", r"^atoms 1 \(O\) and 2 \(H\) are 0\.010 Å apart, closer than 0\.5 Å"),
])
def test_wrong_molecules_are_recorded_with_a_reason(structures_run, name, stage, pattern):
    _, db = structures_run
    failures = {f["name"]: f for f in ASEAtomsData(str(db)).metadata["failures"].values()}
    assert failures[name]["stage"] == stage
    assert re.search(pattern, failures[name]["reason"]), failures[name]["reason"]


def test_multiplicity_labels_open_shells_and_checks_parity(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("o2.xyz").write_text(O2)
    Path("methyl.xyz").write_text(METHYL)
    rc, out, _ = _cli(["label", "--multiplicity", "3", "--workers", "1", "--no-progress",
                       "--structures", "o2.xyz", "methyl.xyz", "--seed", "0", "t.db"], capsys)
    assert rc == 0
    summary = json.loads(out)
    assert (summary["labelled"], summary["failed"]) == (1, 1)
    assert summary["failures"][0]["name"] == "methyl"
    assert re.search(r"9 electrons .* multiplicity 3 \(2 unpaired\) needs an even electron count",
                     summary["failures"][0]["reason"])
    data = ASEAtomsData("t.db")
    row = next(data.conn.select(include_data=True))
    assert row.name == "o2" and 3.0 < row.data["gap"][0] < 10.0  # not the singlet's 0 eV
    assert data.metadata["provenance"]["multiplicity"] == 3


# --- normalizer and split sizes ---

def _tiny_db(path, gaps):
    data = ASEAtomsData.create(str(path), distance_unit="Ang", property_unit_dict={"gap": "eV"})
    for gap, name in zip(gaps, ["H2O", "CH4", "NH3", "C2H6", "CO2"]):
        data.add_system(molecule(name), gap=np.array([gap]))
    return str(path)


@pytest.mark.parametrize("gaps,num_train,pattern", [
    ([1.0, 2.0, 3.0], 1, r"training split of 1 molecule\(s\) .* needs at least 2"),
    ([1.0, 2.0, 3.0], 0, r"training split of 0 molecule\(s\) .* needs at least 2"),
    ([1.5, 1.5, 1.5], 2, r"must be positive, got 0\.0: all 2 training labels are equal"),
])
def test_normalizer_says_what_is_wrong(tmp_path, gaps, num_train, pattern):
    from schnet_transfer.normalizer import StandardizeProperty

    db = _tiny_db(tmp_path / "tiny.db", gaps)
    dm = AtomsDataModule(db, batch_size=2, num_train=num_train, num_val=len(gaps) - num_train,
                         num_test=0, split_file=None, num_workers=0)
    dm.setup()
    with pytest.raises(ValueError, match=pattern) as err:
        StandardizeProperty("gap").datamodule(dm)
    assert "NaN" not in str(err.value)


def test_too_small_split_is_refused_before_training(tmp_path):
    """3 molecules with the default 0.9 / 0.1 split: no validation molecule."""
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    _tiny_db(dbs / "tiny.db", [1.0, 2.0, 3.0])
    cwd = tmp_path / "work"
    cwd.mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "spktrain"), "experiment=pretrain_xtb",
         "globals.dataset=tiny", "trainer.max_epochs=1", "model.representation.n_atom_basis=4",
         "model.representation.n_interactions=1", "model.representation.radial_basis.n_rbf=4",
         "logger=csv"],
        cwd=cwd, env={**os.environ, "SCHNET_TRANSFER_DATA": str(dbs), "PWD": str(cwd)},
        capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert re.search(r"tiny\.db: 3 molecules split into train 2 / val 0 / test 0; training "
                     r"needs at least 2 training and 1 validation", log), log[-2000:]
    assert "Epoch 0" not in log  # refused before the first epoch


# --- loading models ---

def test_state_dicts_load_without_unpickling(tmp_path, monkeypatch):
    from schnet_transfer import evaluate, finetune

    weights = {"representation.embedding.weight": torch.ones(3, 2)}
    torch.save(weights, tmp_path / "weights.pt")
    calls = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k["weights_only"])
                        or load(*a, **k))
    state = finetune.load_pretrained_state(tmp_path / "weights.pt")
    assert calls == [True] and torch.equal(state["representation.embedding.weight"],
                                           torch.ones(3, 2))
    (tmp_path / "junk").write_text("not a model")
    with pytest.raises(ValueError, match="junk is not a file written by torch.save"):
        finetune.load_pretrained_state(tmp_path / "junk")
    # a pickled model is refused unless the caller says it trusts the file
    plant = tmp_path / "pickled_model"
    torch.save(torch.nn.Linear(2, 2), plant)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        finetune.load_pretrained_state(plant)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        evaluate.predict(plant, plant, [0], "gap")
    assert set(finetune.load_pretrained_state(plant, trust_pickle=True)) == {"weight", "bias"}
    # whole pickled models cannot avoid unpickling: said where they are loaded
    for doc in (finetune.load_pretrained_state.__doc__, evaluate.predict.__doc__):
        assert "weights_only=False" in doc and "yourself" in doc
    configs = ROOT / "schnet_transfer" / "configs"
    for config in ("task/finetune.yaml", "experiment/finetune_hopv.yaml",
                   "experiment/finetune_freesolv.yaml"):
        assert "unpickled" in (configs / config).read_text(), config


@pytest.mark.parametrize("name", ["dblock", "split_check"])
def test_docstring_examples_of_new_modules(name):
    import importlib

    module = importlib.import_module(f"schnet_transfer.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_label_excludes_target_molecules_and_selects_similar_ones(tmp_path, capsys, monkeypatch):
    """FreeSolv's ethane, acetic acid (written as acetate) and 1-propanol never enter a pre-training
    set; --similar-to picks the pool molecule nearest to FreeSolv (tetracosane, Tanimoto 1.0 to
    FreeSolv's alkanes) and never a FreeSolv molecule, which would be as near."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    table = tmp_path / "pool.csv"
    table.write_text("id,smiles\na,CC\nb,CC(=O)[O-]\nc,CCCO\nd,CCCCCCCCCCCCCCCCCCCCCCCC\ne,C[Si](C)(C)C\n")
    formulas = lambda db: sorted(r.toatoms().get_chemical_formula() for r in ASEAtomsData(str(db)).conn.select())
    common = ["label", "--smiles-table", table, "--id-column", "id", "--workers", 1]
    rc, out, err = _cli([*common, "--exclude-targets", "freesolv", "--no-progress", tmp_path / "excluded.db"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    assert (summary["read"], summary["target_molecules_out"], summary["inputs"]) == (5, 3, 2)
    assert formulas(tmp_path / "excluded.db") == ["C24H50", "C4H12Si"]
    rc, out, err = _cli([*common, "--no-progress", "--similar-to", "freesolv", "--max-size", 1, tmp_path / "similar.db"],
                        capsys)
    assert rc == 0, err
    assert formulas(tmp_path / "similar.db") == ["C24H50"]
    rc, out, err = _cli(["label", "--smiles-table", table, "--similar-to", "freesolv", tmp_path / "x.db"], capsys)
    _assert_user_error(rc, out, err, r"--similar-to needs --max-size")
