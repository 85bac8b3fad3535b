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
``benchmarks/results/ablations.{json,md,png}`` with the paper's numbers beside ours::

    python benchmarks/ablations.py --datasets tox21 sider muv --seeds 0 1 2 --steps 2000
    python benchmarks/ablations.py --report-only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

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
    values = [np.mean(c[protocol]) for c in _mine(cells, dataset, shots, variant, steps)]
    if not values:
        return "—"
    spread = f" ± {100 * np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.2f}{spread} ({len(values)})"


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
                    paper = PAPER_TABLE2[variant].get(dataset)
                    lines.append(f"| {dataset} | {shots} | {steps} | {variant} | "
                                 f"{_ours(cells, dataset, shots, variant, steps, 'honest')} | "
                                 f"{_ours(cells, dataset, shots, variant, steps, 'published')} | "
                                 f"{paper[0 if shots == 10 else 1] if paper else '—'} |")
    lines += ["", "## Table 3: Emb-BWC (10-shot)", "",
              "| dataset | steps | variant | ours honest | ours published-emulated | paper |", "|---|---|---|---|---|---|"]
    for dataset in datasets:
        for steps in _budgets(cells, dataset):
            for variant in TABLE3:
                lines.append(f"| {dataset} | {steps} | {variant} | {_ours(cells, dataset, 10, variant, steps, 'honest')} | "
                             f"{_ours(cells, dataset, 10, variant, steps, 'published')} | "
                             f"{PAPER_TABLE3[variant].get(dataset, '—')} |")
    lines += ["", *budget_section(cells, "variant", list(VARIANTS))]
    return "\n".join(lines) + "\n"


def plot(cells: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(c["dataset"], c["steps"]) for c in cells if c["shots"] == 10})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, steps) in zip(axes[0], panels):
        names = [v for v in VARIANTS if _mine(cells, dataset, 10, v, steps)]
        per_seed = [[100 * np.mean(c["honest"]) for c in _mine(cells, dataset, 10, v, steps)] for v in names]
        ax.bar(range(len(names)), [np.mean(v) for v in per_seed], yerr=[np.std(v) for v in per_seed],
               color="tab:orange", label="ours (honest, sd over seeds)")
        paper = [PAPER_TABLE3.get(v, {}).get(dataset) or PAPER_TABLE2.get(v, {}).get(dataset, (np.nan,))[0]
                 for v in names]
        ax.plot(range(len(names)), paper, "k_", markersize=18, label="paper")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{dataset} 10-shot, {steps} steps")
        ax.set_ylabel("ROC-AUC (%)")
        ax.set_ylim(40, 100)
        ax.legend(fontsize=7, loc="lower left")
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
    run_cells(__file__, args, cells, run_cell, report, plot, meta_trained=VARIANTS)


if __name__ == "__main__":
    main()
