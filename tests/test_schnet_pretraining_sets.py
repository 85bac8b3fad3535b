"""Pre-training sets at the paper's scale: nested orders, target-similar sets, no target molecule.

Real molecules only: MOSES rows from ``data/zinc``, HOPV and FreeSolv molecules from ``data/hopv``
and ``data/freesolv``.  Target identity is checked here with full InChIKeys computed by RDKit
directly, independently of :mod:`schnet_transfer.target_similar`.
"""

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from schnetpack.data import ASEAtomsData

from schnet_transfer.pretraining_set import MoleculeInput, cap, seeded_order
from schnet_transfer.target_similar import (
    connectivity_key, exclude_molecules, find_molecules, max_tanimoto, read_target_smiles,
    select_similar)

ROOT = Path(__file__).resolve().parents[1]
MOSES = ROOT / "data" / "zinc" / "moses_subset_100k.csv.gz"
sys.path.insert(0, str(ROOT / "benchmarks" / "schnet_transfer"))


@pytest.fixture(scope="module")
def targets():
    return {name: read_target_smiles(name, ROOT / "data" / name) for name in ("hopv", "freesolv")}


@pytest.fixture(scope="module")
def moses():
    """The first 400 shipped MOSES molecules as labelling inputs."""
    table = pd.read_csv(MOSES, nrows=400)
    return [MoleculeInput(i, s, smiles=s) for i, s in enumerate(table["SMILES"])]


def _inchikeys(smiles):
    return {Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in smiles}


def _respelled(smiles, seed=0):
    """Other SMILES of the same molecules (random atom order), as another source writes them."""
    rng = np.random.default_rng(seed)
    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        order = [int(i) for i in rng.permutation(mol.GetNumAtoms())]
        out.append(Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False))
    return out


def test_seeded_order_gives_nested_deterministic_sets(moses):
    order = seeded_order(moses, seed=0)
    assert [m.index for m in order] == [m.index for m in seeded_order(moses, seed=0)]
    assert sorted(m.index for m in order) == list(range(len(moses)))
    assert [m.index for m in order] != [m.index for m in seeded_order(moses, seed=1)]
    assert [m.index for m in order[:10]] != list(range(10))  # shuffled, not source order
    sizes = (50, 100, 250)
    sets = [{m.index for m in order[:n]} for n in sizes]
    assert sets[0] < sets[1] < sets[2]
    # the size cap draws each size on its own: its sets need not nest, which is why the
    # paper-scale sets use one order
    capped = [{m.index for m in cap(moses, n, seed=0)} for n in sizes]
    assert not (capped[0] < capped[1] < capped[2])


def test_walk_cuts_the_first_labelled_molecules_and_skips_failures():
    from make_pretraining_sets import walk

    order = [7, 3, 9, 1, 4, 8, 2]
    members, pending = walk(order, 3, labelled={7, 9, 1, 4}, failed={3})
    assert (members, pending) == ([7, 9, 1], [])
    members, pending = walk(order, 4, labelled={7, 9}, failed={3})
    assert (members, pending) == ([7, 9], [1, 4])  # 1 and 4 still to label
    members, pending = walk(order, 10, labelled=set(order) - {8}, failed={8})
    assert (members, pending) == ([7, 3, 9, 1, 4, 2], [])  # order exhausted: a short set


def test_labelling_priority_finishes_the_small_sets_first():
    from make_pretraining_sets import priority

    sets = {"random_10k": 10_000, "random_20k": 20_000, "random_50k": 50_000,
            "hopv_similar_10k": 10_000, "freesolv_similar_10k": 10_000}
    plan = {"sets": {name: {"order": name.rsplit("_", 1)[0] if "similar" in name else "random",
                            "size": size} for name, size in sets.items()}}
    assert priority(plan) == ["random_10k", "random_20k", "hopv_similar_10k",
                              "freesolv_similar_10k", "random_50k"]


def test_select_similar_ranks_by_nearest_target_tanimoto(moses, targets):
    reference = targets["freesolv"][:40]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    ref_fps = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in reference]
    expected = {
        m.index: max(DataStructs.TanimotoSimilarity(
            generator.GetFingerprint(Chem.MolFromSmiles(m.smiles)), fp) for fp in ref_fps)
        for m in moses
    }
    np.testing.assert_allclose(max_tanimoto(moses, reference), [expected[m.index] for m in moses])
    ranking = sorted(expected, key=lambda i: (-expected[i], i))
    chosen = select_similar(moses, reference, size=25)
    assert [m.index for m in chosen] == ranking[:25]
    assert [m.index for m in select_similar(moses, reference, size=10)] == ranking[:10]
    mean_chosen = np.mean([expected[m.index] for m in chosen])
    assert mean_chosen > np.mean(list(expected.values())) + 0.05


def test_target_molecules_are_never_selected(moses, targets):
    targets = {name: smiles[:60] for name, smiles in targets.items()}
    target_smiles = targets["hopv"] + targets["freesolv"]
    pool = moses[:150] + [
        MoleculeInput(10_000 + i, f"target_{i}", smiles=s)
        for i, s in enumerate(_respelled(target_smiles))
    ]
    for reference in (targets["hopv"], targets["freesolv"], target_smiles):
        chosen = select_similar(pool, reference, size=len(pool))
        chosen_keys = _inchikeys(m.smiles for m in chosen)
        assert not chosen_keys & _inchikeys(reference)
        assert {m.index for m in chosen} >= {m.index for m in moses[:150]}
        # the other target set's molecules are ordinary candidates
        assert chosen_keys >= _inchikeys(target_smiles) - _inchikeys(reference)


def test_exclude_molecules_matches_by_inchikey_connectivity():
    pool = [
        MoleculeInput(0, "R-2-butanol", smiles="C[C@@H](O)CC"),
        MoleculeInput(1, "acetate", smiles="CC(=O)[O-]"),
        MoleculeInput(2, "d1-ethanol", smiles="[2H]OCC"),
        MoleculeInput(3, "phenol respelled", smiles="C1=CC=C(O)C=C1"),
        MoleculeInput(4, "butanone", smiles="CCC(C)=O"),
        MoleculeInput(5, "broken", smiles="C1CC("),
    ]
    reference = ["CCC(C)O", "CC(=O)O", "CCO", "Oc1ccccc1"]
    assert [m.name for m in exclude_molecules(pool, reference)] == ["butanone", "broken"]
    assert find_molecules([m.smiles for m in pool], reference) == [0, 1, 2, 3]
    assert connectivity_key("C1CC(") is None
    with pytest.raises(ValueError, match="structure files"):
        exclude_molecules([MoleculeInput(0, "a", path="a.sdf")], reference)
    with pytest.raises(ValueError, match="cannot parse the reference"):
        exclude_molecules(pool, ["C1CC("])


def test_shipped_moses_source_holds_no_hopv_or_freesolv_molecule(targets):
    """Every MOSES pre-training set is drawn from this file; none of its molecules is a target."""
    smiles = pd.read_csv(MOSES)["SMILES"].tolist()
    assert len(smiles) == 100_000
    assert find_molecules(smiles, targets["hopv"] + targets["freesolv"]) == []


def test_produced_sets_are_nested_hold_no_target_and_match_the_record(
        tmp_path, capsys, moses, targets):
    from make_pretraining_sets import main

    # the first 30 HOPV and 40 FreeSolv molecules as the target sets, six of them in the source
    target_dir = tmp_path / "targets"
    (target_dir / "hopv").mkdir(parents=True)
    (target_dir / "freesolv").mkdir()
    hopv = pd.read_csv(ROOT / "data" / "hopv" / "kirschbaum_hopv.csv.gz", nrows=30)
    hopv[["smiles"]].to_csv(target_dir / "hopv" / "kirschbaum_hopv.csv.gz", index=False)
    lines = (ROOT / "data" / "freesolv" / "database.txt").read_text().splitlines()
    (target_dir / "freesolv" / "database.txt").write_text("\n".join(lines[:43]) + "\n")
    fs = targets["freesolv"][:4]
    rows = [m.smiles for m in moses[:40]] + _respelled(fs + targets["hopv"][:2]) + ["CCBr"]
    source = tmp_path / "source.csv"
    pd.DataFrame({"SMILES": rows}).to_csv(source, index=False)
    work, results = tmp_path / "work", tmp_path / "sets.json"
    common = ["--work-dir", str(work), "--source", str(source), "--targets-dir", str(target_dir),
              "--sizes", "3,6", "--similar-size", "2", "--results", str(results),
              "--no-progress"]
    for step in ("plan", "label", "cut"):
        assert main([step, *common]) == 0
    plan = json.loads((work / "plan.json").read_text())
    with_br = 1 + sum("Br" in s for s in rows[:40])
    assert plan["counts"] == {"read": 47, "duplicates_skipped": 0, "dropped_elements": with_br,
                              "dropped_target_molecules": 6, "pool": 47 - with_br - 6}
    record = json.loads(results.read_text())
    assert record["xtb"]["method"] == "GFN2-xTB" and record["xtb"]["solvation_model"] == "alpb"
    members = {}
    for name, entry in record["sets"].items():
        assert entry["complete"] and entry["target_molecules"] == 0
        data = ASEAtomsData(str(work / f"moses_gfn2_{name}.db"))
        db_rows = list(data.conn.select())
        assert len(db_rows) == entry["size"] == entry["labelled"]
        assert data.metadata["pretraining_set"]["name"] == name
        assert data.metadata["provenance"]["method"] == "GFN2-xTB"
        assert not _inchikeys(r.smiles for r in db_rows) & _inchikeys(fs + targets["hopv"][:2])
        members[name] = [int(r.input_index) for r in db_rows]
        gaps = [float(r.data["gap"][0]) for r in db_rows]
        assert entry["labels"]["gap"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-4)
        assert entry["labels"]["gap"]["unit"] == "eV"
        assert all(np.isfinite(r.data["gap"]).all() for r in db_rows)
    assert members["random_6"][:3] == members["random_3"]
    assert members["random_6"] == plan["orders"]["random"][:6]  # nothing failed: the first 6
    assert members["hopv_similar_2"] == plan["orders"]["hopv_similar"][:2]
    # a second cut writes the same content (the record's digest), the set files are new
    first = {n: e["content_sha256"] for n, e in record["sets"].items()}
    assert main(["cut", *common]) == 0
    again = json.loads(results.read_text())["sets"]
    assert {n: e["content_sha256"] for n, e in again.items()} == first
    with sqlite3.connect(work / "moses_gfn2_labels.db") as con:
        assert con.execute("select count(*) from systems").fetchone()[0] == len(
            set().union(*map(set, members.values())))

    # one set rebuilt from scratch in another work dir reproduces its record, the others stay
    work2 = tmp_path / "work2"
    only = ["--work-dir", str(work2), *common[2:], "--sets", "random_3"]
    for step in ("plan", "label", "cut"):
        assert main([step, *only]) == 0
    assert "random_3: rebuilt, same " in capsys.readouterr().err
    rebuilt = json.loads(results.read_text())["sets"]
    assert {n: e for n, e in rebuilt.items() if n != "random_3"} == {
        n: e for n, e in again.items() if n != "random_3"}
    assert rebuilt["random_3"]["labels"] == again["random_3"]["labels"]
    assert rebuilt["random_3"]["rebuilt"]["labels_db_labelled"] == 3
    assert sorted(p.name for p in work2.glob("moses_gfn2_*.db")) == [
        "moses_gfn2_labels.db", "moses_gfn2_random_3.db"]
    with sqlite3.connect(work2 / "moses_gfn2_labels.db") as con:
        assert con.execute("select count(*) from systems").fetchone()[0] == 3
    tampered = json.loads(results.read_text())
    tampered["sets"]["random_3"]["labels"]["gap"]["mean"] += 0.001
    tampered["sets"]["random_3"]["content_sha256"] = "0" * 64
    results.write_text(json.dumps(tampered))
    assert main(["cut", *only]) == 2
    assert "other label statistics than recorded" in capsys.readouterr().err
    assert json.loads(results.read_text()) == tampered
    assert main(["cut", *only[:-1], "random_4"]) == 2
    assert "unknown set(s) random_4; the plan has random_3" in capsys.readouterr().err
    results.write_text(json.dumps(record))

    # the cached plan answers only for its own sizes
    assert main(["cut", *["3,7" if a == "3,6" else a for a in common]]) == 2
    assert "other seed, source file or set sizes" in capsys.readouterr().err

    # a plan that lets a target molecule (FreeSolv's first, row 40) into a set: cut refuses it
    plan["orders"]["random"].insert(0, 40)
    (work / "plan.json").write_text(json.dumps(plan))
    assert main(["label", *common]) == 0
    assert main(["cut", *common]) == 2
    assert f"set random_3 holds target molecules, e.g. {rows[40]}" in capsys.readouterr().err


def test_bad_arguments_exit_with_status_2(tmp_path, capsys):
    from make_pretraining_sets import main

    with pytest.raises(SystemExit) as err:
        main(["plan", "--sizes", "0,5"])
    assert err.value.code == 2
    status = main(["plan", "--work-dir", str(tmp_path), "--source", str(tmp_path / "none.csv")])
    assert status == 2
    assert "no such SMILES table" in capsys.readouterr().err


def test_throughput_table_is_generated_from_its_json():
    from labelling_throughput import render_md

    path = ROOT / "benchmarks" / "results" / "schnet_labelling_throughput"
    result = json.loads(path.with_suffix(".json").read_text())
    assert path.with_suffix(".md").read_text() == render_md(result)
    for workers, runs in (("1", 1), ("2", 2)):
        rates = [r["molecules_per_s"] for r in result["runs"] if r["workers"] == runs]
        assert result["summary"][workers]["molecules_per_s_mean"] == pytest.approx(
            np.mean(rates), abs=1e-3)
