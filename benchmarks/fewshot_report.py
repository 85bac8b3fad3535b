"""The few-shot report's tables and figures, generated from its cells (``fewshot_table.py`` computes them).

One row per (dataset, shots, method, Pin-Tuning's outer steps) with every protocol's mean ± sd over
seeds and the paper's number beside it (ToxCast: the nine GS-Meta groups averaged per seed, as the
paper does), every row of a seed on the support draws all its cells share (:func:`on_shared_supports`,
applied by :func:`aggregate` and :func:`per_property`); a budget table (steps, seeds, encoder, device,
wall time) shared with ``ablations.py``; bars with spread, learning curves and per-property ROC-AUC.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

TOXCAST = [f"toxcast-{g}" for g in ("APR", "ATG", "BSK", "CEETOX", "CLD", "NVS", "OT", "TOX21", "Tanguay")]
METHODS = ["pintuning", "frozen", "finetune", "protonet", "maml", "ecfp_rf", "ecfp_aux_rf"]
# ROC-AUC % of the paper's Table 1 (10-shot, 5-shot); GS-Meta and Pre-GNN as the issue quotes them
PUBLISHED = {
    "Pin-Tuning": {"tox21": (91.56, 90.95), "sider": (93.41, 92.02), "muv": (73.33, 70.71),
                   "toxcast": (84.94, 83.71), "pcba": (81.26, 79.23)},
    "GS-Meta": {"tox21": (86.67, 86.43)},
    "Pre-GNN": {"tox21": (82.14, 82.04)},
}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def _counts(values) -> str:
    """The distinct values, ascending, as "10" or "5, 10" ("—" when there are none)."""
    return ", ".join(str(v) for v in sorted(set(values))) or "—"


def budget_table(cells: list, name: str = "method", order: Sequence[str] = METHODS) -> list:
    """Markdown lines: the budget of every (dataset, shots, ``name``, outer steps) row, as its cells record it.

    Meta-trained cells state the wall time of meta-training (its evaluations included, summed over
    resumed chunks); other cells the wall time of the cell (fitting and scoring on every support draw).
    "evaluations" is how many evaluations during meta-training the published-emulated number is the
    best of (it grows with their number); "draws" how many fixed support draws per seed a cell scored.
    """
    rows: dict = {}
    for cell in cells:
        steps = cell["steps"] if "training_seconds" in cell else 0
        rows.setdefault((cell["dataset"], -cell["shots"], order.index(cell[name]), steps), []).append(cell)
    lines = [f"| dataset | shots | {name} | steps | seeds | evaluations | draws | encoder | device | "
             "wall time per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, shots, index, steps), group in sorted(rows.items()):
        encoders = ", ".join(sorted({c.get("encoder") or "ECFP4" for c in group}))
        devices = ", ".join(sorted({c["device"] for c in group}))
        if steps:
            wall = f"{_duration(np.mean([c['training_seconds'] for c in group]))} meta-training"
        else:
            wall = _duration(np.mean([c["wall_seconds"] for c in group]))
        evaluations = _counts(len(c["evaluations"]) for c in group if c.get("evaluations"))
        draws = _counts(len(c["eval_seeds"]) for c in group if "eval_seeds" in c)
        lines.append(f"| {dataset} | {-shots} | {order[index]} | {steps or '—'} | {len(group)} | {evaluations} | "
                     f"{draws} | {encoders} | {devices} | {wall} |")
    return lines


def budget_section(cells: list, name: str = "method", order: Sequence[str] = METHODS) -> list:
    """Markdown lines of a report's "Budgets" section: its heading, how to read CPU times, :func:`budget_table`."""
    return ["## Budgets", "", "CPU times are from a shared 2-core machine, usually with a second job running.", "",
            *budget_table(cells, name, order)]


def on_shared_supports(cells: list) -> list:
    """The cells with their per-draw scores (honest, deployment, per property) cut to the support draws that
    every cell of the same (dataset, shots, seed) was scored on, so that each row of a seed averages over the
    same supports (cells computed with ``--draws 5`` beside cells with ``--draws 10``: the first five).

    Raises ValueError when two cells name one evaluation seed with different supports (the data or the
    episode sampler changed between their runs: their scores are not comparable)."""
    shared: dict = {}
    supports: dict = {}
    for cell in cells:
        key = (cell["dataset"], cell["shots"], cell["seed"])
        shared[key] = shared.get(key, set(cell["eval_seeds"])) & set(cell["eval_seeds"])
        for eval_seed, digest in zip(cell["eval_seeds"], cell["supports"]):
            if supports.setdefault((*key[:2], eval_seed), digest) != digest:
                raise ValueError(f"{key[0]} {key[1]}-shot, evaluation seed {eval_seed}: cells were scored on "
                                 "different supports; recompute the older cells")
    cut = []
    for cell in cells:
        keep = [i for i, e in enumerate(cell["eval_seeds"]) if e in shared[(cell["dataset"], cell["shots"], cell["seed"])]]

        def draws(values: list) -> list:
            return [values[i] for i in keep]
        cell = {**cell, "eval_seeds": draws(cell["eval_seeds"]), "supports": draws(cell["supports"])}
        cell.update({p: draws(cell[p]) for p in ("honest", "deployment") if p in cell})
        if "honest_per_task" in cell:
            cell["honest_per_task"] = {task: draws(v) for task, v in cell["honest_per_task"].items()}
        cut.append(cell)
    return cut


def shared_draws_line(cells: list) -> str:
    """How many support draws per seed the rows of each (dataset, shots) share (:func:`on_shared_supports`)."""
    counts: dict = {}
    for cell in on_shared_supports(cells):
        counts.setdefault((cell["dataset"], cell["shots"]), set()).add(len(cell["eval_seeds"]))
    return ("Support draws per seed, shared by every row of a dataset and shot count (draws a cell has beyond "
            "them are left out of the honest and deployment numbers): " +
            "; ".join(f"{d} {s}-shot {' or '.join(map(str, sorted(n)))}{' (by seed)' if len(n) > 1 else ''}"
                      for (d, s), n in sorted(counts.items())) + ".")


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}" if len(values) > 1 else \
        f"{100 * values.mean():.2f}"


def aggregate(cells: list, toxcast_mean: bool = True) -> dict:
    """Per (dataset, shots, method, Pin-Tuning's outer steps): per-seed numbers of each protocol; ToxCast
    groups averaged per seed (``toxcast_mean``) or each a dataset of its own.

    A ToxCast mean covers the same groups for each seed of its row: all nine, over the seeds that have all
    nine, when one has (the paper's mean); otherwise the groups that every seed has. Groups or seeds left out
    are in the group-by-group table only; a row whose seeds share no group is left out. Every cell counts
    only the support draws it shares with the other cells of its seed (:func:`on_shared_supports`)."""
    table: dict = {}
    for cell in on_shared_supports(cells):
        name = "toxcast" if toxcast_mean and cell["dataset"].startswith("toxcast-") else cell["dataset"]
        steps = cell.get("steps", "") if cell["method"] == "pintuning" else ""   # one row per meta-training budget
        row = table.setdefault(f"{name}|{cell['shots']}|{cell['method']}|{steps}", {"per_seed": {}})
        group_row = row["per_seed"].setdefault(cell["seed"], {}).setdefault(cell["dataset"], {})
        for protocol in ("published", "honest", "deployment"):
            if protocol in cell:
                group_row[protocol] = cell[protocol] if protocol == "published" else float(np.mean(cell[protocol]))
    for key in list(table):
        row = table[key]
        if key.startswith("toxcast|"):   # the paper's mean: all nine groups, on the seeds that have them all
            complete = {seed: per_group for seed, per_group in row["per_seed"].items() if set(TOXCAST) <= set(per_group)}
            row["per_seed"] = complete or row["per_seed"]
        groups = sorted(set.intersection(*(set(per_group) for per_group in row["per_seed"].values())))
        if not groups:
            del table[key]
            continue
        row["groups"] = groups
        for seed, per_group in row["per_seed"].items():    # the mean over ToxCast groups (one value elsewhere)
            protocols = {p for group in groups for p in per_group[group]}
            row["per_seed"][seed] = {p: float(np.mean([per_group[g][p] for g in groups if p in per_group[g]]))
                                     for p in sorted(protocols)}
    return table


def _protocol_text(values: list, n_seeds: int) -> str:
    """Mean ± sd of one protocol over the seeds that have it (a rescored model may lack the published one)."""
    if not values:
        return "—"
    return _mean_sd(values) + (f" ({len(values)} of {n_seeds} seeds)" if len(values) < n_seeds else "")


def _row_order(key: str) -> tuple:
    name, shots, method, steps = key.split("|")
    return name, -int(shots), METHODS.index(method), int(steps or 0)


def paper_numbers(keys: Sequence[str]) -> list:
    """The paper's Table 1 ROC-AUC % for each ``dataset|shots|method|steps`` row key: Pin-Tuning rows only,
    None elsewhere (the table's paper column and the bar plot's markers)."""
    numbers = []
    for key in keys:
        name, shots, method, _ = key.split("|")
        paper = PUBLISHED["Pin-Tuning"].get(name) if method == "pintuning" else None
        numbers.append(paper[0 if shots == "10" else 1] if paper else None)
    return numbers


def _partial_groups(name: str, row: dict) -> str:
    """" (k of 9 groups)" for a ToxCast mean over fewer groups than the paper's, "" otherwise."""
    partial = name == "toxcast" and len(row["groups"]) < len(TOXCAST)
    return f" ({len(row['groups'])} of {len(TOXCAST)} groups)" if partial else ""


def _rows(table: dict) -> list:
    """Markdown rows of an :func:`aggregate` table, with the paper's Pin-Tuning number where there is one."""
    lines = ["| dataset | shots | method | steps | seeds | published (emulated) | honest | deployment | paper |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(table, key=_row_order):
        name, shots, method, steps = key.split("|")
        row = table[key]
        seeds = sorted(row["per_seed"])
        cells_ = [_protocol_text([row["per_seed"][s][p] for s in seeds if p in row["per_seed"][s]], len(seeds))
                  for p in ("published", "honest", "deployment")]
        paper = paper_numbers([key])[0]
        paper_text = "—" if paper is None else f"{paper:.2f}"
        groups = _partial_groups(name, row)
        if groups and paper is not None:
            paper_text += f" (all {len(TOXCAST)})"
        lines.append(f"| {name}{groups} | {shots} | {method} | {steps or '—'} | {len(seeds)} | {' | '.join(cells_)} | "
                     f"{paper_text} |")
    return lines


def report(cells: list) -> str:
    lines = ["# Few-shot report (generated by benchmarks/fewshot_table.py)", "",
             "ROC-AUC % (mean ± sd over seeds). *published*: best of the evaluations during meta-training, fresh "
             "supports at each (the official code's number); *honest*: final model, mean over fixed support draws; "
             "*deployment*: no auxiliary labels, per-molecule scoring, same supports. Baselines: honest protocol, "
             "same supports. Our encoder is the shipped GCN unless a cell says otherwise; the paper used GIN.", "",
             *_rows(aggregate(cells)), "", shared_draws_line(cells)]
    toxcast = [cell for cell in cells if cell["dataset"].startswith("toxcast-")]
    if toxcast:
        lines += ["", "## ToxCast, group by group", "",
                  "The ToxCast rows above are means over these groups (per seed); the paper reports only the mean "
                  "over all nine.", "", *_rows(aggregate(toxcast, toxcast_mean=False))]
    lines += ["", "Published numbers of other methods (paper's Table 1): " +
              "; ".join(f"{m} {d} {v[0]:.2f} / {v[1]:.2f}" for m, rows in PUBLISHED.items() if m != "Pin-Tuning"
                        for d, v in rows.items()),
              "", *budget_section(cells)]
    return "\n".join(lines) + "\n"


def plot(cells: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepchem_pintuning.plotting import evaluation_curves
    table = aggregate(cells)
    keys = sorted(table, key=_row_order)
    width = max(8, 0.35 * len(keys))
    fig, (ax, curves) = plt.subplots(2, 1, figsize=(width, 9), gridspec_kw={"height_ratios": [4, 3.5]})
    for i, key in enumerate(keys):
        row = table[key]
        for offset, protocol, colour in ((-0.25, "published", "tab:blue"), (0, "honest", "tab:orange"),
                                         (0.25, "deployment", "tab:green")):
            values = [v[protocol] for v in row["per_seed"].values() if protocol in v]
            if values:
                ax.bar(i + offset, 100 * np.mean(values), 0.25, yerr=100 * np.std(values), color=colour,
                       label=protocol if i == 0 or protocol not in ax.get_legend_handles_labels()[1] else None)
    partial = [_partial_groups(key.split("|")[0], table[key]) for key in keys]
    paper = [np.nan if v is None or groups else v for v, groups in zip(paper_numbers(keys), partial)]
    ax.plot(range(len(keys)), paper, "k_", markersize=14, label="paper (GIN, 2,000 steps; ToxCast: all 9 groups)")
    ax.set_xticks(range(len(keys)), [" ".join(k.rstrip("|").split("|")) + (" steps" if k.split("|")[3] else "") + g
                                     for k, g in zip(keys, partial)], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ROC-AUC (%)")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=8)
    # learning curves: Pin-Tuning's evaluations during meta-training (fresh supports each), one line per seed
    runs: dict = {}
    for cell in cells:
        if cell["method"] == "pintuning":
            fixed = "" if "published" in cell else ", fixed supports"
            runs.setdefault(f"{cell['dataset']} {cell['shots']}-shot {cell['steps']} steps{fixed}", []).append(
                cell["evaluations"])
    evaluation_curves(runs, ax=curves, key="roc_auc", title="Pin-Tuning's evaluations during meta-training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    groups = per_property(cells)
    if groups:   # cells from before per-property scores were kept have none
        fig = plot_per_property(groups)
        fig.savefig(path.with_name(f"{path.stem}_per_property.png"), dpi=120)
        plt.close(fig)


def per_property(cells: list) -> dict:
    """``(dataset, shots) -> method -> property -> honest ROC-AUC``, the mean over support draws and seeds
    (Pin-Tuning per meta-training budget: ``"pintuning 100 steps"``), on the draws the cells of a seed share
    (:func:`on_shared_supports`)."""
    found: dict = {}
    for cell in on_shared_supports(cells):
        method = f"pintuning {cell['steps']} steps" if cell["method"] == "pintuning" else cell["method"]
        for task, values in cell.get("honest_per_task", {}).items():
            found.setdefault((cell["dataset"], cell["shots"]), {}).setdefault(method, {}).setdefault(
                task, []).extend(values)
    return {key: {method: {task: float(np.mean(v)) for task, v in tasks.items()} for method, tasks in methods.items()}
            for key, methods in sorted(found.items())}


def plot_per_property(groups: dict):
    """One panel per (dataset, shots): grouped bars, one group per meta-test property, one bar per method."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.2 * len(groups)), squeeze=False)
    for ax, ((dataset, shots), methods) in zip(axes[:, 0], groups.items()):
        names = sorted(methods, key=lambda m: (METHODS.index(m.split()[0]), m))
        tasks = sorted({t for m in names for t in methods[m]})
        width = 0.8 / len(names)
        for j, method in enumerate(names):
            ax.bar(np.arange(len(tasks)) + (j - (len(names) - 1) / 2) * width,
                   [100 * methods[method].get(t, np.nan) for t in tasks], width, label=method)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("ROC-AUC (%)")
        ax.set_ylim(40, 100)
        ax.set_title(f"{dataset} {shots}-shot, honest protocol, per meta-test property")
        ax.legend(fontsize=7, ncol=len(names))
    fig.tight_layout()
    return fig
