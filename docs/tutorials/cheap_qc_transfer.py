# %% [markdown]
# # Transfer from cheap quantum chemistry
#
# HOPV15 holds 350 organic photovoltaic molecules with PBE0 HOMO-LUMO gaps: too few to train a
# message-passing network such as PaiNN from scratch. Kirschbaum & Bande (AIP Advances 2024)
# pre-train the network on many molecules labelled with a cheap method, standardize both label
# sets to mean 0 and standard deviation 1, and fine-tune on the small target set. In this tutorial
# you
#
# 1. label a few hundred QM9 molecules with GFN2-xTB (`schnet-transfer label`),
# 2. pre-train PaiNN on the xTB gaps (`spktrain experiment=pretrain_xtb`),
# 3. fine-tune it on HOPV and train the same network from scratch on the same split,
# 4. compare both with xTB itself, linearly calibrated on the training molecules,
# 5. draw a parity plot.
#
# Run it with `python docs/tutorials/cheap_qc_transfer.py`: it works in `cheap_qc_tutorial/` of
# the current folder; the full budget took 19 minutes on 2 CPU cores shared with other jobs.
# `TUTORIAL_BUDGET=tiny` runs every step with about a minute of CPU time (a few dozen molecules,
# one epoch, a tiny network; what the test suite does), so its errors say nothing about transfer
# learning. The measured comparison, with several seeds and descriptor baselines, is on
# {doc}`../benchmarks/index`.

# %%
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ase.io import write as write_structure
from schnetpack.data import ASEAtomsData

from schnet_transfer.calibration import fit_linear_calibration
from schnet_transfer.datasets import convert_hopv
from schnet_transfer.evaluate import predict
from schnet_transfer.labelling import label_molecules
from schnet_transfer.plotting import parity_plot
from schnet_transfer.pretraining_set import from_structure_files
from schnet_transfer.target_labels import cheap_label_array
from schnet_transfer.xtb_labels import XtbSettings

TINY = os.environ.get("TUTORIAL_BUDGET") == "tiny"
ROOT = Path(__file__).resolve().parents[2] if "__file__" in globals() else Path.cwd()  # repository (notebook: run there)
WORK = Path("cheap_qc_tutorial").resolve()
DBS = WORK / "dbs"                       # the spktrain experiments read their databases from here
DBS.mkdir(parents=True, exist_ok=True)
BIN = Path(sys.executable).parent        # schnet-transfer and spktrain of this environment
ENV = {**os.environ, "SCHNET_TRANSFER_DATA": str(DBS), "PWD": str(WORK)}


def run(*command: str) -> None:
    """Run a command of this environment in WORK; show its last lines if it fails."""
    done = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=WORK, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed:\n{(done.stdout + done.stderr)[-3000:]}")


# %% [markdown]
# ## 1. Cheap labels
#
# `schnet-transfer label` builds each molecule's 3-D structure from its SMILES (RDKit ETKDG +
# MMFF94), runs GFN2-xTB through tblite on a Dask cluster and writes a schnetpack database with
# the HOMO-LUMO `gap` (eV), the total `energy` and the water solvation free energy. The run is
# resumable, and molecules xTB cannot label are recorded with the reason instead of stopping it.

# %%
n_pretrain = 16 if TINY else 300
run("schnet-transfer", "label", "--smiles-table", str(ROOT / "data" / "qm9" / "qm9_small_sample.csv.gz"),
    "--id-column", "mol_id", "--max-size", str(n_pretrain), "--workers", "2", "--no-progress",
    str(DBS / "qm9_xtb.db"))

# %% [markdown]
# ## 2. The target set
#
# HOPV15 from the shipped file: conformer geometries and PBE0/def2-SVP gaps, converted from
# Hartree to eV (the command line equivalent is `schnet-transfer convert hopv data/hopv hopv.db`).

# %%
convert_hopv(ROOT / "data" / "hopv", DBS / "hopv.db", limit=12 if TINY else None)

# %% [markdown]
# One split for every model: the training molecules are the only labelled HOPV data any model
# (or the calibration of xTB) sees; the test molecules are scored at the end.

# %%
n_target = len(ASEAtomsData(str(DBS / "hopv.db")))
order = np.random.default_rng(0).permutation(n_target)
n_train, n_val = (7, 2) if TINY else (100, 50)
split_file = WORK / "split.npz"
np.savez(split_file, train_idx=order[:n_train], val_idx=order[n_train:n_train + n_val],
         test_idx=order[n_train + n_val:])
split = np.load(split_file)
print(f"{n_target} HOPV molecules: {n_train} train, {n_val} validation, {len(split['test_idx'])} test")

# %% [markdown]
# ## 3. Pre-train, fine-tune, and train from scratch
#
# The experiments are Hydra configs of the package (`schnet_transfer/configs/experiment/`), found
# by `spktrain` from any folder. Each standardizes its labels with
# {class}`~schnet_transfer.normalizer.StandardizeProperty`, fitted on its own training split
# ({doc}`../concepts/normalizer`). `finetune_hopv` starts from `runs/pretrain_xtb_gap/best_model`
# and copies its representation and output head; `scratch_hopv` is the same network from random
# weights.

# %%
network = (["model.representation.n_atom_basis=8", "model.representation.n_interactions=2",
            "model.representation.radial_basis.n_rbf=8", "data.batch_size=8"] if TINY else
           ["model.representation.n_atom_basis=32", "model.representation.n_interactions=3"])
epochs = 1 if TINY else 30
run("spktrain", "experiment=pretrain_xtb", f"trainer.max_epochs={epochs}", "logger=csv", *network)
shared = [f"data.num_train={n_train}", f"data.num_val={n_val}", f"data.num_test={len(split['test_idx'])}",
          f"data.split_file={split_file}", f"trainer.max_epochs={epochs}", "logger=csv", *network]
run("spktrain", "experiment=finetune_hopv", "run.id=finetune", *shared)
run("spktrain", "experiment=scratch_hopv", "run.id=scratch", *shared)

# %% [markdown]
# A saved `best_model` predicts in eV: its last postprocessor undoes the standardization.
# (It is a pickled model: `trust_pickle=True` only for runs you made yourself.)

# %%
test = split["test_idx"]
finetuned, reference = predict(WORK / "runs" / "finetune" / "best_model", DBS / "hopv.db", test, "gap",
                               trust_pickle=True)
scratch, _ = predict(WORK / "runs" / "scratch" / "best_model", DBS / "hopv.db", test, "gap", trust_pickle=True)

# %% [markdown]
# ## 4. Calibrated xTB
#
# The cheap method itself is a baseline: xTB on the HOPV geometries, mapped to PBE0 by a straight
# line fitted on the training molecules
# ({func}`~schnet_transfer.calibration.fit_linear_calibration`). The labelling is step 1's, from
# Python and on the target's own geometries (on the command line: `schnet-transfer label
# --structures`); each database row records the index of its input file. Dask runs it in
# threads here (`processes=False`): worker processes would re-run this unguarded script.

# %%
structures = WORK / "hopv_xyz"
structures.mkdir(exist_ok=True)
rows = list(ASEAtomsData(str(DBS / "hopv.db")).conn.select(sort="id"))
for i, row in enumerate(rows):
    write_structure(structures / f"{i:05d}.xyz", row.toatoms())
label_molecules(from_structure_files(sorted(structures.glob("*.xyz"))), str(DBS / "hopv_xtb.db"), XtbSettings(),
                n_workers=2, processes=False, progress=False)
xtb = cheap_label_array(DBS / "hopv_xtb.db", "gap", n_target)   # NaN where xTB failed
gaps = np.array([float(row.data["gap"][0]) for row in rows])       # the PBE0 reference, eV
train = [i for i in split["train_idx"] if np.isfinite(xtb[i])]
slope, intercept = fit_linear_calibration(xtb[train], gaps[train])
calibrated = slope * xtb[test] + intercept
assert np.allclose(gaps[test], reference)  # the same molecules as the networks' predictions
print(f"PBE0 gap = {slope:.3f} x xTB gap + {intercept:.3f} eV (fitted on {len(train)} molecules)")

# %% [markdown]
# ## 5. Compare

# %%
scored = np.isfinite(calibrated)                          # test molecules xTB could label
models = {"fine-tuned PaiNN": finetuned[scored], "PaiNN from scratch": scratch[scored],
          "calibrated xTB": calibrated[scored]}
for name, values in models.items():
    print(f"{name:20s} test MAE {np.abs(values - reference[scored]).mean():.3f} eV ({scored.sum()} molecules)")
ax = parity_plot(reference[scored], models, unit="eV", title="HOPV15 HOMO-LUMO gap, test molecules")
ax.figure.savefig(WORK / "parity.png", dpi=120)

# %% [markdown]
# Which model wins depends on the budget, on the split and on how close the pre-training molecules
# are to the targets (QM9 molecules are much smaller than HOPV's). The comparison over several
# seeds, with SOAP baselines, is `examples/schnet_transfer_pipeline.py`; its numbers and every
# option of the commands used here are in {doc}`../schnet_transfer`.
