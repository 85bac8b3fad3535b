"""Paper-scale GFN2-xTB pre-training sets (10k, 20k, 50k MOSES molecules) and target-similar ones.

Three steps, each resumable and each safe to rerun (``S=benchmarks/schnet_transfer``)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python $S/make_pretraining_sets.py plan
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python $S/make_pretraining_sets.py label --workers 1
    .venv/bin/python $S/make_pretraining_sets.py cut

* ``plan`` reads ``data/zinc/moses_subset_100k.csv.gz``, drops the paper's elements (As, Se, Br, Te,
  I) and every HOPV and FreeSolv molecule (InChIKey connectivity block), and writes
  ``<work-dir>/plan.json``: one seeded order of the pool (the random set of size N is its first N
  labelled molecules, so the sets are nested) and the pool ranked by Morgan Tanimoto similarity
  to HOPV and to FreeSolv (:func:`schnet_transfer.target_similar.rank_similar`).
* ``label`` labels the molecules the sets need into one database,
  ``<work-dir>/moses_gfn2_labels.db``, with :func:`schnet_transfer.labelling.label_molecules`
  (GFN2-xTB gap in eV, total energy, ALPB water solvation free energy in kcal/mol), in the
  order random 10k, 20k, HOPV-similar, FreeSolv-similar, random 50k; a molecule that fails is
  replaced by the next one of its list.  Interrupt it at any time; rerunning resumes.
* ``cut`` writes every finished set as its own schnetpack database
  (``moses_gfn2_random_10k.db``, ..., ``moses_gfn2_hopv_similar_10k.db``) and records sizes and
  checksums in ``benchmarks/results/schnet_pretraining_sets.json``.  An unfinished set is
  reported with its progress and not written.

``--sets NAME ...`` limits ``label`` and ``cut`` to some sets, e.g. to rebuild one recorded set
on a new machine: ``cut`` then checks that the rebuilt set has the recorded content digest
(below), or at least the recorded label statistics, and leaves the record of the other sets as
it is.

The file SHA-256 of a database changes with every write (ASE stores creation times and the
user), so the record also holds ``content_sha256``: a digest of input indices, SMILES, atomic
numbers, positions and labels in set order, the same for the same inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from schnetpack.data import ASEAtomsData
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schnet_transfer.labelling import label_molecules  # noqa: E402
from schnet_transfer.pretraining_set import (  # noqa: E402
    PAPER_EXCLUDED_ELEMENTS, MoleculeInput, drop_elements, read_smiles_table, seeded_order)
from schnet_transfer.target_similar import (  # noqa: E402
    TARGETS, exclude_molecules, find_molecules, rank_similar, read_target_smiles)
from schnet_transfer.xtb_labels import LABEL_UNITS, XtbSettings  # noqa: E402

SOURCE = ROOT / "data" / "zinc" / "moses_subset_100k.csv.gz"
SMILES_COLUMN = "SMILES"
RANDOM_SIZES = (10_000, 20_000, 50_000)
SIMILAR_SIZE = 10_000
#: Extra ranked candidates kept per target (fraction of the similar set's size) to replace failures.
SIMILAR_MARGIN = 0.2
LABELS_DB = "moses_gfn2_labels.db"
RESULTS = ROOT / "benchmarks" / "results" / "schnet_pretraining_sets.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_name(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_targets(targets_dir: Path) -> dict[str, list[str]]:
    """SMILES of every target set of :data:`schnet_transfer.target_similar.TARGETS`."""
    return {name: read_target_smiles(name, Path(targets_dir) / name) for name in TARGETS}


def make_plan(source: Path, targets_dir: Path, seed: int, random_sizes=RANDOM_SIZES,
              similar_size: int = SIMILAR_SIZE, progress: bool = True) -> dict:
    """Orders of the pool molecules (source row indices) for every set; see the module docstring.

    The pool is the source without the paper's elements and without every target molecule
    (InChIKey connectivity block).  Each set names the order it is cut from and its size.
    """
    targets = read_targets(targets_dir)
    bar = tqdm(total=2 + len(targets), desc="plan: elements, target molecules, similarity",
               disable=not progress)
    read = read_smiles_table(source, SMILES_COLUMN)
    filtered = drop_elements(read.items, PAPER_EXCLUDED_ELEMENTS)
    bar.update()
    pool = exclude_molecules(filtered, [s for smiles in targets.values() for s in smiles])
    bar.update()
    plan = {
        "source": _relative(source), "source_sha256": _sha256(source),
        "smiles_column": SMILES_COLUMN, "excluded_elements": list(PAPER_EXCLUDED_ELEMENTS),
        "targets_dir": _relative(targets_dir),
        "target_match": "InChIKey connectivity block (first 14 characters)",
        "seed": seed,
        "counts": {"read": len(read.items), "duplicates_skipped": read.duplicates,
                   "dropped_elements": len(read.items) - len(filtered),
                   "dropped_target_molecules": len(filtered) - len(pool), "pool": len(pool)},
        "similarity": "max Tanimoto to the target set, Morgan radius 2, 2048 bits",
        "sets": {f"random_{_size_name(n)}": {"order": "random", "size": n}
                 for n in sorted(random_sizes)},
        "orders": {"random": [m.index for m in seeded_order(pool, seed)]},
    }
    keep = int(similar_size * (1 + SIMILAR_MARGIN))
    for name, smiles in targets.items():
        ranked = rank_similar(pool, smiles)[:keep]
        plan["orders"][f"{name}_similar"] = [m.index for m, _ in ranked]
        plan[f"{name}_similarity"] = [round(similarity, 6) for _, similarity in ranked]
        plan["sets"][f"{name}_similar_{_size_name(similar_size)}"] = {
            "order": f"{name}_similar", "size": similar_size}
        bar.update()
    bar.close()
    return plan


def priority(plan: dict) -> list[str]:
    """Labelling order of the sets: the random ones by size, the largest after the others."""
    names = sorted(plan["sets"], key=lambda n: plan["sets"][n]["size"])
    random = [n for n in names if plan["sets"][n]["order"] == "random"]
    return random[:-1] + [n for n in names if n not in random] + random[-1:]


def load_plan(args) -> dict:
    """The cached plan of ``--work-dir``, computed first when missing (a few minutes)."""
    path = args.work_dir / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        sizes = sorted(s["size"] for s in plan["sets"].values() if s["order"] == "random")
        similar = {s["size"] for s in plan["sets"].values() if s["order"] != "random"}
        if (plan["seed"], plan["source_sha256"], sizes, similar) != (
                args.seed, _sha256(args.source), sorted(args.sizes), {args.similar_size}):
            raise ValueError(f"{path} was made from another seed, source file or set sizes; "
                             "use another --work-dir or remove it")
        return plan
    plan = make_plan(args.source, args.targets_dir, args.seed, args.sizes, args.similar_size,
                     progress=not args.no_progress)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan))
    return plan


def label_state(db: Path) -> tuple[set[int], set[int]]:
    """Source indices labelled and failed in the labels database (empty when it does not exist)."""
    if not db.exists():
        return set(), set()
    data = ASEAtomsData(str(db))
    labelled = {int(row.input_index) for row in data.conn.select(include_data=False)}
    return labelled, {int(k) for k in data.metadata["failures"]}


def walk(order: list[int], size: int, labelled: set[int], failed: set[int]):
    """The set of ``size`` from ``order``: its members so far and the indices still to label.

    Members are the first ``size`` labelled molecules of the order; a failed molecule is
    skipped; the set is final when nothing before its last member is still unlabelled.
    """
    members, pending = [], []
    for index in order:
        if len(members) + len(pending) == size:
            break
        if index in failed:
            continue
        (members if index in labelled else pending).append(index)
    return members, pending


def chosen_sets(plan: dict, names: list[str] | None) -> list[str]:
    """The sets of ``--sets`` in :func:`priority` order (every set of the plan when None)."""
    unknown = sorted(set(names or ()) - set(plan["sets"]))
    if unknown:
        raise ValueError(f"unknown set(s) {', '.join(unknown)}; the plan has "
                         f"{', '.join(priority(plan))}")
    return [n for n in priority(plan) if names is None or n in names]


def label(args) -> None:
    """Label what the sets still need, in :func:`priority` order, until every set is final."""
    plan = load_plan(args)
    names = chosen_sets(plan, args.sets)
    db = args.work_dir / LABELS_DB
    smiles = {m.index: m.smiles for m in read_smiles_table(args.source, SMILES_COLUMN).items}
    settings = XtbSettings(seed=args.seed)
    while True:
        labelled, failed = label_state(db)
        pending = {}  # insertion-ordered: the sets' needs in priority order
        for name in names:
            spec = plan["sets"][name]
            _, needed = walk(plan["orders"][spec["order"]], spec["size"], labelled, failed)
            print(f"{name}: {len(needed)} molecules to label", file=sys.stderr, flush=True)
            pending.update(dict.fromkeys(needed))
        if not pending:
            return
        items = [MoleculeInput(i, smiles[i], smiles=smiles[i]) for i in pending]
        # one worker runs in this process (a second process would only add its start-up)
        label_molecules(items, str(db), settings, n_workers=args.workers,
                        processes=args.workers > 1, progress=not args.no_progress)


def _rows(db: Path, wanted: set[int]) -> dict[int, object]:
    data = ASEAtomsData(str(db))
    return {int(r.input_index): r for r in data.conn.select() if int(r.input_index) in wanted}


def content_sha256(rows: list) -> str:
    """Digest of input index, SMILES, atomic numbers, positions and labels, in set order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.input_index}\t{row.smiles}\n".encode())
        digest.update(np.asarray(row.numbers, dtype=np.int64).tobytes())
        digest.update(np.asarray(row.positions, dtype=np.float64).tobytes())
        for key in LABEL_UNITS:
            digest.update(np.asarray(row.data[key], dtype=np.float64).tobytes())
    return digest.hexdigest()


def label_statistics(rows: list) -> dict:
    """Mean, standard deviation and range of every label (units of :data:`LABEL_UNITS`)."""
    out = {}
    for key, unit in LABEL_UNITS.items():
        values = np.array([float(r.data[key][0]) for r in rows])
        out[key] = {"unit": unit, "mean": round(float(values.mean()), 4),
                    "sd": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None,
                    "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}
    return out


def write_set(out: Path, rows: list, source: ASEAtomsData, description: dict) -> None:
    """A new schnetpack database holding ``rows`` in order (replacing ``out``)."""
    tmp = out.with_suffix(".tmp.db")
    tmp.unlink(missing_ok=True)
    data = ASEAtomsData.create(str(tmp), distance_unit="Ang", property_unit_dict=LABEL_UNITS)
    data.update_metadata(provenance=source.metadata["provenance"], pretraining_set=description)
    data.add_systems(
        [{k: np.asarray(r.data[k]) for k in LABEL_UNITS} for r in rows],
        [r.toatoms() for r in rows],
        [{"input_index": r.input_index, "name": r.name, "smiles": r.smiles, "charge": r.charge}
         for r in rows],
    )
    os.replace(tmp, out)


def cut(args) -> dict:
    """Write every finished set (of ``--sets``) and the record; see the module docstring.

    With ``--sets``, the record of ``--results`` keeps its other sets and its labels-database
    summary, and a named set already recorded must reproduce it (:func:`_merged`), else nothing is
    recorded and :class:`ValueError` says which set changed.
    """
    plan = load_plan(args)
    names = chosen_sets(plan, args.sets)
    db = args.work_dir / LABELS_DB
    labelled, failed = label_state(db)
    targets = [s for smiles in read_targets(args.targets_dir).values() for s in smiles]
    record = {"labels_db": _relative(db), "labelled": len(labelled), "failed": len(failed),
              "xtb": ASEAtomsData(str(db)).metadata["provenance"] if db.exists() else None,
              "plan": {k: v for k, v in plan.items() if k != "orders" and
                       not k.endswith("_similarity")}, "sets": {}}
    for name in tqdm(names, desc="sets", disable=args.no_progress):
        spec = plan["sets"][name]
        order = plan["orders"][spec["order"]]
        members, pending = walk(order, spec["size"], labelled, failed)
        entry = {"order": spec["order"], "size": spec["size"], "labelled": len(members),
                 "complete": not pending and len(members) == spec["size"]}
        if not pending and members:
            by_index = _rows(db, set(members))
            rows = [by_index[i] for i in members]
            leaked = find_molecules([r.smiles for r in rows], targets)
            if leaked:
                raise ValueError(
                    f"set {name} holds target molecules, e.g. {rows[leaked[0]].smiles}")
            skipped = [i for i in order[: order.index(members[-1]) + 1] if i in failed]
            out = args.work_dir / f"moses_gfn2_{name}.db"
            write_set(out, rows, ASEAtomsData(str(db)), {
                "name": name, "rule": f"first {spec['size']} labelled molecules of the "
                f"'{spec['order']}' order of plan.json", "source": plan["source"],
                "seed": plan["seed"], "failed_skipped": skipped})
            entry.update(path=_relative(out), bytes=out.stat().st_size, sha256=_sha256(out),
                         content_sha256=content_sha256(rows), failed_skipped=len(skipped),
                         target_molecules=len(leaked), labels=label_statistics(rows))
            if spec["order"] != "random":
                target = spec["order"].removesuffix("_similar")
                similarity = dict(zip(order, plan[f"{target}_similarity"]))
                values = [similarity[i] for i in members]
                entry["tanimoto_to_" + target] = {
                    "min": min(values), "median": float(np.median(values)), "max": max(values)}
        record["sets"][name] = entry
    if args.sets is not None:
        record = _merged(record, args.results)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["sets"], indent=2))
    return record


def _merged(record: dict, results: Path) -> dict:
    """``record`` (some sets, rebuilt) folded into the record already at ``results``.

    A rebuilt set replaces its entry, which gains ``rebuilt``: how it compares with the entry it
    replaces.  It must hold the same content (digest), or at least the same label statistics at
    the recorded rounding (multi-threaded xTB can change labels in their last bits); anything else
    is an error and the record is left unchanged.  An unfinished rebuild keeps the old entry.
    """
    if not results.is_file():
        return record
    merged = json.loads(results.read_text())
    for name, entry in record["sets"].items():
        before = merged["sets"].get(name)
        if before is None or "content_sha256" not in before:
            merged["sets"][name] = entry
            continue
        if "content_sha256" not in entry:
            continue
        if entry["content_sha256"] == before["content_sha256"]:
            check = "same content digest as the replaced record"
        elif entry["labels"] == before["labels"] and entry["size"] == before["size"]:
            check = ("same label statistics as the replaced record; content digest differs "
                     f"(was {before['content_sha256']})")
        else:
            raise ValueError(f"set {name} rebuilt with content {entry['content_sha256'][:12]} "
                             f"and other label statistics than recorded in {results}; "
                             "record left unchanged")
        entry["rebuilt"] = {"labels_db_labelled": record["labelled"], "check": check}
        merged["sets"][name] = entry
        print(f"{name}: rebuilt, {check}", file=sys.stderr)
    return merged


def _sizes(text: str) -> list[int]:
    sizes = [int(t) for t in text.split(",")]
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["plan", "label", "cut"])
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs/schnet_paper/pretrain")
    parser.add_argument("--source", type=Path, default=SOURCE, help="SMILES table (column SMILES)")
    parser.add_argument("--targets-dir", type=Path, default=ROOT / "data",
                        help="folder holding hopv/ and freesolv/")
    parser.add_argument("--sizes", type=_sizes, default=list(RANDOM_SIZES),
                        help="random set sizes, comma-separated")
    parser.add_argument("--similar-size", type=int, default=SIMILAR_SIZE)
    parser.add_argument("--seed", type=int, default=0, help="seed of the order and embedding")
    parser.add_argument("--sets", nargs="+", metavar="NAME",
                        help="only these sets (e.g. random_10k freesolv_similar_10k); 'cut' then "
                        "checks a recorded set against its record (content digest, else label "
                        "statistics) and keeps the other records")
    parser.add_argument("--workers", type=int, default=1, help="Dask workers of 'label'")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON written by 'cut'")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1 or args.similar_size < 1:
        parser.error("--workers and --similar-size must be >= 1")
    args.work_dir = args.work_dir.resolve()
    try:
        {"plan": load_plan, "label": label, "cut": cut}[args.step](args)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
