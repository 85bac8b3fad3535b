#!/usr/bin/env bash
# Create (or reuse) .venv with the supported stack and install this project into it.
#
# Idempotent: the install runs only when this script, the constraints or setup.cfg changed since the
# last successful run (a hash stamp in .venv), so a second run installs nothing.
#
# Why the special steps:
# * setup.cfg gives lower bounds only; scripts/constraints.txt pins the tested stack. torch==2.13.0
#   matters most: on the project machines pip resolves it to a CPU wheel on disk; any other
#   torch would pull a multi-GB CUDA build.
# * Both wings live in one Python 3.11 environment because deepchem 2.8 supports Python < 3.12.
#   schnetpack 2.2.0 declares Requires-Python >=3.12 but runs on 3.11, so it is installed first
#   with --ignore-requires-python; the "schnet" extra then finds it installed and pulls its
#   declared dependencies like any other install. (On Python 3.12 the "schnet" extra installs
#   schnetpack normally: scripts/setup_env312.sh.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/venv_lib.sh
venv_create .venv "${PYTHON:-python3.11}"
if ! venv_needs_install .venv scripts/setup_env.sh scripts/venv_lib.sh scripts/constraints.txt setup.cfg; then
    echo "[setup] .venv is up to date (nothing to install)"
    exit 0
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q -c scripts/constraints.txt torch
"${pip[@]}" install -q --no-deps --ignore-requires-python -c scripts/constraints.txt schnetpack
"${pip[@]}" install -q -c scripts/constraints.txt -e ".[pintuning,schnet,plot,test,docs]"
venv_mark_installed .venv
echo "[setup] done: $(.venv/bin/python -c 'import torch, deepchem, schnetpack; print("torch", torch.__version__, "deepchem", deepchem.__version__, "schnetpack", schnetpack.__version__)')"
