"""Plots a Pin-Tuning user looks at: ROC and precision-recall curves per property, the learning curve.

Each function draws on a new matplotlib figure and returns it (``fig.savefig(path)`` to keep it).
``pintuning plot --model-dir DIR`` draws both for a saved model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import numpy as np
import pandas as pd
from sklearn.metrics import auc, precision_recall_curve, roc_curve


def roc_pr_curves(result: Dict, title: str = ""):
    """ROC and precision-recall curves, one per property, of ``evaluate_fewshot(..., return_scores=True)``.

    Examples
    --------
    >>> result = {"per_task": {"A": {"labels": [0, 0, 1, 1], "scores": [0.1, 0.6, 0.4, 0.9]}}}
    >>> fig = roc_pr_curves(result)
    >>> [len(ax.get_lines()) for ax in fig.axes]   # one curve per property + the chance line
    [2, 2]
    """
    import matplotlib.pyplot as plt
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for task, scores in result["per_task"].items():
        if "scores" not in scores:
            raise ValueError("evaluate with return_scores=True to plot curves")
        labels, probabilities = np.asarray(scores["labels"]), np.asarray(scores["scores"])
        fpr, tpr, _ = roc_curve(labels, probabilities)
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        roc_ax.plot(fpr, tpr, label=f"{task} (AUC {auc(fpr, tpr):.3f})")
        pr_ax.plot(recall, precision, label=f"{task} (AUC {auc(recall, precision):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    positives = np.mean([np.mean(s["labels"]) for s in result["per_task"].values()])
    pr_ax.plot([0, 1], [positives, positives], color="grey", lw=0.8, ls="--")
    for ax, (x, y) in ((roc_ax, ("false positive rate", "true positive rate")), (pr_ax, ("recall", "precision"))):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "upper right")
    roc_ax.set_title(f"ROC {title}".strip())
    pr_ax.set_title(f"precision-recall {title}".strip())
    fig.tight_layout()
    return fig


def learning_curve(history: Union[str, Path, pd.DataFrame], title: str = ""):
    """Meta-training loss (and ROC-AUC at each evaluation) vs outer step, from ``training_history.csv``.

    Examples
    --------
    >>> history = pd.DataFrame({"step": [1, 2, 3, 3], "loss": [0.7, 0.6, 0.5, None],
    ...                         "eval_roc_auc": [None, None, None, 0.8]})
    >>> fig = learning_curve(history)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['meta-training loss', 'ROC-AUC (meta-test properties)']
    """
    import matplotlib.pyplot as plt
    frame = history if isinstance(history, pd.DataFrame) else pd.read_csv(history)
    fig, loss_ax = plt.subplots(figsize=(6.5, 4))
    steps = frame.dropna(subset=["loss"])
    loss_ax.plot(steps["step"], steps["loss"], color="tab:blue", lw=0.8, label="loss")
    loss_ax.set_xlabel("outer step")
    loss_ax.set_ylabel("meta-training loss")
    if "eval_roc_auc" in frame:
        evaluations = frame.dropna(subset=["eval_roc_auc"])
        auc_ax = loss_ax.twinx()
        auc_ax.plot(evaluations["step"], evaluations["eval_roc_auc"], "o-", color="tab:orange", label="ROC-AUC")
        auc_ax.set_ylabel("ROC-AUC (meta-test properties)")
    loss_ax.set_title(title)
    fig.tight_layout()
    return fig
