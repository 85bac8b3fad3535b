"""Cheap-QC transfer learning end to end: label -> pre-train -> fine-tune -> compare.

1. Label a pre-training set with GFN2-xTB (tblite) on a Dask LocalCluster
   (resumable: rerunning the script reuses finished labels).
2. Convert the target set (HOPV gaps in eV, or FreeSolv experimental
   hydration free energies in kcal/mol) to an ASE database.
3. Pre-train PaiNN on the xTB label (``spktrain experiment=pretrain_xtb``).
4. For every seed, on one shared split: PaiNN from scratch, fine-tuned, and
   fine-tuned with discriminative (layer-wise) learning rates, all through the
   real ``spktrain`` CLI; SOAP + KRR / MLP / gradient boosting on the same split;
   and the cheap method itself: xTB on the target geometries, linearly
   calibrated to the reference on the training split.
5. Print the test-MAE table (mean ± std over seeds) and write JSON + a plot.

Small-budget example (about 70 minutes on 2 CPU cores shared with other jobs; the
committed ``benchmarks/results/schnet_transfer_hopv.json`` came from this command)::

    python examples/schnet_transfer_pipeline.py --target hopv --work-dir /tmp/st_hopv \\
        --require-element S --results benchmarks/results/schnet_transfer_hopv

Everything (labels, runs, logs) goes to ``--work-dir``; nothing is written to ``data/``.
A rerun with the same ``--work-dir`` reuses finished labels and runs (a run counts as
finished when ``spktrain`` wrote ``best_model.task`` at its end; an interrupted run is
continued by ``spktrain`` from its ``last.ckpt``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from schnetpack.data import ASEAtomsData

from schnet_transfer.baselines import fit_baselines, soap_features
from schnet_transfer.calibration import fit_linear_calibration
from schnet_transfer.datasets import convert_freesolv, convert_hopv
from schnet_transfer.evaluate import split_errors
from schnet_transfer.labelling import label_molecules
from schnet_transfer.pretraining_set import cap, drop_elements, from_smiles_table, require_element
from schnet_transfer.target_labels import cheap_label_array, label_target
from schnet_transfer.xtb_labels import XtbSettings

ROOT = Path(__file__).resolve().parents[1]
SPKTRAIN = str(Path(sys.executable).parent / "spktrain")

TARGETS = {
    "hopv": {"convert": convert_hopv, "source": ROOT / "data" / "hopv", "property": "gap",
             "unit": "eV", "aggregation": "avg", "experiment": "hopv"},
    "freesolv": {"convert": convert_freesolv, "source": ROOT / "data" / "freesolv",
                 "property": "hydration_free_energy", "unit": "kcal/mol",
                 "aggregation": "sum", "experiment": "freesolv"},
}
PRETRAIN_SOURCES = {
    "qm9": (ROOT / "data" / "qm9" / "qm9_small_sample.csv.gz", "smiles", "mol_id"),
    "moses": (ROOT / "data" / "zinc" / "moses_subset_100k.csv.gz", "SMILES", None),
}
PAINN_VARIANTS = {
    "painn_scratch": ["experiment=scratch_{exp}"],
    "painn_finetune": ["experiment=finetune_{exp}"],
    "painn_finetune_discriminative": ["experiment=finetune_{exp}", "task=finetune_discriminative"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=sorted(TARGETS), default="hopv")
    p.add_argument("--work-dir", required=True, help="labels, runs and logs go here")
    p.add_argument("--results", default=None, help="write <results>.json and <results>.png")
    p.add_argument("--pretrain-source", choices=sorted(PRETRAIN_SOURCES), default="moses")
    p.add_argument("--require-element", default=None, help="e.g. S (paper's S-only subset)")
    p.add_argument("--n-pretrain", type=int, default=1500, help="molecules labelled with xTB")
    p.add_argument("--n-train", type=int, default=100, help="target training molecules")
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--n-test", type=int, default=None, help="default: all remaining")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=40, help="scratch and fine-tuning epochs")
    p.add_argument("--n-atom-basis", type=int, default=32)
    p.add_argument("--n-interactions", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="Dask workers for labelling")
    return p.parse_args(argv)


def spktrain(work: Path, log_dir: Path, run_id: str, overrides: list[str]) -> float:
    """Run ``spktrain`` in ``work`` (logs to ``log_dir/run_id.log``); returns seconds."""
    env = {**os.environ, "SCHNET_TRANSFER_DATA": str(work / "dbs"), "PWD": str(work)}
    start = time.time()
    with open(log_dir / f"{run_id}.log", "w") as log:
        done = subprocess.run([SPKTRAIN, f"run.id={run_id}", "logger=csv", *overrides],
                              cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"spktrain {run_id} failed, see {log_dir / (run_id + '.log')}")
    return time.time() - start


def make_split(n: int, n_train: int, n_val: int, n_test: int | None, seed: int, path: Path):
    """Seeded random split shared by all models of one seed."""
    order = np.random.default_rng(seed).permutation(n)
    end = n if n_test is None else n_train + n_val + n_test
    if end > n:
        raise ValueError(f"split sizes exceed the {n} molecules of the target set")
    np.savez(path, train_idx=order[:n_train], val_idx=order[n_train:n_train + n_val],
             test_idx=order[n_train + n_val:end])
    return np.load(path)


def xtb_on_target(target_db: Path, work: Path, prop: str, workers: int) -> np.ndarray:
    """xTB value of ``prop`` for every target molecule at its own geometry (NaN if failed)."""
    xtb_db = label_target(target_db, work / "dbs" / f"{target_db.stem}_xtb.db", n_workers=workers)
    return cheap_label_array(xtb_db, prop, len(ASEAtomsData(str(target_db))))


def xtb_linear_mae(xtb: np.ndarray, y: np.ndarray, split) -> float:
    """Test MAE of xTB calibrated linearly on the training split (failed molecules skipped)."""
    ok = np.isfinite(xtb)
    train = [i for i in split["train_idx"] if ok[i]]
    test = [i for i in split["test_idx"] if ok[i]]
    slope, intercept = fit_linear_calibration(xtb[train], y[train])
    return float(np.abs(slope * xtb[test] + intercept - y[test]).mean())


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    models = sorted({m for maes in per_seed.values() for m in maes})
    out = {}
    for m in models:
        values = np.array([maes[m] for maes in per_seed.values()])
        out[m] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
                  else 0.0, "n_seeds": int(len(values))}
    return out


def plot(summary, unit, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(names)), [summary[n]["mean"] for n in names],
           yerr=[summary[n]["std"] for n in names], capsize=4, color="tab:blue")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel(f"test MAE ({unit})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args = parse_args(argv)
    target = TARGETS[args.target]
    prop, exp = target["property"], target["experiment"]
    work = Path(args.work_dir).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "splits").mkdir(exist_ok=True)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    # 1. cheap-QC labels
    table, smiles_column, id_column = PRETRAIN_SOURCES[args.pretrain_source]
    items = drop_elements(from_smiles_table(table, smiles_column, id_column))
    if args.require_element:
        items = require_element(items, args.require_element)
    items = cap(items, args.n_pretrain, seed=0)
    start = time.time()
    pretrain_db = f"{args.pretrain_source}_xtb"
    labelling = label_molecules(items, str(work / "dbs" / f"{pretrain_db}.db"), XtbSettings(),
                                n_workers=args.workers)
    if labelling.labelled or labelling.failed:
        timings["labelling_s"] = time.time() - start

    # 2. target database
    target_db = work / "dbs" / f"{exp}.db"
    if not target_db.exists():
        target["convert"](target["source"], target_db)

    # 3. pre-training (skipped when finished)
    model = [f"model.representation.n_atom_basis={args.n_atom_basis}",
             f"model.representation.n_interactions={args.n_interactions}",
             f"globals.aggregation={target['aggregation']}"]
    if not (work / "runs" / f"pretrain_xtb_{prop}" / "best_model.task").exists():
        timings["pretrain_s"] = spktrain(work, work / "logs", f"pretrain_xtb_{prop}", [
            "experiment=pretrain_xtb", f"globals.dataset={pretrain_db}",
            f"globals.property={prop}", f"trainer.max_epochs={args.pretrain_epochs}", *model])

    # 4. per seed: one split, three PaiNN variants, three descriptor baselines
    X, y = soap_features(target_db, prop)
    xtb = xtb_on_target(target_db, work, prop, args.workers)
    per_seed = {}
    for seed in args.seeds:
        split_path = work / "splits" / f"seed{seed}.npz"
        split = make_split(len(y), args.n_train, args.n_val, args.n_test, seed, split_path)
        sizes = [f"data.num_train={len(split['train_idx'])}",
                 f"data.num_val={len(split['val_idx'])}",
                 f"data.num_test={len(split['test_idx'])}", f"data.split_file={split_path}"]
        maes = {}
        for name, overrides in PAINN_VARIANTS.items():
            run_id = f"{name}_{exp}_seed{seed}"
            if not (work / "runs" / run_id / "best_model.task").exists():
                timings[run_id + "_s"] = spktrain(work, work / "logs", run_id, [
                    *[o.format(exp=exp) for o in overrides], f"seed={seed}",
                    f"trainer.max_epochs={args.epochs}", *sizes, *model])
            maes[name] = split_errors(work / "runs" / run_id, target_db, prop, split_path)["mae"]
        maes.update(fit_baselines(X, y, split, seed=seed))
        maes["xtb_linear"] = xtb_linear_mae(xtb, y, split)
        per_seed[seed] = maes
        timings_file.write_text(json.dumps(timings, indent=2))
        print(f"seed {seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(maes.items())))

    summary = summarize(per_seed)
    unit = target["unit"]
    print(f"\nTest MAE ({unit}) on {args.target}, mean ± std over seeds {args.seeds}:")
    print(f"{'model':34s} {'MAE':>9s} {'std':>9s}")
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["mean"]):
        print(f"{name:34s} {s['mean']:9.4f} {s['std']:9.4f}")

    result = {
        "target": args.target, "property": prop, "unit": unit,
        "budget": {k: v for k, v in vars(args).items() if k not in ("work_dir", "results")},
        "n_target_molecules": int(len(y)),
        "labelling": {"inputs": len(items), "labelled_now": labelling.labelled,
                      "failed_now": labelling.failed, "reused": labelling.skipped,
                      "target_molecules_without_xtb": int(np.sum(~np.isfinite(xtb)))},
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "summary": summary,
        "timings_s": timings,
        "versions": {p: version(p) for p in ("schnetpack", "torch", "tblite", "dscribe",
                                             "scikit-learn", "pytorch-lightning")},
        "note": "MAE on the held-out test split in physical units; 'mean' predicts the "
                "training mean; 'xtb_linear' is GFN2-xTB at the target geometry, calibrated "
                "linearly on the training split. Small CPU budget, not the paper's protocol.",
    }
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results + ".json").write_text(json.dumps(result, indent=2) + "\n")
        plot(summary, unit, f"{args.target}: n_train={args.n_train}, seeds {args.seeds}, "
             f"pre-train {args.pretrain_source} xTB ({args.n_pretrain})", args.results + ".png")
    return result


if __name__ == "__main__":
    main()
