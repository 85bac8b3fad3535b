#!/usr/bin/env bash
# Fill .gpu_carry/ (ignored by git) with what a lent GPU machine lacks to run this project:
# the RDKit wheel for its Python 3.12 (same RDKit version as .venv) and the installed deepchem
# package (pure Python, without its tests) as a tarball. Needs .venv (scripts/setup_env.sh) and
# access to the package registry. Then, with the device tool:
#     run(command="bash benchmarks/gpu_session.sh", carry=[".gpu_carry"], timeout_s=590)
# The working tree plus .gpu_carry must stay under the tool's 64 MiB; this script checks it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rdkit_version="$(.venv/bin/python -c 'from importlib.metadata import version; print(version("rdkit"))')"
site="$(.venv/bin/python -c 'import importlib.util, os; print(os.path.dirname(os.path.dirname(importlib.util.find_spec("deepchem").origin)))')"
rm -rf .gpu_carry && mkdir .gpu_carry
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu_carry "rdkit==$rdkit_version"
tar czf .gpu_carry/deepchem.tgz -C "$site" --exclude=tests --exclude=__pycache__ deepchem
tree_bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | { du -cb --files0-from=- 2>/dev/null || true; } | tail -n 1 | cut -f1)
carry_bytes=$(du -cb .gpu_carry | awk 'END {print $1}')
total=$(( tree_bytes + carry_bytes ))
echo "[gpu-carry] rdkit $rdkit_version + deepchem: $(( carry_bytes >> 20 )) MiB; working tree $(( tree_bytes >> 20 )) MiB; total $(( total >> 20 )) MiB (limit 64)"
if (( total >= 64 << 20 )); then echo "[gpu-carry] too large for the device tool" >&2; exit 1; fi
