"""Packaging: each wing installs into the environment its community already has.

* the metadata gives lower bounds (no exact torch / deepchem / schnetpack pins), so a DeepChem
  environment keeps its torch and a SchNetPack environment its schnetpack;
* the Pin-Tuning wing resolves in this environment without replacing anything;
* the SchNetPack wing resolves on Python 3.12 with schnetpack installed normally;
* each wing imports with the other wing's dependencies absent.
"""
import configparser
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, list[Requirement]]:
    """``{"": install_requires, extra: requirements}`` read from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = lambda text: [Requirement(line) for line in text.strip().splitlines()
                          if line.strip() and not line.strip().startswith("#")]
    out = {"": lines(cfg["options"]["install_requires"])}
    out.update({extra: lines(text) for extra, text in cfg["options.extras_require"].items()})
    return out


def _python312() -> str | None:
    """A Python 3.12 interpreter: $PYTHON312, pyenv's, or python3.12 on PATH."""
    candidates = [os.environ.get("PYTHON312")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates.append(shutil.which("python3.12"))
    for path in candidates:
        if path and subprocess.run([path, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                                   capture_output=True).returncode == 0:
            return path
    return None


def test_each_wing_has_its_extra_and_common_core():
    reqs = {extra: {r.name.lower() for r in rs} for extra, rs in _requirements().items()}
    assert {"deepchem", "torch-geometric"} <= reqs["pintuning"]
    assert {"schnetpack", "tblite", "pytorch-lightning"} <= reqs["schnet"]
    assert "torch" in reqs[""] and "rdkit" in reqs[""]
    # the core requirements carry neither wing's framework
    assert not reqs[""] & {"deepchem", "torch-geometric", "schnetpack", "tblite", "dscribe"}


@pytest.mark.parametrize("name, versions", [
    ("torch", ["2.4.1", "2.11.0", "2.13.0", "2.14.1"]),   # what DeepChem / SchNetPack users run
    ("deepchem", ["2.8.0", "2.8.1.dev20251001"]),
    ("schnetpack", ["2.2.0", "2.3.0"]),
])
def test_metadata_accepts_the_versions_users_have(name, versions):
    specs = [r.specifier for rs in _requirements().values() for r in rs if r.name.lower() == name]
    assert specs, f"{name} is not a requirement"
    for spec in specs:
        assert all(spec.contains(v, prereleases=True) for v in versions), (name, str(spec))


def test_python_requires_admits_the_schnetpack_python():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    from packaging.specifiers import SpecifierSet
    spec = SpecifierSet(cfg["options"]["python_requires"])
    assert "3.11" in spec and "3.12" in spec


def _dry_run(python: str, target: str, cwd: Path, tmp_path: Path, *extra: str) -> list[dict]:
    report = tmp_path / "report.json"
    run = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
                          "--quiet", "--report", str(report), *extra, target],
                         cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(report.read_text())["install"]


def test_pintuning_wing_installs_without_replacing_the_deepchem_stack(tmp_path):
    """Into this DeepChem environment (no constraints file): pip would install only this project."""
    would_install = _dry_run(sys.executable, ".[pintuning]", ROOT, tmp_path, "--no-build-isolation")
    names = {item["metadata"]["name"].lower() for item in would_install}
    assert names == {"deepchem-pintuning"}, names


@pytest.mark.skipif(_python312() is None, reason="no Python 3.12 interpreter on this machine")
def test_schnet_wing_resolves_on_python312_with_schnetpack_installed_normally(tmp_path):
    """A fresh Python 3.12 venv: ``pip install .[schnet]`` takes schnetpack with its own
    requirements (no --ignore-requires-python) and no DeepChem."""
    venv = tmp_path / "venv312"
    subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
    source = tmp_path / "src"   # a copy without build outputs, as a user's checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "*.egg-info", "__pycache__", "data", "benchmarks", "build"))
    would_install = _dry_run(str(venv / "bin" / "python"), ".[schnet]", source, tmp_path,
                             "-c", str(ROOT / "scripts" / "constraints.txt"))
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in would_install}
    assert versions.get("schnetpack") == "2.2.0"
    assert versions.get("torch") == "2.13.0"
    assert "deepchem" not in versions and "torch-geometric" not in versions


BLOCKER = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys
    blocked, package = set(sys.argv[1].split(",")), sys.argv[2]

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Absent())
    root = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
    print(len(names))
""")


@pytest.mark.parametrize("package, absent", [
    ("schnet_transfer", ["deepchem", "torch_geometric"]),
    ("deepchem_pintuning", ["schnetpack", "tblite", "dscribe", "dask", "distributed", "ase",
                            "pytorch_lightning", "hydra", "schnet_transfer"]),
])
def test_each_wing_imports_without_the_other_wings_dependencies(package, absent):
    run = subprocess.run([sys.executable, "-c", BLOCKER, ",".join(absent), package], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) >= 5   # every submodule was imported
