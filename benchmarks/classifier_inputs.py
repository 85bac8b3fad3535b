"""What Pin-Tuning's classifier reads: honest ROC-AUC with one block of its input replaced at prediction.

The classifier sees, per molecule, ``[frozen, molecule context, property context, adapted]``
(:meth:`deepchem_pintuning.pintuning.PinTuning.forward`). The ablations (``ablations.py``) retrain
without a part; this diagnostic keeps a trained full model and, at prediction only (after the usual
adaptation step on the support), replaces one block:

* ``adapted -> frozen``: the adapted encoder's vectors (MP-Adapters and Emb-BWC-tuned embeddings)
  replaced by the frozen encoder's, i.e. the encoder's adaptation removed;
* ``<block> -> mean``: a block replaced by its mean over the molecules of the context graph (support
  + query chunk), so that block no longer tells molecules apart. The property context is the same
  for every molecule, so it has no such row.

The same pass measures, over the query molecules and in units of the frozen vectors' spread between
molecules ``||frozen - mean(frozen)||``, how the adapted block differs from the frozen one, to tell
"not read" from "not moved" (:func:`spread_units`):

* ``from_frozen``: ``||adapted - frozen||`` (0 when the adaptation changed nothing, about 1 when it
  moved each molecule as far as molecules lie apart);
* ``spread``: ``||adapted - mean(adapted)||``, how much the adapted block still tells molecules
  apart (1: as much as the frozen block).

All conditions are scored in one pass (a forward hook on the classifier), on the meta-trained
checkpoints that ``fewshot_table.py`` / ``ablations.py`` leave under ``--checkpoint-dir``, with the
honest protocol's support draws of each seed. One JSON per checkpoint under ``--cell-dir``
(resumable); ``benchmarks/results/classifier_inputs.{json,md,png}``::

    python benchmarks/classifier_inputs.py --draws 5
    python benchmarks/classifier_inputs.py --report-only
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot_table import cell_file, eval_seeds, support_digest  # noqa: E402

BLOCKS = ("frozen", "molecule_context", "property_context", "adapted")
# a full model's meta-training folder (fewshot_table.pintuning_cell); a variant's has its tag after the encoder
CHECKPOINT = re.compile(r"(?P<dataset>.+?)-(?P<shots>\d+)shot-(?P<encoder>\w+)-(?P<steps>\d+)steps-seed(?P<seed>\d+)$")


def _block(features: torch.Tensor, name: str) -> slice:
    width = features.shape[1] // len(BLOCKS)
    start = BLOCKS.index(name) * width
    return slice(start, start + width)


def _replaced(features: torch.Tensor, target: str, source: str | None) -> torch.Tensor:
    """``features`` with block ``target`` replaced by block ``source``, or by its row mean when None."""
    out = features.clone()
    part = _block(features, target)
    out[:, part] = features[:, part].mean(0, keepdim=True) if source is None else features[:, _block(features, source)]
    return out


def spread_units(adapted: torch.Tensor, frozen: torch.Tensor) -> Dict[str, float]:
    """``from_frozen`` and ``spread`` of the adapted rows (module docstring), in units of the frozen rows' spread."""
    unit = (frozen - frozen.mean(0)).norm()
    return {"from_frozen": float((adapted - frozen).norm() / unit),
            "spread": float((adapted - adapted.mean(0)).norm() / unit)}


CONDITIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "intact": lambda f: f,
    "adapted -> frozen": lambda f: _replaced(f, "adapted", "frozen"),
    "adapted -> mean": lambda f: _replaced(f, "adapted", None),
    "frozen -> mean": lambda f: _replaced(f, "frozen", None),
    "molecule_context -> mean": lambda f: _replaced(f, "molecule_context", None),
    "structure blocks -> mean": lambda f: _replaced(_replaced(f, "frozen", None), "adapted", None),
}


def scores_by_condition(model, data, task: str, eval_seed: int) -> dict:
    """Query scores of one property's honest-protocol episode under every condition, plus ``labels`` and
    the query rows' ``frozen`` and ``adapted`` blocks (tensors).

    Runs the reference prediction path (``evaluate_fewshot(fast=False)``); the hook on the classifier
    records, in eval mode only (the adaptation step runs as usual), each condition's logits of the
    query rows. ``intact`` is checked against the scores the evaluation itself returns.
    """
    n_support = 2 * model.config.n_shot
    recorded = {name: [] for name in CONDITIONS}
    queries = []

    def hook(module, inputs, output):
        if module.training:
            return
        features = inputs[0]
        for name, condition in CONDITIONS.items():
            recorded[name].append(module.forward(condition(features))[n_support:].squeeze(-1))   # no re-entry
        queries.append(features[n_support:])

    handle = model.model.classifier.register_forward_hook(hook)
    try:
        result = model.evaluate_fewshot(data, seed=eval_seed, tasks=[task], fast=False, return_scores=True)
    finally:
        handle.remove()
    scores = {name: torch.sigmoid(torch.cat(parts)).cpu().numpy() for name, parts in recorded.items()}
    reference = np.asarray(result["per_task"][task]["scores"])
    if not np.allclose(scores["intact"], reference, atol=1e-6):
        raise RuntimeError("the hooked classifier does not reproduce the evaluation's own scores")
    scores["labels"] = np.asarray(result["per_task"][task]["labels"])
    features = torch.cat(queries)
    scores.update(frozen=features[:, _block(features, "frozen")], adapted=features[:, _block(features, "adapted")])
    return scores


def finished_cell(name: dict, results: Path) -> dict | None:
    """The few-shot report's or the ablations' cell of a checkpoint's full model (``name``: the folder name's
    parts, :data:`CHECKPOINT`), once its training finished."""
    key = (name["dataset"], int(name["shots"]))
    for folder, method in (("ablations", "full"), ("fewshot_table", "pintuning")):
        path = results / folder / cell_file(*key, method, int(name["seed"]), int(name["steps"]))
        if path.exists():
            return json.loads(path.read_text())
    return None


def knockout_cell(folder: Path, name: dict, cell: dict, draws: int) -> dict:
    """ROC-AUC of every condition and the adapted block's :func:`spread_units`, per support draw (mean over the
    test properties), for one checkpoint.

    ``name`` holds the folder name's parts (:data:`CHECKPOINT`); ``cell`` is the checkpoint's finished
    benchmark cell: its first ``draws`` support draws are scored, and ``intact`` must give its honest numbers
    again (``intact_vs_cell``, the largest difference)."""
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.model import PinTuningModel
    model = PinTuningModel.load(str(folder), device="cpu")
    if model.config.separate_bn_batches:   # the hook takes the support rows first in one classifier call
        raise ValueError(f"{folder.name}: support and query in separate batches (official preset) is not supported")
    data = load_fewshot(name["dataset"])
    seeds = cell["eval_seeds"][:draws]
    if seeds != eval_seeds(int(name["seed"]), len(seeds)):
        raise ValueError(f"{folder.name}: the cell's support draws are not the honest protocol's")
    start = time.perf_counter()
    roc = {condition: [] for condition in CONDITIONS}
    adapted_block = {"from_frozen": [], "spread": []}
    for eval_seed in seeds:
        per_task = {condition: [] for condition in CONDITIONS}
        units = []
        for task in data.test_tasks:
            scores = scores_by_condition(model, data, task, eval_seed)
            for condition in CONDITIONS:
                per_task[condition].append(roc_auc_score(scores["labels"], scores[condition]))
            units.append(spread_units(scores["adapted"], scores["frozen"]))
        for condition in CONDITIONS:
            roc[condition].append(float(np.mean(per_task[condition])))
        for measure, values in adapted_block.items():
            values.append(float(np.mean([u[measure] for u in units])))
    return {"checkpoint": folder.name, "dataset": name["dataset"], "shots": int(name["shots"]),
            "encoder": name["encoder"], "steps": int(name["steps"]), "seed": int(name["seed"]),
            "eval_seeds": seeds, "supports": [support_digest(data, int(name["shots"]), e) for e in seeds],
            "roc_auc": roc, "adapted_block": adapted_block,
            "intact_vs_cell": float(np.max(np.abs(np.subtract(roc["intact"], cell["honest"][:draws])))),
            "wall_seconds": time.perf_counter() - start}


def _groups(cells: list) -> list:
    """``((dataset, shots, steps), cells)`` pairs, one per table block and plot colour."""
    key = lambda c: (c["dataset"], c["shots"], c["steps"])   # noqa: E731
    groups = sorted({key(c) for c in cells}, key=lambda g: (g[0], -g[1], g[2]))
    return [(group, [c for c in cells if key(c) == group]) for group in groups]


def _changes(cells: list, condition: str) -> list:
    """Per cell (seed): the condition's ROC-AUC minus the intact model's, in points, on the same draws."""
    return [100 * (np.mean(c["roc_auc"][condition]) - np.mean(c["roc_auc"]["intact"])) for c in cells]


def report(cells: list) -> str:
    """Markdown: per (dataset, shots, steps), each condition's honest ROC-AUC and its paired change."""
    lines = ["# What the classifier reads (generated by benchmarks/classifier_inputs.py)", "",
             "A trained full Pin-Tuning model (no retraining); at prediction only, one block of the classifier's "
             "input `[frozen, molecule context, property context, adapted]` is replaced (module docstring). Honest "
             "protocol on the support draws of the model's benchmark cell. ROC-AUC %: mean ± sd over seeds of each "
             "seed's mean over draws; change: condition − intact, paired on the same model and supports, mean (min "
             "to max over seeds).",
             "", f"Check: `intact` gives the benchmark cells' honest ROC-AUC again to within "
             f"{max((c['intact_vs_cell'] for c in cells), default=0):.1e} (largest difference over all draws).",
             "", "| dataset | shots | steps | seeds | draws | condition | ROC-AUC | change |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, shots, steps), mine in _groups(cells):
        draws = sorted({len(c["eval_seeds"]) for c in mine})
        for condition in CONDITIONS:
            values = [100 * np.mean(c["roc_auc"][condition]) for c in mine]
            changes = _changes(mine, condition)
            spread = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
            change = "—" if condition == "intact" else \
                f"{np.mean(changes):+.2f} ({min(changes):+.2f} to {max(changes):+.2f})"
            lines.append(f"| {dataset} | {shots} | {steps} | {len(mine)} | {'/'.join(map(str, draws))} | "
                         f"{condition} | {np.mean(values):.2f}{spread} | {change} |")
    lines += ["", "## The adapted block against the frozen one", "",
              "Over the query molecules, in units of the frozen vectors' spread between molecules "
              "‖frozen − mean(frozen)‖ (module docstring): how far the adapted vectors lie from the frozen ones, "
              "and how much they still differ between molecules. Mean (min to max over seeds) of each seed's mean "
              "over draws and test properties.", "",
              "| dataset | shots | steps | seeds | ‖adapted − frozen‖ | spread of adapted |",
              "|---|---|---|---|---|---|"]
    for (dataset, shots, steps), mine in _groups(cells):
        row = []
        for measure in ("from_frozen", "spread"):
            values = [np.mean(c["adapted_block"][measure]) for c in mine]
            row.append(f"{np.mean(values):.3f} ({min(values):.3f} to {max(values):.3f})")
        lines.append(f"| {dataset} | {shots} | {steps} | {len(mine)} | {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def plot(cells: list, path: Path) -> None:
    """Each condition's change (condition − intact, ROC-AUC points): a bar per group, a dot per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = _groups(cells)
    conditions = [c for c in CONDITIONS if c != "intact"]
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.3 * len(conditions) * max(1, len(groups))))
    height = 0.8 / max(1, len(groups))
    for g, (group, mine) in enumerate(groups):
        for k, condition in enumerate(conditions):
            changes = _changes(mine, condition)
            y = k + (g - (len(groups) - 1) / 2) * height
            ax.barh(y, np.mean(changes), height=height, color=f"C{g}",
                    label=f"{group[0]} {group[1]}-shot, {group[2]} steps ({len(mine)} seeds)" if k == 0 else None)
            ax.plot(changes, [y] * len(changes), "k.", markersize=4)
    ax.set_yticks(range(len(conditions)), conditions)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("ROC-AUC change at prediction (points), honest protocol")
    ax.set_title("Pin-Tuning's classifier with one input block replaced")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default="runs/benchmarks/meta_trained")
    parser.add_argument("--cell-dir", default="benchmarks/results/classifier_inputs")
    parser.add_argument("--out", default="benchmarks/results/classifier_inputs.json")
    parser.add_argument("--datasets", nargs="+", default=["tox21", "sider"])
    parser.add_argument("--results", default="benchmarks/results", help="where the finished cells are")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cell_dir = Path(args.cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for folder in sorted(Path(args.checkpoint_dir).glob("*")):
            match = CHECKPOINT.match(folder.name)
            if not match or match["dataset"] not in args.datasets or not (folder / "pintuning_config.json").exists():
                continue
            target, name = cell_dir / f"{folder.name}.json", match.groupdict()
            cell = None if target.exists() else finished_cell(name, Path(args.results))
            if cell is None:
                continue
            print(f"scoring {folder.name}", flush=True)
            target.write_text(json.dumps(knockout_cell(folder, name, cell, args.draws), indent=1))
    cells = [json.loads(p.read_text()) for p in sorted(cell_dir.glob("*.json"))]
    Path(args.out).write_text(json.dumps({"cells": cells}, indent=1))
    Path(args.out).with_suffix(".md").write_text(report(cells))
    if cells:
        plot(cells, Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
