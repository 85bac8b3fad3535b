"""Loaders return the known molecule/property counts and the published property splits."""
import gzip
import logging

import deepchem as dc
import numpy as np
import pandas as pd
import pytest

from deepchem_pintuning.data import (DATASETS, TOXCAST_GROUPS, DataFileNotFoundError, load_fewshot, load_fewshot_molnet,
                                     project_data_dir, task_splits)

# Published split sizes (PAR / GS-Meta / Pin-Tuning): (n_train, n_test)
PUBLISHED = {"tox21": (9, 3), "sider": (21, 6), "muv": (12, 5), "pcba": (118, 10),
             "toxcast-APR": (33, 10), "toxcast-ATG": (106, 40), "toxcast-BSK": (84, 31),
             "toxcast-CEETOX": (10, 4), "toxcast-CLD": (14, 5), "toxcast-NVS": (100, 39),
             "toxcast-OT": (11, 4), "toxcast-TOX21": (80, 20), "toxcast-Tanguay": (13, 5)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_split_sizes_match_literature(name):
    split = task_splits()[name]
    assert (len(split["train"]), len(split["test"])) == PUBLISHED[name]
    assert not set(split["train"]) & set(split["test"])


def test_named_test_properties():
    splits = task_splits()
    assert splits["tox21"]["test"] == ["SR-HSE", "SR-MMP", "SR-p53"]
    assert splits["muv"]["test"] == ["MUV-832", "MUV-846", "MUV-852", "MUV-858", "MUV-859"]
    sider_columns = list(pd.read_csv(project_data_dir() / "sider" / "sider.csv.gz", nrows=0).columns)
    assert splits["sider"]["test"] == sider_columns[-6:]
    assert splits["pcba"]["test"][:5] == ["PCBA-1030", "PCBA-1379", "PCBA-1452", "PCBA-1454", "PCBA-1457"]
    # the whole-ToxCast view is the union of the nine provider splits (451 / 158, paper Table 5)
    assert (len(splits["toxcast"]["train"]), len(splits["toxcast"]["test"])) == (451, 158)


@pytest.mark.parametrize("group", TOXCAST_GROUPS)
def test_toxcast_groups_are_positional_splits_of_shipped_files(group):
    name = f"toxcast-{group}"
    columns = list(pd.read_csv(project_data_dir() / "fewshot_gsmeta" / name / f"{name}.csv.gz", nrows=0).columns)
    n_train = PUBLISHED[name][0]
    assert columns[0] == "smiles"
    assert task_splits()[name] == {"train": columns[1:1 + n_train], "test": columns[1 + n_train:]}


def test_tox21_counts(tox21):
    assert len(tox21) + len(tox21.skipped) == 7831
    assert len(tox21.skipped) == 8  # aluminium/boron species RDKit rejects
    assert all(reason for _, reason in tox21.skipped)
    assert tox21.labels.shape == (7823, 12)
    active, inactive, missing = tox21.label_counts("SR-p53")
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz")
    kept = raw[~raw.smiles.isin([s for s, _ in tox21.skipped])]["SR-p53"]
    assert (active, inactive, missing) == ((kept == 1).sum(), (kept == 0).sum(), kept.isna().sum())


def test_missing_labels_are_nan_not_negative(tox21):
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz").set_index("smiles")
    i = tox21.smiles.index(raw.index[raw["NR-AR"].isna()][0])
    assert np.isnan(tox21.labels[i, tox21.task_index("NR-AR")])


@pytest.mark.parametrize("name, molecules, properties", [
    ("sider", 1427, 27), ("toxcast-CLD", 305, 19), ("toxcast-OT", 1782, 15), ("toxcast", 8576, 617)])
def test_known_counts(name, molecules, properties):
    data = load_fewshot(name)
    assert len(data) + len(data.skipped) == molecules
    assert len(data.tasks) == properties
    assert set(data.train_tasks + data.test_tasks) <= set(data.tasks)


class HeavyAtomCount(dc.feat.MolecularFeaturizer):
    """A one-number featurizer: loads MUV's 93,127 molecules in seconds where the graph featurizer
    takes 1-2 minutes (the benchmarks run that one on all of MUV)."""

    def _featurize(self, datapoint, **kwargs):
        return np.array([datapoint.GetNumHeavyAtoms()], dtype=np.float32)


def test_muv_counts(tmp_path):
    data = load_fewshot("muv", featurizer=HeavyAtomCount(), save_dir=str(tmp_path), progress=False)
    assert len(data) + len(data.skipped) == 93127
    assert data.label_counts("MUV-859")[0] == 24
    assert len(data.tasks) == 17 and data.labels.shape == (len(data), 17)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_fewshot("tox22")
    for name in DATASETS:
        assert name in str(info.value)


def test_pcba_without_file_explains_where_it_comes_from(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="pcba.csv.gz"):
        load_fewshot("pcba")
    with pytest.raises(DataFileNotFoundError, match="pcba.csv.gz"):
        load_fewshot("pcba", data_dir=str(tmp_path))


def test_pcba_loads_from_user_folder(tmp_path):
    """A user's pcba.csv.gz (MoleculeNet layout) is read; here a small file with real Tox21 molecules."""
    from deepchem.molnet.load_function.pcba_datasets import PCBA_TASKS
    tox = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz").head(60)
    labels = np.tile(tox.iloc[:, :12].to_numpy(), (1, 11))[:, :len(PCBA_TASKS)]
    frame = pd.DataFrame(labels, columns=PCBA_TASKS)
    frame["mol_id"], frame["smiles"] = tox["mol_id"], tox["smiles"]
    frame.to_csv(tmp_path / "pcba.csv.gz", index=False)
    data = load_fewshot("pcba", data_dir=str(tmp_path))
    assert len(data) == 60 and len(data.tasks) == 128
    assert data.test_tasks[5:] == ["PCBA-925", "PCBA-926", "PCBA-927", "PCBA-938", "PCBA-995"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="tox21.csv.gz"):
        load_fewshot("tox21", data_dir=str(tmp_path))


def test_invalid_smiles_are_counted_and_logged(tmp_path, caplog):
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz").head(40).copy()
    raw.loc[3, "smiles"] = "C1CC(not smiles"
    raw.loc[7, "smiles"] = "*C(=O)O"
    with gzip.open(tmp_path / "tox21.csv.gz", "wt") as handle:
        raw.to_csv(handle, index=False)
    with caplog.at_level(logging.WARNING, logger="deepchem_pintuning.data"):
        data = load_fewshot("tox21", data_dir=str(tmp_path), save_dir=str(tmp_path / "cache"))
    assert len(data) == 38
    assert [s for s, _ in data.skipped] == ["C1CC(not smiles", "*C(=O)O"]
    assert "could not parse" in data.skipped[0][1] and "atomic number 0" in data.skipped[1][1]
    assert "skipped 2 of 40" in caplog.text


def test_featurization_shows_a_progress_bar_over_every_raw_molecule(tmp_path, capsys):
    """The bar counts all 40 rows (2 unparsable ones included) and the featurizer is left as it was;
    a cached load and progress=False print nothing."""
    import deepchem as dc
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz").head(40).copy()
    raw.loc[3, "smiles"] = "C1CC(not smiles"
    raw.loc[7, "smiles"] = "*C(=O)O"
    with gzip.open(tmp_path / "tox21.csv.gz", "wt") as handle:
        raw.to_csv(handle, index=False)
    featurizer = dc.feat.CircularFingerprint(size=64)
    load = lambda **kw: load_fewshot("tox21", data_dir=str(tmp_path), save_dir=str(tmp_path / "cache"),
                                     featurizer=featurizer, **kw)
    load()
    bar = capsys.readouterr().err
    assert "featurizing tox21" in bar and "40/40" in bar, bar
    assert "_featurize" not in vars(featurizer) and "featurize" not in vars(featurizer)
    load()
    assert capsys.readouterr().err == ""
    load(reload=False, progress=False)
    assert capsys.readouterr().err == ""


def test_cache_follows_the_raw_file_content(tmp_path):
    """An edited copy of a dataset in another folder is featurized anew, never served from a stale cache."""
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz")
    cache = str(tmp_path / "cache")
    for rows, folder in ((40, "a"), (25, "b"), (40, "a")):
        (tmp_path / folder).mkdir(exist_ok=True)
        with gzip.open(tmp_path / folder / "tox21.csv.gz", "wt") as handle:
            raw.head(rows).to_csv(handle, index=False)
        assert len(load_fewshot("tox21", data_dir=str(tmp_path / folder), save_dir=cache)) == rows


def test_other_deepchem_featurizers_are_accepted_or_refused_in_one_line(tmp_path):
    import deepchem as dc
    cache = str(tmp_path / "cache")
    fingerprints = load_fewshot("toxcast-CLD", featurizer=dc.feat.CircularFingerprint(size=256), save_dir=cache)
    again = load_fewshot("toxcast-CLD", featurizer=dc.feat.CircularFingerprint(size=256), save_dir=cache)
    assert np.asarray(fingerprints.dataset.X).shape[1] == 256 and fingerprints.test_tasks == again.test_tasks
    assert np.array_equal(np.asarray(fingerprints.dataset.X), np.asarray(again.dataset.X))
    assert len(list((tmp_path / "cache").glob("*CircularFingerprint*.npz"))) == 1
    with pytest.raises(ValueError, match="cannot be cached without pickling"):
        load_fewshot("toxcast-CLD", featurizer=dc.feat.MolGraphConvFeaturizer(), save_dir=cache)


def test_molnet_style_entry_splits_the_properties():
    tasks, (train, test), transformers = load_fewshot_molnet("toxcast-CLD")
    data = load_fewshot("toxcast-CLD")
    assert tasks == data.tasks and transformers == []
    assert list(train.get_task_names()) == data.train_tasks and list(test.get_task_names()) == data.test_tasks
    column = data.task_index(data.test_tasks[0])
    assert np.array_equal(np.asarray(test.y)[:, 0], np.asarray(data.dataset.y)[:, column])
    assert len(train) == len(test) == len(data)
