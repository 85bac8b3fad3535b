"""Bad inputs through the real ``pintuning`` entry point and the public API.

Every case a user can cause must end in status 2 with one line that names the file, row, column or
flag, without a traceback, and leave nothing behind (no output file, no changed model or encoder).
Files planted to run code (a pickle in the featurization cache, a pickled checkpoint) must not.
"""
import gzip
import json
import pathlib
import pickle
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from deepchem_pintuning.cli import main
from deepchem_pintuning.data import load_fewshot, project_data_dir
from deepchem_pintuning.model import PinTuningModel
from deepchem_pintuning.model_directory import ModelDirectoryError


class Plant:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _one_line_error(capsys, status: int, pattern: str) -> str:
    assert status == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1 and err.startswith("pintuning: error:"), err
    assert re.search(pattern, err), err
    return err


# ---------------------------------------------------------------------------------------------- predict
SUPPORT_CASES = {
    "empty file": (b"", r"--support .* is not a readable CSV file"),
    "header only": (b"SMILES,active\n", r"--support .* has no rows"),
    "label 2": ("CCO,2\n", r"row 12: label '2' is not 0 or 1"),
    "label -1": ("CCO,-1\n", r"row 12: label '-1' is not 0 or 1"),
    "label NaN": ("CCO,NaN\n", r"row 12: label 'NaN' is not 0 or 1"),
    "label yes": ("CCO,yes\n", r"row 12: label 'yes' is not 0 or 1"),
    "ragged row": ("CCO,1,extra,fields\n", r"--support .* is not a readable CSV file.*fields"),
    "non-UTF-8 bytes": (b"CC\xff\xfeO,1\n", r"--support .* is not a readable CSV file"),
    "one class": ("ALL_INACTIVE", r"the support set needs at least 2 actives"),
}
LIBRARY_CASES = {
    "empty file": (b"", r"--library .* has no molecules"),
    "header only": (b"compound,SMILES\n", r"--library .* has no molecules"),
    "ragged row": ("c99,CCO,extra\n", r"library.csv: .*fields"),
    "non-UTF-8 bytes": (b"c99,CC\xff\xfeO\n", r"library.csv: .*(decode|codec)"),
}


def _predict_argv(assay, folder, support=None, library=None, model=None, *extra):
    return ["predict", "--model-dir", str(model or assay / "model"), "--support", str(support or assay / "support.csv"),
            "--library", str(library or assay / "library.csv"), "--out", str(folder / "scores.csv"),
            "--smiles-column", "SMILES", "--label-column", "active", "--quiet", *extra]


def _nothing_written(folder):
    assert not (folder / "scores.csv").exists() and not (folder / "scores.csv.partial").exists()


@pytest.mark.parametrize("case", sorted(SUPPORT_CASES))
def test_bad_support_file(assay, tmp_path, capsys, case):
    content, pattern = SUPPORT_CASES[case]
    base = (assay / "support.csv").read_bytes()
    if content == "ALL_INACTIVE":
        frame = pd.read_csv(assay / "support.csv").assign(active=0)
        frame.to_csv(tmp_path / "support.csv", index=False)
    elif case in ("empty file", "header only"):
        (tmp_path / "support.csv").write_bytes(content)
    else:
        (tmp_path / "support.csv").write_bytes(base + (content if isinstance(content, bytes) else content.encode()))
    _one_line_error(capsys, main(_predict_argv(assay, tmp_path, support=tmp_path / "support.csv")), pattern)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_bad_library_file(assay, tmp_path, capsys, case):
    content, pattern = LIBRARY_CASES[case]
    base = (assay / "library.csv").read_bytes()
    if case in ("empty file", "header only"):
        (tmp_path / "library.csv").write_bytes(content)
    else:
        (tmp_path / "library.csv").write_bytes(base + (content if isinstance(content, bytes) else content.encode()))
    # small chunks: the bad row comes after rows were scored and written, which must not survive either
    status = main(_predict_argv(assay, tmp_path, library=tmp_path / "library.csv") + ["--chunk-size", "5"])
    _one_line_error(capsys, status, pattern)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("which", ["support", "library"])
def test_a_directory_instead_of_a_file(assay, tmp_path, capsys, which):
    argv = _predict_argv(assay, tmp_path, **{which: tmp_path})
    _one_line_error(capsys, main(argv), rf"--{which} .* is not a file")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("flag,value,pattern", [
    ("--batch-size", "0", r"--batch-size must be at least 1, got 0"),
    ("--chunk-size", "0", r"--chunk-size must be at least 1, got 0"),
    ("--workers", "0", r"--workers must be at least 1, got 0"),
    ("--device", "gpu0", r"--device 'gpu0' is not a torch device"),
])
def test_bad_predict_arguments(assay, tmp_path, capsys, flag, value, pattern):
    _one_line_error(capsys, main(_predict_argv(assay, tmp_path) + [flag, value]), pattern)
    _nothing_written(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu(assay, tmp_path, capsys):
    _one_line_error(capsys, main(_predict_argv(assay, tmp_path) + ["--device", "cuda"]), r"CUDA is not available")


def _settings(assay) -> dict:
    return json.loads((assay / "model" / "pintuning_config.json").read_text())


def _checkpoint(assay) -> pathlib.Path:
    return next((assay / "model").glob("checkpoint*.pt"))


def _break_model(assay, folder: pathlib.Path, case: str) -> pathlib.Path:
    """A copy of the trained model directory with one defect."""
    model = folder / "model"
    if case == "missing":
        return model
    model.mkdir()
    if case == "empty":
        return model
    settings = _settings(assay)
    checkpoint = _checkpoint(assay).read_bytes()
    if case == "no checkpoint":
        checkpoint = None
    elif case == "truncated checkpoint":
        checkpoint = checkpoint[: len(checkpoint) // 2]
    elif case == "random bytes checkpoint":
        checkpoint = np.random.default_rng(0).bytes(4096)
    elif case == "edited n_tasks":
        settings["n_tasks"] += 1
    elif case == "other architecture":
        settings["config"]["adapter_dim"] += 1
    elif case == "eval_query_chunk 0":
        settings["config"]["eval_query_chunk"] = 0
    elif case == "unknown setting":
        settings["config"]["learning_rate_typo"] = 1.0
    text = json.dumps(settings) if case != "invalid json" else json.dumps(settings)[:-5]
    (model / "pintuning_config.json").write_text(text)
    if checkpoint is not None:
        (model / "checkpoint1.pt").write_bytes(checkpoint)
    return model


MODEL_CASES = {
    "missing": r"not a saved PinTuningModel",
    "empty": r"pintuning_config.json not found",
    "no checkpoint": r"has no checkpoint",
    "truncated checkpoint": r"checkpoint1.pt is not a readable PinTuningModel checkpoint",
    "random bytes checkpoint": r"checkpoint1.pt is not a readable PinTuningModel checkpoint",
    "edited n_tasks": r"does not fit the settings .*property_embedding",
    "other architecture": r"does not fit the settings .*adapters",
    "eval_query_chunk 0": r"eval_query_chunk must be at least 1, got 0",
    "unknown setting": r"unknown Pin-Tuning settings: \['learning_rate_typo'\]",
    "invalid json": r"is not a valid settings file",
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_model_directory(assay, tmp_path, capsys, case):
    model = _break_model(assay, tmp_path, case)
    _one_line_error(capsys, main(_predict_argv(assay, tmp_path, model=model)), MODEL_CASES[case])
    _nothing_written(tmp_path)
    with pytest.raises(ModelDirectoryError):   # the API says the same
        PinTuningModel.load(str(model))


def test_debug_shows_the_traceback(assay, tmp_path):
    with pytest.raises(ModelDirectoryError):
        main(["--debug"] + _predict_argv(assay, tmp_path, model=tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------- summary / train
def _write_gz(path: pathlib.Path, payload: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(payload)


DATA_CASES = {
    "missing folder": (None, r"tox21.csv.gz not found"),
    "not gzip": (b"random bytes", r"cannot be read"),
    "binary inside gzip": ("GZ" + "\xff\xfe\x00\x01" * 50, r"cannot be read"),
    "no smiles column": ("GZ" + "name,NR-AR\nx,1\n", r"cannot be read"),
}


@pytest.mark.parametrize("command", ["summary", "train"])
@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_dataset_file(tmp_path, capsys, command, case):
    payload, pattern = DATA_CASES[case]
    folder = tmp_path / "data"
    if payload is not None:
        folder.mkdir()
        if isinstance(payload, bytes):
            (folder / "tox21.csv.gz").write_bytes(payload)
        else:
            _write_gz(folder / "tox21.csv.gz", payload[2:].encode("latin-1"))
    argv = [command, "--dataset", "tox21", "--data-dir", str(folder)]
    if command == "train":
        argv += ["--steps", "1", "--model-dir", str(tmp_path / "model")]
    _one_line_error(capsys, main(argv), pattern)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv,pattern", [
    (["train", "--dataset", "toxcast-CLD", "--steps", "1", "--device", "gpu0"], r"--device 'gpu0' is not a torch device"),
    (["summary", "--dataset", "toxcast-CLD", "--shots", "0"], r"--shots must be at least 1, got 0"),
    (["summary", "--dataset", "toxcast-CLD", "--episodes", "-1"], r"--episodes must be at least 1, got -1"),
])
def test_bad_summary_and_train_arguments(capsys, argv, pattern):
    _one_line_error(capsys, main(argv), pattern)


# ---------------------------------------------------------------------------------------------- pretrain
@pytest.mark.parametrize("case,pattern", [
    ("encoder exists", r"already holds a pre-trained encoder .*--overwrite"),
    ("out is a file", r"--out .* is a file, not a folder"),
    ("missing molecule file", r"--molecule-file .*missing.csv does not exist"),
    ("empty molecule file", r"molecule file .* is not a readable CSV file"),
    ("no SMILES column", r"has no column 'SMILES'"),
    ("unparsable molecules only", r"at least 2 featurizable molecules, got 0"),
    ("epochs 0", r"--epochs must be at least 1, got 0"),
    ("batch size 0", r"--batch-size must be at least 1, got 0"),
])
def test_bad_pretrain_inputs(tmp_path, capsys, case, pattern):
    out = tmp_path / "encoder_run"
    argv = ["pretrain", "--out", str(out), "--molecules", "4", "--batch-size", "2"]
    molecules = tmp_path / "molecules.csv"
    if case == "encoder exists":
        out.mkdir()
        (out / "encoder.pth").write_bytes(b"a user's pre-trained encoder")
    elif case == "out is a file":
        out.write_text("not a folder")
    elif case == "missing molecule file":
        argv += ["--molecule-file", str(tmp_path / "missing.csv")]
    elif case == "empty molecule file":
        molecules.write_text("")
        argv += ["--molecule-file", str(molecules)]
    elif case == "no SMILES column":
        molecules.write_text("smi\nCCO\n")
        argv += ["--molecule-file", str(molecules)]
    elif case == "unparsable molecules only":
        molecules.write_text("SMILES\nC1CC(\nnot a molecule\n")
        argv += ["--molecule-file", str(molecules)]
    elif case == "epochs 0":
        argv += ["--epochs", "0"]
    elif case == "batch size 0":
        argv[-1] = "0"
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    _one_line_error(capsys, main(argv), pattern)
    if case == "encoder exists":
        assert (out / "encoder.pth").read_bytes() == b"a user's pre-trained encoder"
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


# ---------------------------------------------------------------------------------------------- planted code
@pytest.mark.parametrize("form", ["object array inside the npz", "a pickle named like the npz"])
def test_a_pickle_planted_in_the_featurization_cache_never_runs(tmp_path, form, caplog):
    raw = pd.read_csv(project_data_dir() / "tox21" / "tox21.csv.gz").head(30)
    (tmp_path / "data").mkdir()
    with gzip.open(tmp_path / "data" / "tox21.csv.gz", "wt") as handle:
        raw.to_csv(handle, index=False)
    cache = tmp_path / "cache"
    first = load_fewshot("tox21", data_dir=str(tmp_path / "data"), save_dir=str(cache))
    (cache_file,) = cache.glob("*.npz")
    marker = tmp_path / "code_ran"
    if form == "object array inside the npz":
        np.savez(cache_file, node_features=np.array([Plant(marker)], dtype=object))
    else:
        cache_file.write_bytes(pickle.dumps(Plant(marker)))
    pickle.loads(pickle.dumps(Plant(marker)))       # the plant is live: unpickling it runs code
    assert marker.exists()
    marker.unlink()
    again = load_fewshot("tox21", data_dir=str(tmp_path / "data"), save_dir=str(cache))
    assert not marker.exists()
    assert again.smiles == first.smiles and np.array_equal(again.labels, first.labels, equal_nan=True)
    assert "ignoring the unreadable featurization cache" in caplog.text


def test_a_pickled_checkpoint_never_runs_even_when_torch_is_told_to_allow_it(assay, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")   # would make torch.load unpickle by default
    model = tmp_path / "model"
    shutil.copytree(assay / "model", model)
    marker = tmp_path / "code_ran"
    torch.save({"model_state_dict": Plant(marker)}, next(model.glob("checkpoint*.pt")))
    _one_line_error(capsys, main(_predict_argv(assay, tmp_path, model=model)),
                    r"is not a readable PinTuningModel checkpoint")
    assert not marker.exists()
