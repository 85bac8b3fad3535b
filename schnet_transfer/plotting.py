"""Plots of the paper protocol: parity plots and test error against training-set size.

Both functions draw on a matplotlib ``Axes`` (a new figure when none is given)
and take plain arrays, so they serve the cells of
:mod:`schnet_transfer.paper` (``cells_parity`` / ``cells_learning_curves``
collect them) and any other predictions.  ``schnet-transfer plot parity`` and
``schnet-transfer plot curve`` draw them from a folder of cells.

Examples
--------
>>> import numpy as np
>>> from schnet_transfer.plotting import parity_plot, error_vs_size
>>> ax = parity_plot(np.array([1.0, 2.0, 3.0]), {"model": np.array([1.1, 1.9, 3.2])}, unit="eV")
>>> ax.get_xlabel(), len(ax.collections)
('reference (eV)', 1)
>>> ax = error_vs_size({"model": ([25, 50, 100], [0.3, 0.2, 0.15], [0.02, 0.02, 0.01])}, unit="eV")
>>> ax.get_ylabel(), len(ax.lines) >= 1
('test MAE (eV)', True)
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["parity_plot", "error_vs_size", "size_study_plot", "load_cells", "cells_parity", "cells_learning_curves"]


def _axes(ax):
    return plt.subplots(figsize=(4.5, 4.0))[1] if ax is None else ax


def parity_plot(y_true: np.ndarray, predictions: Mapping[str, np.ndarray], unit: str = "",
                ax=None, title: str | None = None):
    """Predicted against reference values, one scatter per model, with the line y = x.

    Parameters
    ----------
    y_true
        Reference values, shared by all models.
    predictions
        Model name -> predictions of the same molecules; the legend shows the MAE.
    unit
        Unit for the axis labels.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    y_true = np.asarray(y_true, float)
    values = [y_true]
    for name, pred in predictions.items():
        pred = np.asarray(pred, float)
        if pred.shape != y_true.shape:
            raise ValueError(f"{name}: {pred.shape} predictions for {y_true.shape} references")
        ax.scatter(y_true, pred, s=8, alpha=0.6,
                   label=f"{name} (MAE {np.abs(pred - y_true).mean():.3g})")
        values.append(pred)
    low, high = float(min(v.min() for v in values)), float(max(v.max() for v in values))
    ax.plot([low, high], [low, high], color="black", lw=0.8, label="y = x")
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"reference{suffix}")
    ax.set_ylabel(f"predicted{suffix}")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def error_vs_size(curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                  unit: str = "", ax=None, metric: str = "MAE", title: str | None = None):
    """Test error against training-set size, one line with error bars per model.

    Parameters
    ----------
    curves
        Model name -> ``(sizes, mean error, spread)``, e.g. the spread over folds.
    unit
        Unit of the error.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    for name, (sizes, mean, spread) in curves.items():
        order = np.argsort(sizes)
        ax.errorbar(np.asarray(sizes, float)[order], np.asarray(mean, float)[order],
                    yerr=np.asarray(spread, float)[order], marker="o", ms=4, capsize=3, label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training molecules")
    ax.set_ylabel(f"test {metric}" + (f" ({unit})" if unit else ""))
    if curves:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def size_study_plot(rows: Sequence[Mapping], references: Mapping[str, float] | None = None, unit: str = "",
                    ax=None, title: str | None = None):
    """Test error against the number of pre-training molecules, one colour per method.

    Parameters
    ----------
    rows
        One per method and pre-training set: ``method``, ``molecules``, ``selection`` and ``mae``
        (``{"mean", "sd"}``), as :func:`schnet_transfer.report.size_study` gives them. Randomly
        drawn sets are joined by a line; sets of another selection (e.g. ``hopv_similar``) are
        open squares beside them.
    references
        Name -> error of a model without pre-training, drawn as a horizontal line.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> rows = [{"method": "v2", "molecules": n, "selection": s, "mae": {"mean": e, "sd": 0.01}}
    ...         for n, s, e in [(1352, "random", 0.23), (10000, "random", 0.21), (10000, "similar", 0.22)]]
    >>> ax = size_study_plot(rows, {"scratch": 0.24}, unit="eV")
    >>> ax.get_xlabel(), len(ax.lines) >= 2
    ('pre-training molecules', True)
    """
    ax = _axes(ax)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for colour, method in zip(colours * len(methods), methods):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["molecules"])
        for selection in dict.fromkeys(r["selection"] for r in mine):
            points = [r for r in mine if r["selection"] == selection]
            random = selection == "random"
            ax.errorbar([r["molecules"] * (1 if random else 1.08) for r in points],
                        [r["mae"]["mean"] for r in points], yerr=[r["mae"]["sd"] or 0.0 for r in points],
                        color=colour, marker="o" if random else "s", mfc=colour if random else "none",
                        ls="-" if random else "none", ms=5, capsize=3,
                        label=method if random else f"{method}, {selection} set")
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, color="grey", ls=style, lw=1, label=f"{name} (no pre-training)")
    ax.set_xscale("log")
    sizes = sorted({r["molecules"] for r in rows})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("pre-training molecules")
    ax.set_ylabel("test MAE" + (f" ({unit})" if unit else ""))
    ax.legend(fontsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def load_cells(folder: str | Path) -> list[dict]:
    """Every cell JSON under ``folder`` (recursively), in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).rglob("*.json"))]


def _label(cell: dict) -> str:
    return cell["method"] + (f"@{cell['pretrain']}" if cell.get("pretrain") else "")


def cells_parity(cells: Sequence[dict], methods: Sequence[str] | None = None,
                 full_size: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Test references and predictions pooled over the folds that every selected model has.

    ``full_size`` keeps the cells trained on whole training folds (``size``
    ``"all"``), else the smallest ``n_train`` of each model and fold.  Returns
    ``(y_true, {model: y_pred}, folds)`` ordered by molecule index.

    Raises
    ------
    ValueError
        If the selected models share no fold.
    """
    by_model = defaultdict(dict)
    for c in sorted(cells, key=lambda c: -c["n_train"]):
        if full_size != (c["size"] == "all"):
            continue
        if methods is None or _label(c) in methods or c["method"] in methods:
            by_model[_label(c)][c["fold"]] = c
    folds = sorted(set.intersection(*(set(f) for f in by_model.values()))) if by_model else []
    if not folds:
        raise ValueError("the selected models share no fold")
    first = next(iter(by_model.values()))
    idx = np.concatenate([first[f]["test_idx"] for f in folds])
    order = np.argsort(idx)
    y_true = np.concatenate([first[f]["y_true"] for f in folds])[order]
    preds = {m: np.concatenate([f[k]["y_pred"] for k in folds])[order] for m, f in by_model.items()}
    return y_true, preds, folds


def cells_learning_curves(cells: Sequence[dict], methods: Sequence[str] | None = None,
                          metric: str = "mae") -> dict[str, tuple[list, list, list]]:
    """``{model: (sizes, mean, sample std over folds)}`` for sizes with at least 2 folds.

    Cells are grouped by their nominal ``size`` (``"all"`` is the whole
    training fold, 209-210 molecules on HOPV, plotted at the mean ``n_train``).
    """
    values = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if methods is None or _label(c) in methods or c["method"] in methods:
            values[_label(c)][c["size"]].append((c["n_train"], c[metric]))
    curves = {}
    for model, by_size in values.items():
        points = sorted((float(np.mean([n for n, _ in v])), float(np.mean([e for _, e in v])),
                         float(np.std([e for _, e in v], ddof=1)))
                        for v in by_size.values() if len(v) >= 2)
        if points:
            curves[model] = tuple(list(column) for column in zip(*points))
    return curves
