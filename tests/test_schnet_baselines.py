"""SOAP (dscribe, atom-averaged) + KRR / MLP / gradient boosting on 50 real FreeSolv molecules."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dscribe.descriptors import SOAP

from schnet_transfer.baselines import fit_baselines, soap_features
from schnet_transfer.datasets import convert_freesolv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def freesolv50(tmp_path_factory):
    return convert_freesolv(ROOT / "data" / "freesolv",
                            tmp_path_factory.mktemp("fs") / "freesolv.db", limit=50)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    idx = np.random.default_rng(0).permutation(50)
    path = tmp_path_factory.mktemp("split") / "split.npz"
    np.savez(path, train_idx=idx[:30], val_idx=idx[30:40], test_idx=idx[40:])
    return path


def test_soap_is_averaged_and_permutation_invariant(freesolv50):
    X, y = soap_features(freesolv50, "hydration_free_energy")
    assert X.shape[0] == y.shape[0] == 50 and np.isfinite(X).all()
    from schnetpack.data import ASEAtomsData

    atoms = ASEAtomsData(freesolv50).conn.get(1).toatoms()
    shuffled = atoms[np.random.default_rng(1).permutation(len(atoms))]
    species = sorted({s for a in ASEAtomsData(freesolv50).conn.select()
                      for s in a.toatoms().get_chemical_symbols()})
    soap = SOAP(species=species, r_cut=5.0, n_max=6, l_max=4, average="inner")
    assert np.allclose(soap.create(shuffled), X[0])
    lines = [l for l in (ROOT / "data" / "freesolv" / "database.txt").read_text().splitlines()
             if not l.startswith("#")][:50]
    assert np.allclose(y, [float(l.split(";")[3]) for l in lines])  # experimental, not calc


def test_baselines_beat_the_mean_predictor(freesolv50, split):
    X, y = soap_features(freesolv50, "hydration_free_energy")
    maes = fit_baselines(X, y, np.load(split), seed=0)
    assert set(maes) == {"mean", "soap_krr", "soap_mlp", "soap_gradient_boosting"}
    assert all(np.isfinite(v) and v > 0 for v in maes.values())
    assert maes["soap_krr"] < maes["mean"]


def test_mlp_stays_bounded_on_an_element_rare_in_training(freesolv50):
    # One training molecule carries the element; per-feature standardisation then puts the test
    # molecules that carry it at |z| ~ 1e4 and the MLP's predictions explode.
    from schnetpack.data import ASEAtomsData

    X, y = soap_features(freesolv50, "hydration_free_energy")
    symbols = [set(row.toatoms().get_chemical_symbols()) for row in ASEAtomsData(freesolv50).conn.select()]
    counts = {e: sum(e in s for s in symbols) for e in set().union(*symbols)}
    element = min((e for e, c in counts.items() if c >= 3), key=counts.get)
    carriers = [i for i, s in enumerate(symbols) if element in s]
    others = [i for i in range(50) if i not in carriers]
    split = {"train_idx": np.array(others[:30] + carriers[:1]), "val_idx": np.array(others[30:40]),
             "test_idx": np.array(others[40:] + carriers[1:])}
    maes = fit_baselines(X, y, split, seed=0)
    assert maes["soap_mlp"] < 2 * maes["mean"], (element, maes)


def test_baselines_cli(freesolv50, tmp_path):
    # a split without validation molecules: one model of each kind (the model selection on a
    # validation split is fit_baselines', tested above); the test checks the command's wiring
    idx = np.random.default_rng(0).permutation(50)
    split = tmp_path / "split.npz"
    np.savez(split, train_idx=idx[:40], val_idx=idx[:0], test_idx=idx[40:])
    out = tmp_path / "maes.json"
    done = subprocess.run(
        [sys.executable, "-m", "schnet_transfer.cli", "baselines", str(freesolv50),
         "hydration_free_energy", "--split", str(split), "--out", str(out)],
        capture_output=True, text=True, check=True)
    assert json.loads(out.read_text()) == json.loads(done.stdout)
    assert sorted(json.loads(done.stdout)) == ["mean", "soap_gradient_boosting", "soap_mlp"]
    bad = subprocess.run(
        [sys.executable, "-m", "schnet_transfer.cli", "baselines", str(freesolv50), "gap",
         "--split", str(split)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no property 'gap'" in bad.stderr


def test_soap_progress_bar_counts_molecules_and_leaves_the_vectors_unchanged(freesolv50, capsys):
    """The per-molecule loop behind the bar gives dscribe's batch result exactly."""
    from dscribe.descriptors import SOAP
    from schnetpack.data import ASEAtomsData

    X, _ = soap_features(freesolv50, "hydration_free_energy", progress=True)
    bar = capsys.readouterr().err
    assert "SOAP" in bar and "50/50" in bar, bar
    atoms = [row.toatoms() for row in ASEAtomsData(freesolv50).conn.select()]
    species = sorted({s for a in atoms for s in a.get_chemical_symbols()})
    batch = SOAP(species=species, r_cut=5.0, n_max=6, l_max=4, average="inner", periodic=False).create(atoms)
    np.testing.assert_array_equal(X, batch)
    soap_features(freesolv50, "hydration_free_energy", progress=False)
    assert capsys.readouterr().err == ""
