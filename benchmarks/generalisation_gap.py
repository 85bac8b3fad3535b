"""Generalisation gap of meta-trained Pin-Tuning models: the honest protocol on the meta-*training*
properties beside the meta-test ones, with a frozen encoder + logistic regression on the same supports.

Why: on MUV the meta-training loss falls steadily while the test properties stay between 55 and 65
ROC-AUC, below a frozen encoder with logistic regression. Either the meta-learner fails to fit, or it
fits the training properties and does not transfer. MUV has about 30 actives per property, so
meta-training shows every training active to the model many times. Scoring the training properties with
fresh supports (the other training properties as context, never the property itself:
``evaluation_episode``) tells the two apart; Tox21 and SIDER, with hundreds of actives per property, are
the controls.

One JSON per model folder under ``benchmarks/results/generalisation_gap/``; the table
``benchmarks/results/generalisation_gap.{json,md,png}`` is generated from them.

    python benchmarks/generalisation_gap.py --cpu --draws 3 \\
        --models runs/benchmarks/meta_trained/muv-10shot-gcn_supervised_contextpred-500steps-seed0
    python benchmarks/generalisation_gap.py --report-only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot_table import cell_device, eval_seeds  # noqa: E402
from pintuning_tox21 import RESULTS  # noqa: E402

CELLS = RESULTS / "generalisation_gap"


def actives_per_property(data, tasks) -> float:
    """Median number of labelled actives of ``tasks``."""
    return float(np.median([np.nansum(data.labels[:, data.task_index(t)] == 1) for t in tasks]))


def as_test(data, tasks):
    """``data`` with ``tasks`` as its meta-test properties (a baseline scores ``data.test_tasks``)."""
    return dataclasses.replace(data, test_tasks=list(tasks))


def training_loss(folder: Path, window: int = 50) -> dict:
    """Mean meta-training query BCE of the first and of the last ``window`` outer steps of a saved run."""
    history = json.loads((folder / "history.json").read_text())["history"]
    losses = [record["query_bce"] for record in history if "query_bce" in record]
    return {"window": window, "first": float(np.mean(losses[:window])), "last": float(np.mean(losses[-window:]))}


def _load(folder: Path, args):
    """A saved model on the cell's device, its dataset, seed and device name."""
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.model import PinTuningModel

    device, device_name = cell_device(args)
    model = PinTuningModel.load(str(folder), device=device)
    data = load_fewshot(folder.name.split(f"-{model.config.n_shot}shot-")[0])
    return model, data, int(folder.name.rsplit("seed", 1)[1]), device_name


def gap_cell(folder: Path, draws: int, args) -> dict:
    """Pin-Tuning (honest protocol) and frozen + LR on the training and the test properties of one model."""
    from deepchem_pintuning.baselines import evaluate_baseline_draws

    model, data, seed, device_name = _load(folder, args)
    shots, seeds = model.config.n_shot, eval_seeds(seed, draws)
    start = time.perf_counter()
    splits = {"train": data.train_tasks, "test": data.test_tasks}
    cell = {"model": folder.name, "dataset": data.name, "shots": shots, "steps": model._global_step, "seed": seed,
            "encoder": model.config.encoder, "eval_seeds": seeds, "device": device_name,
            "query_chunk": model.config.eval_query_chunk, "training_query_bce": training_loss(folder),
            "actives_per_property": {s: actives_per_property(data, t) for s, t in splits.items()}}
    for split, tasks in splits.items():
        cell[f"pintuning_{split}"] = [model.evaluate_fewshot(data, seed=e, tasks=tasks)["roc_auc"] for e in seeds]
        cell[f"frozen_{split}"] = [d["roc_auc"] for d in evaluate_baseline_draws(
            "frozen", as_test(data, tasks), shots, seed, seeds, encoder=model.config.encoder)]
    cell["wall_seconds"] = time.perf_counter() - start
    return cell


def add_query_chunks(folder: Path, cell: dict, chunks, args) -> dict:
    """``cell`` with Pin-Tuning's test-property scores, same draws, at other query chunk sizes (query molecules
    per context graph; training episodes have 16): ``pintuning_test_by_query_chunk[str(size)]``. Sizes the
    cell has are kept."""
    model, data, _, _ = _load(folder, args)
    scores = cell.setdefault("pintuning_test_by_query_chunk", {})
    for size in chunks:
        if str(size) not in scores:
            model.config.eval_query_chunk = size
            scores[str(size)] = [model.evaluate_fewshot(data, seed=e)["roc_auc"] for e in cell["eval_seeds"]]
    return cell


def _row_order(cell: dict) -> tuple:
    """Rows and bars by dataset, more shots first, then budget and seed."""
    return cell["dataset"], -cell["shots"], cell["steps"], cell["seed"]


def _pct(values) -> str:
    return f"{100 * np.mean(values):.1f}" + (f" ± {100 * np.std(values, ddof=1):.1f}" if len(values) > 1 else "")


def report(cells: list) -> str:
    """The markdown table: one row per model, mean ± sd over its support draws."""
    lines = ["# Generalisation gap (generated by benchmarks/generalisation_gap.py)", "",
             "ROC-AUC %, honest protocol (final model, fixed support draws; mean ± sd over draws). *train*: the "
             "meta-training properties, each scored with fresh supports and the other training properties as "
             "context; *test*: the meta-test properties (the few-shot report's draws). Frozen + LR: the same "
             "encoder frozen, logistic regression on the same supports. *Query chunk*: query molecules per context "
             "graph at evaluation (training episodes have 16); the last column scores the test properties at other "
             "sizes, same model and draws.", "",
             "| model | steps | draws | actives per property (median, train / test) | Pin-Tuning train "
             "| Pin-Tuning test | gap | frozen + LR train | frozen + LR test | meta-training query BCE, first → "
             "last 50 steps | query chunk | Pin-Tuning test, other query chunks | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=_row_order):
        gap = 100 * (np.mean(c["pintuning_train"]) - np.mean(c["pintuning_test"]))
        actives, loss = c["actives_per_property"], c["training_query_bce"]
        others = "; ".join(f"{size}: {_pct(v)}" for size, v in sorted(
            c.get("pintuning_test_by_query_chunk", {}).items(), key=lambda item: int(item[0]))) or "—"
        lines.append(f"| {c['dataset']} {c['shots']}-shot seed {c['seed']} | {c['steps']} | {len(c['eval_seeds'])} "
                     f"| {actives['train']:.0f} / {actives['test']:.0f} | {_pct(c['pintuning_train'])} "
                     f"| {_pct(c['pintuning_test'])} | {gap:+.1f} | {_pct(c['frozen_train'])} "
                     f"| {_pct(c['frozen_test'])} | {loss['first']:.3f} → {loss['last']:.3f} | {c['query_chunk']} "
                     f"| {others} | {c['device']} |")
    return "\n".join(lines) + "\n"


def plot(cells: list, path: Path) -> None:
    """Bars per model: Pin-Tuning and frozen + LR on the training and the test properties (sd over draws)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = sorted(cells, key=_row_order)
    bars = [("pintuning_train", "Pin-Tuning, training properties"), ("pintuning_test", "Pin-Tuning, test properties"),
            ("frozen_train", "frozen + LR, training properties"), ("frozen_test", "frozen + LR, test properties")]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 + 1.6 * len(cells)), 3.8))
    x = np.arange(len(cells))
    for i, (key, label) in enumerate(bars):
        ax.bar(x + (i - 1.5) * 0.2, [100 * np.mean(c[key]) for c in cells], 0.2, label=label,
               yerr=[100 * np.std(c[key], ddof=1) if len(c[key]) > 1 else 0 for c in cells], capsize=2,
               color=f"C{i // 2}", alpha=1.0 if key.endswith("train") else 0.5)
    ax.set_xticks(x, [f"{c['dataset']} {c['shots']}-shot\n{c['steps']} steps, seed {c['seed']}" for c in cells])
    ax.set_ylabel("ROC-AUC % (honest protocol)")
    ax.set_ylim(40, 100)
    ax.axhline(50, color="grey", lw=0.5)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cell_dir: Path, out: Path) -> None:
    cells = [json.loads(p.read_text()) for p in sorted(cell_dir.glob("*.json"))]
    out.write_text(json.dumps(cells, indent=1) + "\n")
    out.with_suffix(".md").write_text(report(cells))
    if cells:
        plot(cells, out.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[], help="meta-trained model folders")
    parser.add_argument("--draws", type=int, default=3, help="fixed support draws (the report's first ones)")
    parser.add_argument("--query-chunks", type=int, nargs="*", default=[],
                        help="also score the test properties at these query chunk sizes (the model's is 128)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is available")
    parser.add_argument("--cell-dir", default=str(CELLS))
    parser.add_argument("--out", default=str(RESULTS / "generalisation_gap.json"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    cell_dir = Path(args.cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    folders = [] if args.report_only else [Path(m) for m in args.models]
    for folder in folders:
        if not (folder / "pintuning_config.json").exists():
            parser.error(f"{folder} is not a saved PinTuningModel folder")
    for folder in folders:
        target = cell_dir / f"{folder.name}.json"
        if target.exists():
            print(f"{target.name}: done before, skipped")
        else:
            target.write_text(json.dumps(gap_cell(folder, args.draws, args), indent=1) + "\n")
        if args.query_chunks:
            cell = add_query_chunks(folder, json.loads(target.read_text()), args.query_chunks, args)
            target.write_text(json.dumps(cell, indent=1) + "\n")
    write_report(cell_dir, Path(args.out))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
