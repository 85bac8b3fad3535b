#!/usr/bin/env bash
# The SchNetPack wing as a SchNetPack user gets it: Python 3.12, schnetpack installed normally
# (no --ignore-requires-python), only the "schnet", "plot" and "test" extras (no deepchem, no
# torch-geometric). Creates .venv312 and runs the schnet_transfer tests in it.
#
#   bash scripts/setup_env312.sh            # create/update .venv312 and run tests/test_schnet_*.py
#
# Not part of the README test command: no CPU torch wheel for Python 3.12 lies on the project
# machines, so pip takes torch from PyPI (a CUDA build, several GB with its nvidia-* wheels).
# The test command checks instead, in seconds, that this install resolves on Python 3.12
# (tests/test_packaging.py). Idempotent like scripts/setup_env.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# PYTHON312 if set, else pyenv's newest 3.12, else python3.12 on PATH.
PY="${PYTHON312:-$(ls -d "$(pyenv root 2>/dev/null || echo ~/.pyenv)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}"
PY="${PY:-python3.12}"
source scripts/venv_lib.sh
venv_create .venv312 "$PY"
if venv_needs_install .venv312 scripts/setup_env312.sh scripts/venv_lib.sh scripts/constraints.txt setup.cfg; then
    .venv312/bin/python -m pip --disable-pip-version-check install -q -c scripts/constraints.txt \
        -e ".[schnet,plot,test]"
    venv_mark_installed .venv312
fi
.venv312/bin/python -c 'import sys, torch, schnetpack; print("[setup312] python", sys.version.split()[0], "torch", torch.__version__, "schnetpack", schnetpack.__version__)'
.venv312/bin/python -m pytest -q -p no:cacheprovider tests/test_schnet_*.py
