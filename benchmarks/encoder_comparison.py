"""Tox21 10-shot Pin-Tuning with different pre-trained encoders: none, the shipped GCN, the offline GIN.

Each (encoder, seed) is one run of :func:`pintuning_tox21.run_pintuning` (paper protocol, the
published Tox21 settings inner lr 0.05, meta lr 1e-4, Emb-BWC weight 0.1), meta-trained for
``--steps`` outer steps and evaluated once at the end on the fixed evaluation episodes of that seed
(the same support sets for every encoder). Results are merged into the JSON file after every run,
so the encoders can be run in separate invocations; ``--plot`` redraws the figure from the JSON.
Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/encoder_comparison.py \\
        --encoders gin_scratch gcn_supervised_contextpred gin_attrmask_contextpred_offline --seeds 0 1 2 --steps 40
    python benchmarks/encoder_comparison.py --plot
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pintuning_tox21 import RESULTS, TOX21_SETTINGS, run_pintuning  # noqa: E402

OUT = RESULTS / "encoder_comparison.json"
LABELS = {"gin_scratch": "GIN, no pre-training", "gcn_supervised_contextpred": "GCN (Hu et al. checkpoint)",
          "gin_attrmask_contextpred_offline": "GIN (offline attrmask+contextpred)",
          # the same weights with the BatchNorm statistics of training (before recalibrate_batch_norm)
          "gin_attrmask_contextpred_offline_training_bn": "GIN offline\n(BN stats of training)"}


def summarize(runs: list) -> dict:
    """Mean and std over seeds of the final ROC-AUC / PR-AUC, per encoder."""
    summary = {}
    for encoder in dict.fromkeys(r["encoder"] for r in runs):
        mine = [r for r in runs if r["encoder"] == encoder]
        roc = [r["roc_auc"] for r in mine]
        pr = [r["pr_auc"] for r in mine]
        summary[encoder] = {"seeds": [r["seed"] for r in mine], "roc_auc_mean": float(np.mean(roc)),
                            "roc_auc_std": float(np.std(roc)), "pr_auc_mean": float(np.mean(pr)),
                            "pr_auc_std": float(np.std(pr)), "steps": sorted({r["steps"] for r in mine})}
    return summary


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summary = results["summary"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for x, (encoder, stats) in enumerate(summary.items()):
        seeds = [r["roc_auc"] for r in results["runs"] if r["encoder"] == encoder]
        ax.bar(x, stats["roc_auc_mean"], yerr=stats["roc_auc_std"], capsize=4, color="C%d" % x, alpha=0.7)
        ax.scatter([x] * len(seeds), seeds, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([LABELS.get(e, e).replace(" (", "\n(") for e in summary], fontsize=8)
    ax.set_ylabel("Tox21 10-shot test ROC-AUC")
    steps = sorted({s for stats in summary.values() for s in stats["steps"]})
    ax.set_title(f"Pin-Tuning encoder comparison ({'/'.join(map(str, steps))} outer steps, CPU; "
                 f"mean ± std over seeds)", fontsize=9)
    low = min(r["roc_auc"] for r in results["runs"])
    ax.set_ylim(max(0.0, low - 0.05), None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="*", default=list(LABELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--plot", action="store_true", help="only redraw the plot from the JSON")
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": []}
    if not args.plot:
        torch.set_num_threads(args.threads)
        from deepchem_pintuning.data import load_fewshot
        data = load_fewshot("tox21")
        for seed in args.seeds:  # seed-major, so an interrupted run leaves whole seeds
            for encoder in args.encoders:
                print(f"== {encoder} seed {seed}", flush=True)
                start = time.perf_counter()
                run = run_pintuning(data, seed, args.steps, args.steps, "paper", encoder)
                record = {"encoder": encoder, "seed": seed, "steps": args.steps,
                          "roc_auc": run["honest_roc_auc"], "pr_auc": run["honest_pr_auc"],
                          "per_task": run["per_task_final"], "seconds": time.perf_counter() - start,
                          "seconds_per_outer_step": run["seconds_per_outer_step"],
                          "loss_first_10": run["loss_first_10"], "loss_last_10": run["loss_last_10"],
                          "threads": args.threads, "torch": torch.__version__,
                          "device": "cuda" if torch.cuda.is_available() else "cpu"}
                results["runs"] = [r for r in results["runs"]
                                   if not (r["encoder"] == encoder and r["seed"] == seed)] + [record]
                results["summary"] = summarize(results["runs"])
                results["protocol"] = (
                    f"Tox21 10-shot, Pin-Tuning paper protocol, settings {TOX21_SETTINGS}; meta-trained "
                    "for 'steps' outer steps (the paper uses 2000; CPU budget here) and evaluated once at the "
                    "end (final model, no selection on test properties) on the fixed evaluation episodes of "
                    "each seed; ROC-AUC averaged over the 3 meta-test properties; std is the population std "
                    "over seeds.")
                out.write_text(json.dumps(results, indent=1) + "\n")
                print(f"   ROC-AUC {record['roc_auc']:.4f}  PR-AUC {record['pr_auc']:.4f}  "
                      f"({record['seconds']:.0f} s)", flush=True)
    if results["runs"]:
        plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
