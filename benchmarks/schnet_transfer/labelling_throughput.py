"""GFN2-xTB labelling throughput: molecules/s and molecules/s per core, 1 vs 2 Dask workers.

Labels the same MOSES molecules (the first ``--molecules`` of a seeded order of the shipped
``data/zinc/moses_subset_100k.csv.gz`` without As/Se/Br/Te/I) with
:func:`schnet_transfer.labelling.label_molecules` into a fresh database per run: RDKit
embedding + MMFF, a gas-phase and an ALPB-water GFN2-xTB single point, and the database write,
one thread per worker.  Runs alternate 1, 2, 2, 1, ... workers so that a change of the machine
load affects both counts alike; the load average and the CPU count are recorded with every run,
since the machine may be shared::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/schnet_transfer/labelling_throughput.py

writes ``benchmarks/results/schnet_labelling_throughput.json`` and the table
``benchmarks/results/schnet_labelling_throughput.md`` generated from it (``--md-only``
regenerates the table from an existing JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schnet_transfer.labelling import label_molecules  # noqa: E402
from schnet_transfer.pretraining_set import (  # noqa: E402
    drop_elements, read_smiles_table, seeded_order)
from schnet_transfer.xtb_labels import XtbSettings  # noqa: E402

SOURCE = "data/zinc/moses_subset_100k.csv.gz"
RESULTS = ROOT / "benchmarks" / "results" / "schnet_labelling_throughput"


def molecules(n: int, seed: int) -> list:
    """The first ``n`` molecules of a seeded order of the filtered MOSES subset."""
    items = drop_elements(read_smiles_table(ROOT / SOURCE, "SMILES").items)
    return seeded_order(items, seed)[:n]


def one_run(items: list, workers: int) -> dict:
    """Label ``items`` into a new database on a fresh cluster of ``workers`` worker processes.

    Wall time covers :func:`label_molecules` on a running cluster (its start-up, a few
    seconds, is left out).  CPU time is the workers' and this process's (database writes):
    it does not grow when other jobs share the cores, so molecules per CPU-second is the
    per-core throughput of an unloaded core.
    """
    from dask.distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        cpu_before = sum(client.run(time.process_time).values()) + time.process_time()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        summary = label_molecules(items, os.path.join(tmp, "xtb.db"), XtbSettings(),
                                  client=client, progress=False)
        wall = time.perf_counter() - start
        cpu = sum(client.run(time.process_time).values()) + time.process_time() - cpu_before
    rate = len(items) / wall
    return {"workers": workers, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "labelled": summary.labelled, "failed": summary.failed,
            "molecules_per_s": round(rate, 3),
            "molecules_per_s_per_core": round(rate / workers, 3),
            "molecules_per_cpu_s": round(len(items) / cpu, 3),
            "load_1min_before": round(load_before, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for workers in sorted({r["workers"] for r in runs}):
        mine = [r for r in runs if r["workers"] == workers]
        rates = np.array([r["molecules_per_s"] for r in mine])
        per_cpu = np.array([r["molecules_per_cpu_s"] for r in mine])
        out[str(workers)] = {
            "runs": len(rates), "molecules_per_s_mean": round(float(rates.mean()), 3),
            "molecules_per_s_sd": round(float(rates.std(ddof=1)), 3) if len(rates) > 1 else None,
            "molecules_per_s_per_core_mean": round(float(rates.mean()) / workers, 3),
            "molecules_per_cpu_s_mean": round(float(per_cpu.mean()), 3),
            "cpu_ms_per_molecule": round(1000.0 / float(per_cpu.mean()), 1)}
    if {"1", "2"} <= out.keys():
        out["speedup_2_vs_1"] = round(
            out["2"]["molecules_per_s_mean"] / out["1"]["molecules_per_s_mean"], 2)
    return out


def render_md(result: dict) -> str:
    """The Markdown table of a result JSON."""
    s = result["summary"]
    lines = [
        "# GFN2-xTB labelling throughput",
        "",
        f"{result['molecules']} MOSES molecules (embedding + MMFF, gas and ALPB-water GFN2-xTB "
        f"single points, database write), {result['repeats']} runs per worker count, alternating; "
        f"{result['machine']['cpu_count']} CPU cores ({result['machine']['processor']}), "
        f"OMP_NUM_THREADS={result['machine']['omp_num_threads']}, niceness "
        f"{result['machine']['niceness']}, tblite "
        f"{result['versions']['tblite']}. Generated by "
        "`benchmarks/schnet_transfer/labelling_throughput.py` from the JSON beside this file.",
        "",
        "| Dask workers | runs | molecules/s, wall (mean ± sd) | molecules/s per core, wall | "
        "molecules per CPU-second | CPU ms per molecule |",
        "|---|---|---|---|---|---|",
    ]
    for workers in ("1", "2"):
        if workers in s:
            w = s[workers]
            sd = "" if w["molecules_per_s_sd"] is None else f" ± {w['molecules_per_s_sd']:.2f}"
            lines.append(f"| {workers} | {w['runs']} | {w['molecules_per_s_mean']:.2f}{sd} | "
                         f"{w['molecules_per_s_per_core_mean']:.2f} | "
                         f"{w['molecules_per_cpu_s_mean']:.2f} | {w['cpu_ms_per_molecule']:.0f} |")
    if "speedup_2_vs_1" in s:
        lines += ["", f"Wall-clock speed-up of 2 workers over 1: {s['speedup_2_vs_1']:.2f}x. "
                  "Wall rates depend on what else runs on the cores; molecules per CPU-second "
                  "(workers' plus the writing process's CPU time) is the rate of one unloaded "
                  "core."]
    loads = [r["load_1min_before"] for r in result["runs"]] + [
        r["load_1min_after"] for r in result["runs"]]
    lines += [
        "",
        f"Machine load (1-minute load average, before/after each run): {min(loads):.2f} to "
        f"{max(loads):.2f} on {result['machine']['cpu_count']} cores; {result['machine']['note']}",
        "",
        "| run | workers | wall s | CPU s | labelled | failed | molecules/s | load before "
        "| load after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["runs"]):
        lines.append(f"| {i} | {r['workers']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['labelled']} | {r['failed']} | {r['molecules_per_s']:.2f} | "
                     f"{r['load_1min_before']:.2f} | {r['load_1min_after']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--molecules", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--md-only", action="store_true", help="regenerate the .md from the JSON")
    args = parser.parse_args(argv)
    if args.md_only:
        RESULTS.with_suffix(".md").write_text(
            render_md(json.loads(RESULTS.with_suffix(".json").read_text())))
        return 0
    if args.molecules < 1 or args.repeats < 1:
        parser.error("--molecules and --repeats must be >= 1")
    items = molecules(args.molecules, args.seed)
    schedule = [w for r in range(args.repeats) for w in ((1, 2) if r % 2 == 0 else (2, 1))]
    runs = []
    for workers in schedule:
        runs.append(one_run(items, workers))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    result = {
        "molecules": len(items), "source": SOURCE, "seed": args.seed, "repeats": args.repeats,
        "settings": XtbSettings().provenance(),
        "machine": {"cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "niceness": os.nice(0),
                    "note": args.note},
        "versions": {p: version(p) for p in ("tblite", "rdkit", "dask", "schnetpack")},
        "runs": runs, "summary": summarize(runs),
    }
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(render_md(result))
    print(render_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
