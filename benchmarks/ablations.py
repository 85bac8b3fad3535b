"""Pin-Tuning's ablation tables (paper Tables 2 and 3) on the same supports for every variant.

* Table 2 (MP-Adapter parts, 10- and 5-shot): full, without adapter, adapter without context,
  without LayerNorm.
* Table 3 (Emb-BWC, 10-shot): embeddings frozen, fine-tuned without regulariser, IM (identity, the
  full model), FIM, EFIM (Fisher importances normalised, see docs/pintuning.md).

Each (dataset, shots, variant, seed) is one resumable cell (one JSON under ``--cell-dir``), computed
by :func:`fewshot_table.pintuning_cell` with the variant's settings: the honest protocol (final
model, ``--draws`` fixed support draws, the same for every variant of a seed) and the
published-emulated one (best of ``--evaluations`` evaluations on fresh supports). The meta-training
runs live under ``--checkpoint-dir``, shared with ``fewshot_table.py``: the full model is the
report's Pin-Tuning run of the same budget, trained once for both (a folder resumes only the run it
holds, see ``pintuning_tox21.check_resumable``). Writes
``benchmarks/results/ablations.{json,md,png}`` with the paper's numbers beside ours and every variant
paired with the full model of its seed on the same supports (:func:`paired_with_full`)::

    python benchmarks/ablations.py --datasets tox21 sider muv --seeds 0 1 2 --steps 2000
    python benchmarks/ablations.py --report-only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot_report import budget_section  # noqa: E402
from fewshot_table import (add_cell_options, cell_device, eval_seeds, pintuning_cell, run_cells,  # noqa: E402
                           support_digest)

VARIANTS = {
    "full": {},
    "no_adapter": {"adapters": False},
    "no_context": {"context_layers": "none"},
    "no_layernorm": {"adapter_layer_norm": False},
    "frozen_embeddings": {"emb_bwc": "frozen"},
    "no_regulariser": {"emb_bwc": "none"},
    "fim": {"emb_bwc": "fisher"},
    "efim": {"emb_bwc": "embedding_fisher"},
}
TABLE2 = ("full", "no_adapter", "no_context", "no_layernorm")
TABLE3 = ("frozen_embeddings", "no_regulariser", "full", "fim", "efim")
# ROC-AUC % of the paper; Table 2: (10-shot, 5-shot) per dataset; Table 3: 10-shot
PAPER_TABLE2 = {"full": {"tox21": (91.56, 90.95), "sider": (93.41, 92.02), "muv": (73.33, 70.71)},
                "no_adapter": {"tox21": (79.72, 78.49), "sider": (74.04, 72.94), "muv": (66.06, 62.88)},
                "no_context": {"tox21": (81.42, 79.34), "sider": (74.68, 72.86), "muv": (68.70, 66.12)},
                "no_layernorm": {"tox21": (86.71, 84.93), "sider": (91.50, 90.76), "muv": (70.26, 67.42)}}
PAPER_TABLE3 = {"frozen_embeddings": {"tox21": 89.70, "sider": 90.12, "muv": 70.76},
                "no_regulariser": {"tox21": 90.17, "sider": 92.06, "muv": 72.37},
                "full": {"tox21": 91.56, "sider": 93.41, "muv": 73.22},
                "fim": {"tox21": 90.93, "sider": 90.09, "muv": 72.17},
                "efim": {"tox21": 91.32, "sider": 90.31, "muv": 72.78}}


def paper_value(variant: str, dataset: str, shots: int, table: int) -> float | None:
    """The paper's ROC-AUC % of a variant in its Table 2 (10 or 5 shots) or Table 3 (10 shots only); None where
    the paper has no number. The full model is in both tables, not always with the same number (MUV: 73.33 in
    Table 2, 73.22 in Table 3)."""
    if table == 3:
        return PAPER_TABLE3.get(variant, {}).get(dataset) if shots == 10 else None
    pair = PAPER_TABLE2.get(variant, {}).get(dataset)
    return None if pair is None else pair[0 if shots == 10 else 1]


def paper_table(variant: str) -> int:
    """The paper's table that holds a variant: 2 for the MP-Adapter parts and the full model (Table 2 has both
    shot counts), 3 for the Emb-BWC variants."""
    return 2 if variant in TABLE2 else 3


def plotted_paper_values(variants: list[str], dataset: str, shots: int) -> list[float | None]:
    """The paper's ROC-AUC % beside each variant's bar, from its :func:`paper_table` (so that 5-shot panels
    have the full model's too); None where the paper has none."""
    return [paper_value(v, dataset, shots, paper_table(v)) for v in variants]


def cells_to_run(datasets, seeds, shots=(10, 5), variants=tuple(VARIANTS)) -> list:
    """Table 2 at 10 and 5 shots, Table 3 at 10 shots (the full model is shared), of the given shots
    and variants, in the order of ``variants`` within each dataset and seed."""
    todo = {(d, 10, v, s) for d in datasets for v in VARIANTS for s in seeds} if 10 in shots else set()
    todo |= {(d, 5, v, s) for d in datasets for v in TABLE2 for s in seeds} if 5 in shots else set()
    return sorted((c for c in todo if c[2] in variants),
                  key=lambda c: (c[0], -c[1], c[3], list(variants).index(c[2])))


def run_cell(dataset: str, shots: int, variant: str, seed: int, args) -> dict:
    from deepchem_pintuning.data import load_fewshot
    device, device_name = cell_device(args)
    data = load_fewshot(dataset)
    seeds = eval_seeds(seed, args.draws)
    start = time.perf_counter()
    cell = {"dataset": dataset, "shots": shots, "variant": variant, "seed": seed, "eval_seeds": seeds,
            "supports": [support_digest(data, shots, e) for e in seeds], "device": device_name}
    # the full model (no setting changed) is the few-shot report's Pin-Tuning run: same folder, trained once
    tag = f"-{variant}" if VARIANTS[variant] else ""
    cell.update(pintuning_cell(data, dataset, shots, seed, args, device, seeds, tag=tag, deployment=False,
                               **VARIANTS[variant]))
    cell["wall_seconds"] = time.perf_counter() - start
    return cell


def _mine(cells, dataset, shots, variant, steps) -> list:
    """The cells of one row: a dataset, shot count, variant and meta-training budget (one cell per seed)."""
    return [c for c in cells if (c["dataset"], c["shots"], c["variant"], c["steps"]) == (dataset, shots, variant, steps)]


def _ours(cells, dataset, shots, variant, steps, protocol) -> str:
    """Mean ± sd over seeds (number of seeds); the published-emulated protocol also says of how many
    evaluations it is the best (cells computed with other ``--evaluations`` would otherwise mix unseen)."""
    mine = _mine(cells, dataset, shots, variant, steps)
    values = [np.mean(c[protocol]) for c in mine]
    if not values:
        return "—"
    spread = f" ± {100 * np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    counts = sorted({len(c["evaluations"]) for c in mine if c.get("evaluations")}) if protocol == "published" else []
    best_of = f"; best of {'/'.join(map(str, counts))}" if counts else ""
    return f"{100 * np.mean(values):.2f}{spread} ({len(values)}{best_of})"


def paired_with_full(cells, dataset, shots, variant, steps) -> dict | None:
    """The variant minus the full model, honest protocol, draw by draw on the same supports (ROC-AUC points).

    A meta-trained model is the unit of replication: each seed gives the mean difference over its support
    draws, and the 95 % interval is Student's t over those seed means (none with one seed). ``ahead`` counts
    the draws, over all seeds, in which the variant scores above the full model. Seeds without a full-model
    cell on the same supports are left out, so every difference is paired. None when no seed pairs.
    """
    full = {c["seed"]: c for c in _mine(cells, dataset, shots, "full", steps)}
    per_seed, ahead, draws = [], 0, 0
    for cell in sorted(_mine(cells, dataset, shots, variant, steps), key=lambda c: c["seed"]):
        reference = full.get(cell["seed"])
        if reference is None or reference["supports"] != cell["supports"]:
            continue
        difference = 100 * (np.asarray(cell["honest"]) - np.asarray(reference["honest"]))
        per_seed.append(float(difference.mean()))
        ahead += int((difference > 0).sum())
        draws += difference.size
    if not per_seed:
        return None
    half = (float(stats.t.ppf(0.975, len(per_seed) - 1) * np.std(per_seed, ddof=1) / np.sqrt(len(per_seed)))
            if len(per_seed) > 1 else None)
    mean = float(np.mean(per_seed))
    table = paper_table(variant)
    published, full_published = paper_value(variant, dataset, shots, table), paper_value("full", dataset, shots, table)
    return {"dataset": dataset, "shots": shots, "steps": steps, "variant": variant, "seeds": len(per_seed),
            "per_seed": per_seed, "mean": mean, "ci95": None if half is None else [mean - half, mean + half],
            "ahead": ahead, "draws": draws,
            "paper": None if published is None or full_published is None else round(published - full_published, 2)}


def paired_rows(cells: list) -> list:
    """:func:`paired_with_full` for every variant with a paired full-model cell (Table 2 at both shot counts)."""
    rows = []
    for dataset in sorted({c["dataset"] for c in cells}):
        for steps in _budgets(cells, dataset):
            for shots in (10, 5):
                for variant in (v for v in VARIANTS if v != "full"):
                    row = paired_with_full(cells, dataset, shots, variant, steps)
                    rows += [row] if row else []
    return rows


def _paired_section(cells: list) -> list:
    lines = ["## Paired with the full model (honest protocol, same supports)", "",
             "Variant − full model in ROC-AUC points: mean over seeds of each seed's mean difference over its support "
             "draws; 95 % interval: Student's t over the seeds (the meta-trained model is the unit of replication); "
             "ahead: draws in which the variant scores above the full model. Paper: its variant − its full model, and "
             "whether that difference lies inside our interval.", "",
             "| dataset | shots | steps | variant | seeds | variant − full | 95 % interval | ahead | paper | paper inside |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in paired_rows(cells):
        interval = f"{r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f}" if r["ci95"] else "—"
        paper = f"{r['paper']:+.2f}" if r["paper"] is not None else "—"
        inside = ("—" if r["paper"] is None or not r["ci95"] else
                  "yes" if r["ci95"][0] <= r["paper"] <= r["ci95"][1] else "no")
        lines.append(f"| {r['dataset']} | {r['shots']} | {r['steps']} | {r['variant']} | {r['seeds']} | "
                     f"{r['mean']:+.2f} | {interval} | {r['ahead']}/{r['draws']} | {paper} | {inside} |")
    return lines + [""]


def _budgets(cells, dataset) -> list:
    """The meta-training budgets (outer steps) with cells of ``dataset``: one block of rows each."""
    return sorted({c["steps"] for c in cells if c["dataset"] == dataset})


def report(cells: list) -> str:
    datasets = sorted({c["dataset"] for c in cells})
    lines = ["# Ablations (generated by benchmarks/ablations.py)", "",
             "ROC-AUC %, ours: mean ± sd over seeds (number of seeds), honest protocol (final model, fixed support "
             "draws, same for every variant) / published-emulated (best of evaluations, fresh supports), one block "
             "of rows per meta-training budget. Paper: GIN encoder, its own protocol; ours: the encoder and budget "
             "below.", "",
             "## Table 2: MP-Adapter parts", "",
             "| dataset | shots | steps | variant | ours honest | ours published-emulated | paper |",
             "|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        for steps in _budgets(cells, dataset):
            for shots in (10, 5):
                for variant in TABLE2:
                    paper = paper_value(variant, dataset, shots, 2)
                    lines.append(f"| {dataset} | {shots} | {steps} | {variant} | "
                                 f"{_ours(cells, dataset, shots, variant, steps, 'honest')} | "
                                 f"{_ours(cells, dataset, shots, variant, steps, 'published')} | "
                                 f"{'—' if paper is None else paper} |")
    lines += ["", "## Table 3: Emb-BWC (10-shot)", "",
              "| dataset | steps | variant | ours honest | ours published-emulated | paper |", "|---|---|---|---|---|---|"]
    for dataset in datasets:
        for steps in _budgets(cells, dataset):
            for variant in TABLE3:
                paper = paper_value(variant, dataset, 10, 3)
                lines.append(f"| {dataset} | {steps} | {variant} | {_ours(cells, dataset, 10, variant, steps, 'honest')} | "
                             f"{_ours(cells, dataset, 10, variant, steps, 'published')} | "
                             f"{'—' if paper is None else paper} |")
    lines += ["", *_paired_section(cells), *budget_section(cells, "variant", list(VARIANTS))]
    return "\n".join(lines) + "\n"


def plot(cells: list, path: Path) -> None:
    """One column per (dataset, shots, budget): honest ROC-AUC per variant with the paper's numbers (top), and
    each variant minus the full model, paired, with its 95 % interval over seeds and the paper's difference
    (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(c["dataset"], c["shots"], c["steps"]) for c in cells}, key=lambda p: (p[0], -p[1], p[2]))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7.0), squeeze=False,
                             gridspec_kw={"height_ratios": [1.1, 1]})
    for column, (dataset, shots, steps) in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        names = [v for v in VARIANTS if _mine(cells, dataset, shots, v, steps)]
        per_seed = [[100 * np.mean(c["honest"]) for c in _mine(cells, dataset, shots, v, steps)] for v in names]
        top.bar(range(len(names)), [np.mean(v) for v in per_seed], yerr=[np.std(v) for v in per_seed],
                color="tab:orange", label="ours (honest, sd over seeds)")
        paper = [np.nan if value is None else value for value in plotted_paper_values(names, dataset, shots)]
        top.plot(range(len(names)), paper, "k_", markersize=18, label="paper")
        top.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        top.set_title(f"{dataset} {shots}-shot, {steps} steps")
        top.set_ylabel("ROC-AUC (%)")
        top.set_ylim(40, 100)
        top.legend(fontsize=7, loc="lower left")
        rows = [r for r in (paired_with_full(cells, dataset, shots, v, steps) for v in names if v != "full") if r]
        for y, r in enumerate(rows):
            low, high = r["ci95"] or (r["mean"], r["mean"])
            bottom.plot([low, high], [y, y], color="tab:orange", lw=2)
            bottom.plot(r["mean"], y, "o", color="tab:orange", label="ours: variant − full, 95 % CI" if y == 0 else None)
            if r["paper"] is not None:
                bottom.plot(r["paper"], y, "kx", label="paper" if y == 0 else None)
        bottom.axvline(0, color="grey", lw=0.8)
        bottom.set_yticks(range(len(rows)), [r["variant"] for r in rows], fontsize=8)
        bottom.invert_yaxis()
        bottom.set_xlabel("ROC-AUC points (paired, same supports)")
        if rows:   # below the axis: inside, it covers intervals
            bottom.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["tox21", "sider", "muv"], choices=["tox21", "sider", "muv"])
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 5], choices=[10, 5])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="only these variants, computed in this order (e.g. Table 2's first)")
    add_cell_options(parser, "ablations")
    args = parser.parse_args()
    cells = cells_to_run(args.datasets, args.seeds, args.shots, args.variants)
    run_cells(__file__, args, cells, run_cell, report, plot, summary=lambda done: {"paired_with_full": paired_rows(done)},
              meta_trained=VARIANTS)


if __name__ == "__main__":
    main()
