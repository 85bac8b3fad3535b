"""``schnet-transfer`` command line: label pre-training sets, convert targets, run baselines.

Examples
--------
Label 2,000 sulfur-free QM9 molecules with GFN2-xTB on 4 local Dask workers::

    schnet-transfer label --smiles-table data/qm9/qm9_small_sample.csv.gz \\
        --id-column mol_id --max-size 2000 --workers 4 ~/.cache/schnet_transfer/qm9_xtb.db

Convert the target sets::

    schnet-transfer convert hopv data/hopv ~/.cache/schnet_transfer/hopv.db
    schnet-transfer convert freesolv data/freesolv ~/.cache/schnet_transfer/freesolv.db

SOAP baselines on the split of a finished ``spktrain`` run::

    schnet-transfer baselines ~/.cache/schnet_transfer/hopv.db gap --split runs/<id>/split.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from glob import glob

__all__ = ["main", "build_parser"]


def _add_label(sub) -> None:
    p = sub.add_parser("label", help="label molecules with GFN-xTB into an ASE database")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles-table", help="CSV(.gz) with a SMILES column")
    src.add_argument("--structures", nargs="+", help="sdf/mol/xyz files or glob patterns")
    p.add_argument("--smiles-column", default="smiles")
    p.add_argument("--id-column", default=None, help="column with molecule ids")
    p.add_argument("--method", default="GFN2-xTB", choices=["GFN2-xTB", "GFN1-xTB"])
    p.add_argument("--solvation-model", default="alpb", choices=["alpb", "gbsa"])
    p.add_argument("--solvent", default="water")
    p.add_argument("--optimize", action="store_true", help="xTB geometry optimisation first")
    p.add_argument("--seed", type=int, default=0, help="seed of embedding and subsample")
    p.add_argument(
        "--drop-elements", nargs="*", default=["As", "Se", "Br", "Te", "I"],
        help="drop molecules with these elements (paper default; give none to keep all)",
    )
    p.add_argument("--require-element", default=None, help="keep only molecules with it (S)")
    p.add_argument("--max-size", type=int, default=None, help="seeded cap of the set size")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("out", help="output .db (resumed when it exists)")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert HOPV or FreeSolv to an ASE database")
    p.add_argument("dataset", choices=["hopv", "freesolv"])
    p.add_argument("source_dir", help="folder with the shipped files (data/hopv, data/freesolv)")
    p.add_argument("out", help="output .db (must not exist)")
    p.add_argument("--limit", type=int, default=None, help="first N molecules only")


def _add_baselines(sub) -> None:
    p = sub.add_parser("baselines", help="SOAP + KRR / MLP / gradient boosting")
    p.add_argument("db", help="ASE database")
    p.add_argument("property", help="target property, e.g. gap")
    p.add_argument("--split", required=True, help="split.npz of the PaiNN run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the MAEs as JSON here")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``schnet-transfer``."""
    parser = argparse.ArgumentParser(prog="schnet-transfer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_label(sub)
    _add_convert(sub)
    _add_baselines(sub)
    return parser


def _label(args) -> dict:
    from .labelling import label_molecules
    from .pretraining_set import (
        cap, drop_elements, from_smiles_table, from_structure_files, require_element)
    from .xtb_labels import XtbSettings

    if args.smiles_table:
        items = from_smiles_table(args.smiles_table, args.smiles_column, args.id_column)
    else:
        paths = [p for pattern in args.structures for p in (glob(pattern) or [pattern])]
        items = from_structure_files(paths)
    if args.drop_elements:
        items = drop_elements(items, args.drop_elements)
    if args.require_element:
        items = require_element(items, args.require_element)
    if args.max_size:
        items = cap(items, args.max_size, seed=args.seed)
    settings = XtbSettings(
        method=args.method, solvation_model=args.solvation_model, solvent=args.solvent,
        optimize=args.optimize, seed=args.seed,
    )
    summary = label_molecules(
        items, args.out, settings, scheduler_address=args.scheduler,
        n_workers=args.workers, progress=not args.no_progress,
    )
    return {"db": args.out, "inputs": len(items), **asdict(summary)}


def _convert(args) -> dict:
    from .datasets import convert_freesolv, convert_hopv

    convert = {"hopv": convert_hopv, "freesolv": convert_freesolv}[args.dataset]
    return {"db": convert(args.source_dir, args.out, limit=args.limit)}


def _baselines(args) -> dict:
    from .baselines import run_baselines

    maes = run_baselines(args.db, args.property, args.split, seed=args.seed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(maes, f, indent=2)
    return maes


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``schnet-transfer`` console script; prints a JSON summary."""
    args = build_parser().parse_args(argv)
    run = {"label": _label, "convert": _convert, "baselines": _baselines}[args.command]
    try:
        result = run(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        print(f"schnet-transfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
