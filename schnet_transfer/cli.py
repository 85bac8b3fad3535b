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

The paper's 5 folds as schnetpack split files, and plots of protocol cells::

    schnet-transfer folds ~/.cache/schnet_transfer/hopv.db folds/hopv
    schnet-transfer plot parity benchmarks/results/schnet_transfer_paper/cells/hopv parity.png
    schnet-transfer plot curve benchmarks/results/schnet_transfer_paper/cells/hopv curve.png

Errors the user can cause (a bad flag, a missing or malformed file, a
conflicting duplicate id, a database in use by another run, ...) print one
line ``schnet-transfer <command>: error: <what and where>`` on stderr and exit
with status 2; a traceback means a bug.  Molecules that cannot be labelled do
not stop a run: they are recorded in the database's ``failures`` and listed in
the printed summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from glob import glob

__all__ = ["main", "build_parser"]


class _UsageError(ValueError):
    """A command-line argument error, reported like every other user error."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors go through :func:`main`'s one-line path (status 2)."""

    def error(self, message):
        raise _UsageError(self.prog, message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_label(sub) -> None:
    p = sub.add_parser("label", help="label molecules with GFN-xTB into an ASE database")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles-table", help="CSV(.gz) with a SMILES column")
    src.add_argument(
        "--structures", nargs="+",
        help="sdf/mol/xyz files or glob patterns (every record of a multi-molecule file is "
             "an input); follow the list with another flag or give out before it",
    )
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
    p.add_argument(
        "--multiplicity", type=_positive_int, default=None,
        help="spin multiplicity 2S+1 of every molecule (xTB uhf = N-1); without it molecules "
             "with an odd electron count are refused and the rest are closed-shell singlets",
    )
    p.add_argument("--max-size", type=_positive_int, default=None,
                   help="seeded cap of the set size (>= 1)")
    p.add_argument(
        "--exclude-targets", nargs="+", default=[], choices=["hopv", "freesolv"],
        help="drop the molecules of these target sets (InChIKey connectivity block), so that "
             "no test-fold molecule is pre-trained on; SMILES inputs only (greedy like "
             "--structures: give out before it or another flag after it)",
    )
    p.add_argument(
        "--similar-to", default=None, choices=["hopv", "freesolv"],
        help="with --max-size: the molecules most similar to this target set (Morgan Tanimoto "
             "to the nearest target molecule) instead of a random subsample; its molecules are "
             "never selected",
    )
    p.add_argument("--targets-dir", default="data",
                   help="folder holding hopv/ and freesolv/ (default: data)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--workers", type=_positive_int, default=None, help="LocalCluster workers")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("out", help="output .db (resumed when it exists; one run at a time)")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert HOPV or FreeSolv to an ASE database")
    p.add_argument("dataset", choices=["hopv", "freesolv"])
    p.add_argument("source_dir", help="folder with the shipped files (data/hopv, data/freesolv)")
    p.add_argument("out", help="output .db (must not exist)")
    p.add_argument("--limit", type=int, default=None, help="first N molecules only")
    p.add_argument(
        "--label", choices=["expt", "calc"], default=None,
        help="FreeSolv only: experimental value (expt, default) or FreeSolv's calculated "
             "GAFF value (calc, the label of Kirschbaum & Bande)",
    )


def _add_baselines(sub) -> None:
    p = sub.add_parser("baselines", help="SOAP + KRR / MLP / gradient boosting")
    p.add_argument("db", help="ASE database")
    p.add_argument("property", help="target property, e.g. gap")
    p.add_argument("--split", required=True, help="split.npz of the PaiNN run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the MAEs as JSON here")


def _add_folds(sub) -> None:
    p = sub.add_parser("folds", help="k-fold train/validation/test split files (paper protocol)")
    p.add_argument("db", help="ASE database of the target set")
    p.add_argument("out_dir", help="writes fold0.npz ... for spktrain data.split_file=")
    p.add_argument("--k", type=_positive_int, default=5)
    p.add_argument("--seed", type=int, default=12345, help="KFold shuffle seed (paper: 12345)")


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="parity plot or error vs training-set size from protocol cells")
    p.add_argument("kind", choices=["parity", "curve"])
    p.add_argument("cells", help="folder of cell JSON files (one target)")
    p.add_argument("out", help="image file (.png, .pdf, .svg)")
    p.add_argument("--methods", nargs="+", default=None, help="models to show (default: all)")
    p.add_argument("--metric", choices=["mae", "rmse"], default="mae", help="curve only")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``schnet-transfer``."""
    parser = _Parser(prog="schnet-transfer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_label(sub)
    _add_convert(sub)
    _add_baselines(sub)
    _add_folds(sub)
    _add_plot(sub)
    return parser


def _structure_paths(patterns: list[str]) -> list[str]:
    """Files matched by the ``--structures`` patterns; a pattern matching none is an error."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob(pattern)) or ([pattern] if os.path.exists(pattern) else [])
        if not matches:
            raise FileNotFoundError(f"--structures {pattern!r} matches no file")
        folders = [m for m in matches if os.path.isdir(m)]
        if folders:
            raise ValueError(
                f"--structures {pattern!r} matches the folder {folders[0]}; "
                f"give files, e.g. '{os.path.join(folders[0], '*.sdf')}'"
            )
        paths += matches
    return paths


def _label(args) -> dict:
    from .labelling import label_molecules
    from .pretraining_set import (
        cap, drop_elements, read_smiles_table, read_structure_files, require_element)
    from .target_similar import exclude_molecules, read_target_smiles, select_similar
    from .xtb_labels import XtbSettings

    if args.smiles_table:
        source = read_smiles_table(args.smiles_table, args.smiles_column, args.id_column)
    else:
        source = read_structure_files(_structure_paths(args.structures))
    items = source.items
    if args.drop_elements:
        items = drop_elements(items, args.drop_elements)
    if args.require_element:
        items = require_element(items, args.require_element)
    filtered = len(items)
    targets = {name: read_target_smiles(name, os.path.join(args.targets_dir, name))
               for name in {*args.exclude_targets, args.similar_to} - {None}}
    if args.exclude_targets:
        items = exclude_molecules(items, [s for n in args.exclude_targets for s in targets[n]])
    targets_out = filtered - len(items)
    if args.similar_to is not None:
        if args.max_size is None:
            raise ValueError("--similar-to needs --max-size (how many molecules to select)")
        items = select_similar(items, targets[args.similar_to], args.max_size)
    elif args.max_size is not None:
        items = cap(items, args.max_size, seed=args.seed)
    settings = XtbSettings(
        method=args.method, solvation_model=args.solvation_model, solvent=args.solvent,
        optimize=args.optimize, seed=args.seed, multiplicity=args.multiplicity,
    )
    failures = []

    def record_failure(result):
        if not result["ok"]:
            failures.append({k: result[k] for k in ("name", "stage", "reason")})

    summary = label_molecules(
        items, args.out, settings, scheduler_address=args.scheduler,
        n_workers=args.workers, progress=not args.no_progress, on_result=record_failure,
    )
    return {
        "db": args.out,
        "read": len(source.items),
        "duplicates_skipped": source.duplicates,
        "filtered_out": len(source.items) - filtered,
        "target_molecules_out": targets_out,
        "capped_out": filtered - targets_out - len(items),
        "inputs": len(items),
        **asdict(summary),
        "failures": failures,
    }


def _convert(args) -> dict:
    from .datasets import convert_freesolv, convert_hopv

    if args.dataset == "hopv":
        if args.label is not None:
            raise ValueError("--label applies to freesolv only")
        return {"db": convert_hopv(args.source_dir, args.out, limit=args.limit)}
    label = args.label or "expt"
    return {"db": convert_freesolv(args.source_dir, args.out, limit=args.limit, label=label),
            "label": label}


def _baselines(args) -> dict:
    from .baselines import run_baselines

    maes = run_baselines(args.db, args.property, args.split, seed=args.seed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(maes, f, indent=2)
    return maes


def _folds(args) -> dict:
    from schnetpack.data import ASEAtomsData

    from .kfold import kfold_splits, write_split_files

    if not os.path.isfile(args.db):
        raise FileNotFoundError(f"no such database: {args.db}")
    splits = kfold_splits(len(ASEAtomsData(args.db)), args.k, args.seed)
    paths = write_split_files(splits, args.out_dir)
    return {"splits": paths, "sizes": [[len(s[k]) for k in ("train_idx", "val_idx", "test_idx")]
                                       for s in splits]}


def _plot(args) -> dict:
    import matplotlib.pyplot as plt

    from .plotting import cells_learning_curves, cells_parity, error_vs_size, load_cells, parity_plot

    if not os.path.isdir(args.cells):
        raise FileNotFoundError(f"no such folder of cells: {args.cells}")
    cells = load_cells(args.cells)
    targets = {c["target"] for c in cells}
    if len(targets) != 1:
        raise ValueError(f"{args.cells} must hold the cells of one target, found {sorted(targets) or 'none'}")
    unit = cells[0]["unit"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if args.kind == "parity":
        y, predictions, folds = cells_parity(cells, methods=args.methods)
        parity_plot(y, predictions, unit, ax=ax,
                    title=f"{cells[0]['target']}: test folds {', '.join(map(str, folds))} pooled")
        shown = sorted(predictions)
    else:
        curves = cells_learning_curves(cells, methods=args.methods, metric=args.metric)
        if not curves:
            raise ValueError(f"no model in {args.cells} has 2 or more folds at any size")
        error_vs_size(curves, unit, ax=ax, metric=args.metric.upper(), title=cells[0]["target"])
        shown = sorted(curves)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    return {"plot": args.out, "models": shown}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``schnet-transfer`` console script; prints a JSON summary.

    Returns
    -------
    int
        0 on success, 2 after a user error (one line on stderr), 130 when
        interrupted (finished molecules are kept; rerun to resume).
    """
    from .dblock import DatabaseLockedError

    parser = build_parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
        prog = f"{parser.prog} {args.command}"
        run = {"label": _label, "convert": _convert, "baselines": _baselines, "folds": _folds,
               "plot": _plot}[args.command]
        result = run(args)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError,
            DatabaseLockedError) as err:
        prog = getattr(err, "prog", prog)
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = "; finished molecules are kept, rerun the same command to resume"
        print(f"{prog}: interrupted{resume if prog.endswith(' label') else ''}", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
