"""Summaries of the paper-protocol cells: mean +- sd over folds, paired tests, tables, figure.

:func:`write_report` reads every cell JSON written by
:class:`schnet_transfer.paper.Protocol` and writes ``<out>.json`` (all
numbers), ``<out>.md`` (tables generated from that JSON) and ``<out>.png``
(parity plots, learning curves and the pre-training size study, :mod:`schnet_transfer.plotting`).

Examples
--------
>>> from schnet_transfer.report import paired_comparison
>>> cells = [{"target": "hopv", "method": m, "pretrain": p, "fold": f, "size": "all", "mae": e}
...          for m, p, maes in [("painn_scratch", None, [0.30, 0.32, 0.31]),
...                             ("painn_finetune_v2", "moses", [0.25, 0.27, 0.33])]
...          for f, e in enumerate(maes)]
>>> result = paired_comparison(cells, "hopv", "painn_scratch", "painn_finetune_v2@moses")
>>> result["n_folds"], result["better_in"], round(result["mean_difference"], 4)
(3, 2, -0.0267)
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from .plotting import (cells_learning_curves, cells_parity, error_vs_size, load_cells, parity_plot,
                       size_study_plot)

__all__ = ["summarize", "paired_comparison", "main_sets", "comparisons", "size_study", "markdown", "write_report"]

METRICS = ("mae", "rmse", "r2")


def _model(cell: dict) -> str:
    return cell["method"] + (f"@{cell['pretrain']}" if cell.get("pretrain") else "")


def summarize(cells: Sequence[dict]) -> list[dict]:
    """Per target, model and size: mean, sample sd and per-fold values of MAE, RMSE, R2."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["target"], _model(c), str(c["size"]))].append(c)
    rows = []
    for (target, model, size), group in sorted(groups.items()):
        group = sorted(group, key=lambda c: c["fold"])
        epochs = sorted({(d.get("epochs"), d.get("pretrain_epochs"))
                         for d in (c.get("details", {}) for c in group) if d.get("epochs") is not None})
        row = {"target": target, "model": model, "size": size, "n_folds": len(group),
               "folds": [c["fold"] for c in group],
               "n_train": float(np.mean([c["n_train"] for c in group])),
               "epochs": [list(e) for e in epochs]}
        for m in METRICS:
            values = np.array([c[m] for c in group], float)
            row[m] = {"mean": float(values.mean()),
                      "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                      "per_fold": values.tolist()}
        rows.append(row)
    return rows


def paired_comparison(cells: Sequence[dict], target: str, reference: str, model: str,
                      size: str = "all", metric: str = "mae") -> dict | None:
    """``model`` minus ``reference`` per fold (negative: ``model`` better), on shared folds.

    Returns the per-fold differences, in how many folds ``model`` is better,
    the mean difference (absolute and relative to the reference), a paired
    t-test and a Wilcoxon signed-rank test (two-sided; with 5 folds its
    smallest possible p is 0.0625).  None when fewer than 2 folds are shared.
    """
    values = defaultdict(dict)
    for c in cells:
        if c["target"] == target and str(c["size"]) == size and _model(c) in (reference, model):
            values[_model(c)][c["fold"]] = c[metric]
    folds = sorted(set(values[reference]) & set(values[model]))
    if len(folds) < 2:
        return None
    ref = np.array([values[reference][f] for f in folds])
    new = np.array([values[model][f] for f in folds])
    diff = new - ref
    t_p = float(stats.ttest_rel(new, ref).pvalue) if np.ptp(diff) > 0 else float("nan")
    w_p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else float("nan")
    return {"target": target, "reference": reference, "model": model, "size": size,
            "metric": metric, "folds": folds, "n_folds": len(folds),
            "differences": diff.tolist(), "better_in": int((diff < 0).sum()),
            "mean_difference": float(diff.mean()),
            "relative_change": float(diff.mean() / ref.mean()),
            "t_test_p": t_p, "wilcoxon_p": w_p}


def main_sets(cells: Sequence[dict]) -> dict[str, str | None]:
    """Per target, the main pre-training set: the one with the most cells (it serves every method
    and training size; the size study's sets serve a few methods on whole folds)."""
    found = {}
    for target in {c["target"] for c in cells}:
        sets = Counter(c["pretrain"] for c in cells if c["target"] == target and c.get("pretrain"))
        found[target] = min(sets, key=lambda name: (-sets[name], name)) if sets else None
    return found


def comparisons(cells: Sequence[dict]) -> list[dict]:
    """Pre-trained vs scratch (plain and Delta), v1 vs v2, Delta vs plain, Delta vs calibrated xTB,
    and the size study, same method: each further pre-training set against the main one (the set
    with the most cells of a target, which serves every method), a set selected otherwise (e.g. by
    similarity to the target) against the random set of the same size, and a random set against the
    next smaller random set (what doubling the set does)."""
    pairs = []
    main_set = main_sets(cells)
    compared_with = _size_study_partners(cells)
    for target, size in sorted({(c["target"], str(c["size"])) for c in cells}):
        models = sorted({_model(c) for c in cells if c["target"] == target and str(c["size"]) == size})
        main = main_set[target]
        for m in models:
            if m.startswith("painn_finetune"):
                pairs.append((target, "painn_scratch", m, size))
            if m.startswith("painn_finetune_v1@"):   # v1 against v2 on the same pre-training
                pairs.append((target, m.replace("_v1@", "_v2@"), m, size))
            elif m.startswith("painn_delta_finetune"):
                pairs.append((target, "painn_delta_scratch", m, size))
            method, _, tag = m.partition("@")
            if tag and not method.startswith("painn_pretrained"):
                for other in dict.fromkeys([main, compared_with.get((target, tag))]):
                    if other and other != tag and f"{method}@{other}" in models:
                        pairs.append((target, f"{method}@{other}", m, size))
        pairs.append((target, "painn_scratch", "painn_delta_scratch", size))
        pairs += [(target, "xtb_linear", m, size) for m in models if m.startswith("painn_delta")]
    found = (paired_comparison(cells, *p) for p in pairs)
    return [r for r in found if r is not None]


def _size_study_partners(cells: Sequence[dict]) -> dict[tuple[str, str], str | None]:
    """Per (target, pre-training set), the set it is paired with besides the main one: for a set
    chosen otherwise than at random, the random set of the same size; for a random set, the next
    smaller random set. Sets whose cells do not record their pre-training are left out."""
    sizes = {(c["target"], c["pretrain"]): (info["molecules"], info["selection"]) for c in cells
             if (info := c.get("details", {}).get("pretraining"))}
    random_sets = {key: n for key, (n, selection) in sizes.items() if selection == "random"}
    random_of_size = {(target, n): name for (target, name), n in random_sets.items()}
    partners = {}
    for (target, name), (n, selection) in sizes.items():
        if selection != "random":
            partners[(target, name)] = random_of_size.get((target, n))
        else:
            smaller = [(m, other) for (t, other), m in random_sets.items() if t == target and m < n]
            partners[(target, name)] = max(smaller)[1] if smaller else None
    return partners


# what every pre-training set after the first gets (paper_protocol.py): both label corrections, and
# Delta-learning, where the first set's pre-training helped most
SIZE_STUDY_METHODS = ("painn_finetune_v1", "painn_finetune_v2", "painn_delta_finetune")
SIZE_STUDY_REFERENCES = ("painn_scratch", "painn_delta_scratch", "xtb_linear")


def size_study(cells: Sequence[dict]) -> list[dict]:
    """Test MAE of the fine-tuned models per pre-training set (whole training folds).

    One row per target, method and pre-training set, with the set's size and selection as the
    cells record them (``details["pretraining"]``, :meth:`schnet_transfer.paper.Protocol.pretraining_info`)
    and the MAE's mean, sample sd and folds; cells without that record are left out.
    """
    chosen, infos = [], {}
    for c in cells:
        info = c.get("details", {}).get("pretraining")
        if info and c["method"] in SIZE_STUDY_METHODS and str(c["size"]) == "all":
            chosen.append(c)
            infos[(c["target"], _model(c))] = info
    rows = []
    for r in summarize(chosen):
        info = infos[(r["target"], r["model"])]
        rows.append({"target": r["target"], "method": r["model"].partition("@")[0], "pretrain": info["name"],
                     "molecules": info["molecules"], "selection": info["selection"], "folds": r["folds"],
                     "mae": r["mae"]})
    return sorted(rows, key=lambda r: (r["target"], r["selection"] != "random", r["molecules"], r["pretrain"]))


def _references(summary: Sequence[dict], target: str) -> dict[str, dict]:
    """The summary rows (whole training folds) of the models without pre-training, by model."""
    return {r["model"]: r for r in summary
            if r["target"] == target and r["size"] == "all" and r["model"] in SIZE_STUDY_REFERENCES}


def _size_study_lines(report: dict, target: str) -> list[str]:
    rows = [r for r in report["size_study"] if r["target"] == target]
    if len({r["pretrain"] for r in rows}) < 2:
        return []
    methods = [m for m in SIZE_STUDY_METHODS if any(r["method"] == m for r in rows)]
    lines = ["", "Size study: test MAE of the fine-tuned models per pre-training set, whole training "
             "folds (mean ± sd (folds)).", "",
             "| pre-training set | selection | molecules | " + " | ".join(f"`{m}`" for m in methods) + " |",
             "|---|---|---:|" + "---:|" * len(methods)]
    for name in dict.fromkeys(r["pretrain"] for r in rows):
        mine = {r["method"]: r for r in rows if r["pretrain"] == name}
        first = next(iter(mine.values()))
        cells = [f"{_fmt(mine[m]['mae'])} ({len(mine[m]['folds'])})" if m in mine else "—" for m in methods]
        lines.append(f"| `{name}` | {first['selection']} | {first['molecules']:,} | " + " | ".join(cells) + " |")
    references = _references(report["summary"], target)
    if references:
        lines += ["", "Without pre-training, same folds: " + "; ".join(
            f"`{m}` {_fmt(references[m]['mae'])} ({references[m]['n_folds']})"
            for m in SIZE_STUDY_REFERENCES if m in references) + "."]
    return lines


def _fmt(stat: dict, digits: int = 3) -> str:
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def markdown(report: dict) -> str:
    """Markdown tables of a report dictionary (:func:`write_report`)."""
    lines = ["# schnet_transfer at the paper protocol", "",
             "Generated by `benchmarks/schnet_transfer/paper_protocol.py` from "
             "`schnet_transfer_paper.json`; do not edit. Every number comes from the cells under "
             "`schnet_transfer_paper/cells/`; each cell records its own budget (epochs below; "
             "data sizes, device and package versions in the JSON).", ""]
    for target in sorted({r["target"] for r in report["summary"]}):
        unit = report["units"][target]
        rows = [r for r in report["summary"] if r["target"] == target]
        lines += [f"## {target}", "",
                  f"Test metrics over the folds (mean ± sample sd; MAE and RMSE in {unit}).", "",
                  "| model | training molecules | folds | epochs (pre-training) | MAE | RMSE | R² |",
                  "|---|---|---:|---|---:|---:|---:|"]
        order = sorted(rows, key=lambda r: (r["size"] != "all", r["size"] == "all" or int(r["size"]),
                                            r["mae"]["mean"]))
        for r in order:
            size = f"all ({r['n_train']:.0f})" if r["size"] == "all" else r["size"]
            epochs = ", ".join(f"{e}" + (f" ({p})" if p else "") for e, p in r["epochs"]) or "-"
            lines.append(f"| `{r['model']}` | {size} | {r['n_folds']} | {epochs} | {_fmt(r['mae'])} | "
                         f"{_fmt(r['rmse'])} | {_fmt(r['r2'], 2)} |")
        pairs = [p for p in report["comparisons"] if p["target"] == target]
        if pairs:
            lines += ["", "Paired over folds (model minus reference test MAE; negative: model "
                      "better).", "",
                      "| model | reference | training molecules | folds | better in | mean difference "
                      "| relative | t-test p | Wilcoxon p |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
            for p in pairs:
                lines.append(f"| `{p['model']}` | `{p['reference']}` | {p['size']} | {p['n_folds']} | "
                             f"{p['better_in']}/{p['n_folds']} | {p['mean_difference']:+.3f} | "
                             f"{100 * p['relative_change']:+.1f} % | {p['t_test_p']:.3f} | "
                             f"{p['wilcoxon_p']:.3f} |")
        lines += _size_study_lines(report, target)
        lines.append("")
    return "\n".join(lines)


def _figure(cells: Sequence[dict], report: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    targets, units = sorted({c["target"] for c in cells}), report["units"]
    fig, axes = plt.subplots(len(targets), 3, figsize=(15, 4.2 * len(targets)), squeeze=False)
    main = main_sets(cells)
    for row, target in zip(axes, targets):
        mine = [c for c in cells if c["target"] == target]
        # parity and learning curves: the main pre-training set's models (the size study has its panel)
        shown = ["painn_scratch", *(f"{m}@{main[target]}" for m in ("painn_finetune_v2", "painn_finetune_v1",
                                                                     "painn_delta_finetune")), "xtb_linear"]
        present = [m for m in shown if any(_model(c) == m and c["size"] == "all" for c in mine)]
        try:
            y, preds, folds = cells_parity(mine, methods=present)
            parity_plot(y, preds, units[target], ax=row[0],
                        title=f"{target}: test folds {', '.join(map(str, folds))} pooled")
        except ValueError:
            row[0].set_visible(False)
        curves = cells_learning_curves(mine, methods=shown + ["soap_krr"])
        error_vs_size(curves, units[target], ax=row[1], title=f"{target}: test MAE vs training size")
        rows = [r for r in report["size_study"] if r["target"] == target]
        if len({r["pretrain"] for r in rows}) < 2:
            row[2].set_visible(False)
            continue
        found = _references(report["summary"], target)
        references = {m: found[m]["mae"]["mean"] for m in SIZE_STUDY_REFERENCES[:2] if m in found}
        size_study_plot(rows, references, units[target], ax=row[2],
                        title=f"{target}: test MAE vs pre-training set size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def recorded_budgets(cells: Sequence[dict]) -> dict:
    """Every value each budget entry takes over the cells, and the pre-training sets they used.

    The report describes the cells, not the command that last rewrote it.  Epochs and
    pre-training epochs are those the PaiNN cells trained (``details``; a baseline trains none),
    the other entries those the cells' runs were given (``budget``).

    Examples
    --------
    >>> recorded_budgets([{"budget": {"epochs": 25, "accelerator": "cpu"}, "pretrain": None},
    ...                   {"budget": {"epochs": 30, "accelerator": "cpu"}, "pretrain": "a",
    ...                    "details": {"epochs": 30, "pretrain_epochs": 15}}])
    {'accelerator': ['cpu'], 'epochs': [30], 'pretrain_epochs': [15], 'pretrain_sets': ['a']}
    """
    trained = ("epochs", "pretrain_epochs")
    values: dict[str, list] = {}
    for cell in cells:
        given = {k: v for k, v in cell.get("budget", {}).items()
                 if k not in trained and k != "pretrain_sets"}
        done = {k: v for k, v in (cell.get("details") or {}).items() if k in trained and v is not None}
        for key, value in {**given, **done}.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    out = {k: sorted(v, key=json.dumps) for k, v in sorted(values.items())}
    out["pretrain_sets"] = sorted({c["pretrain"] for c in cells if c.get("pretrain")})
    return out


def write_report(cells_dir: str | Path, out: str | Path) -> dict:
    """Write ``<out>.json``, ``<out>.md`` and ``<out>.png`` from the cells under ``cells_dir``."""
    cells = load_cells(cells_dir)
    if not cells:
        raise ValueError(f"no cells under {cells_dir}")
    report = {"budget": recorded_budgets(cells), "units": {c["target"]: c["unit"] for c in cells},
              "cells": len(cells), "summary": summarize(cells), "comparisons": comparisons(cells),
              "size_study": size_study(cells)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report) + "\n")
    _figure(cells, report, out.with_suffix(".png"))
    return report
