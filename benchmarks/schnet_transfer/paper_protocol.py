"""Kirschbaum & Bande's protocol on HOPV and FreeSolv: k-fold cells -> JSON, Markdown, figure.

One command runs (or resumes) every cell and writes
``benchmarks/results/schnet_transfer_paper.{json,md,png}``::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/schnet_transfer/paper_protocol.py \\
        --targets hopv --pretrain moses2k=runs/schnet_paper/dbs/moses2k_xtb.db \\
        --epochs 40 --pretrain-epochs 30

Steps: convert the target (FreeSolv label ``--freesolv-label``, default
``calc`` as the paper), label it with GFN2-xTB at its own geometries, build the
target database with the xTB labels (for v1 and Delta-learning), cut the 5
folds (shuffle seed 12345, split files under ``<work>/folds``), run the
baselines (calibrated xTB, SOAP models, mean) on every fold, pre-train once
per ``--pretrain`` set and target property (target molecules excluded), then
the cells in priority order: every PaiNN method on the whole training folds
with the first pre-training set, v1/v2/Delta fine-tuning with the other sets (size
study), and per learning-curve size (``--sizes``, nested training subsets) the
baselines and the ``--curve-methods``.  One JSON per cell under ``--cells``; a rerun skips
finished cells.  ``--report-only`` rewrites the report from the cells.
``--accelerator gpu`` trains on a GPU.  Everything else goes to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv=None) -> argparse.Namespace:
    from schnet_transfer.paper import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", nargs="+", choices=["hopv", "freesolv"], default=["hopv", "freesolv"])
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "schnet_paper"))
    p.add_argument("--cells", default=str(ROOT / "benchmarks" / "results" / "schnet_transfer_paper"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "schnet_transfer_paper"),
                   help="writes <results>.json, .md and .png")
    p.add_argument("--pretrain", nargs="+", default=[], metavar="NAME=DB",
                   help="xTB-labelled pre-training databases; the first serves the main cells")
    p.add_argument("--freesolv-label", choices=["calc", "expt"], default="calc")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--sizes", nargs="*", type=int, default=[25, 50, 100],
                   help="learning-curve training sizes (besides the whole training fold)")
    p.add_argument("--curve-methods", nargs="*", default=["painn_scratch", "painn_finetune_v2"])
    p.add_argument("--epochs", type=int, default=40, help="max epochs of every target run")
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--accelerator", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("--workers", type=int, default=1, help="Dask workers for xTB labelling")
    p.add_argument("--no-baselines", action="store_true",
                   help="PaiNN cells only (e.g. a second process on the same cells)")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def _pretrain_sets(specs: list[str]) -> list[tuple[str, Path]]:
    sets = []
    for spec in specs:
        name, sep, db = spec.partition("=")
        if not sep or not name or not Path(db).is_file():
            raise ValueError(f"--pretrain {spec!r}: give NAME=DB with an existing database")
        sets.append((name, Path(db).resolve()))
    return sets


def prepare(target: str, work: Path, freesolv_label: str, workers: int) -> None:
    """Target database, its xTB labels and the database holding both (idempotent)."""
    from schnet_transfer.datasets import convert_freesolv, convert_hopv
    from schnet_transfer.paper import TARGETS
    from schnet_transfer.target_labels import label_target, with_cheap_labels

    dbs = work / "dbs"
    db = dbs / f"{target}.db"
    if not db.exists():
        dbs.mkdir(parents=True, exist_ok=True)
        if target == "hopv":
            convert_hopv(ROOT / "data" / "hopv", db)
        else:
            convert_freesolv(ROOT / "data" / "freesolv", db, label=freesolv_label)
    label_target(db, dbs / f"{target}_xtb.db", n_workers=workers)
    prop = TARGETS[target].property
    if not (dbs / f"{target}_with_xtb.db").exists():
        with_cheap_labels(db, dbs / f"{target}_xtb.db", dbs / f"{target}_with_xtb.db",
                          {prop: f"xtb_{prop}"})


def budget(args) -> dict:
    return {"epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
            "folds": len(args.folds), "accelerator": args.accelerator,
            "freesolv_label": args.freesolv_label, "threads": os.environ.get("OMP_NUM_THREADS"),
            "pretrain_sets": [n for n, _ in _pretrain_sets(args.pretrain)],
            "versions": {p: version(p) for p in ("schnetpack", "torch", "tblite", "dscribe")}}


def run(args) -> None:
    from schnet_transfer.paper import METHODS, Protocol
    from schnet_transfer.report import SIZE_STUDY_METHODS, write_report

    work, cells_dir = Path(args.work_dir).resolve(), Path(args.cells) / "cells"
    if args.report_only:
        write_report(cells_dir, args.results)
        return
    sets = _pretrain_sets(args.pretrain)
    info = budget(args)
    needs_pretrain = [m for m in args.methods if METHODS[m][1]]
    if needs_pretrain and not sets:
        raise ValueError(f"{needs_pretrain} need a pre-training set: give --pretrain NAME=DB")
    for target in args.targets:
        prepare(target, work, args.freesolv_label, args.workers)
        protocol = Protocol(target, work, cells_dir, epochs=args.epochs,
                            pretrain_epochs=args.pretrain_epochs, accelerator=args.accelerator,
                            budget=info)
        for fold in tqdm([] if args.no_baselines else args.folds, desc=f"{target} baselines"):
            protocol.run_baselines(fold)
        models = {name: protocol.pretrain(name, db)
                  for name, db in tqdm(sets, desc=f"{target} pre-training")}
        first = (sets[0][0], models[sets[0][0]]) if sets else None
        for name, model in models.items():
            for fold in args.folds:
                protocol.run_zero_shot(fold, (name, model))
        cells = [(m, f, None, first) for f in args.folds for m in args.methods]
        cells += [(m, f, None, (name, models[name])) for name, _ in sets[1:] for f in args.folds
                  for m in SIZE_STUDY_METHODS]
        # learning curves: the cheap baselines of a size, then its PaiNN cells
        for n in args.sizes:
            cells += [] if args.no_baselines else [("baselines", f, n, None) for f in args.folds]
            cells += [(m, f, n, first) for f in args.folds
                      for m in args.curve_methods if not METHODS[m][1] or first]
        for method, fold, size, pretrain in tqdm(cells, desc=f"{target} cells"):
            if method == "baselines":
                protocol.run_baselines(fold, size)
            else:
                protocol.run_painn(method, fold, size, pretrain)
            write_report(cells_dir, args.results)
    write_report(cells_dir, args.results)


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: subprocess.run then kills the running spktrain too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"paper_protocol: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
