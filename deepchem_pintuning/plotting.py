"""Plots a Pin-Tuning user looks at: ROC and precision-recall curves per property, the learning curve,
and a 2-D view of molecule embeddings before and after adaptation to a property.

Each plotting function draws on a new matplotlib figure and returns it (``fig.savefig(path)`` to
keep it). ``pintuning plot --model-dir DIR`` draws all three for a saved model.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_curve
from torch.func import functional_call

from deepchem_pintuning.batching import collate_graphs
from deepchem_pintuning.context_graph import label_edges
from deepchem_pintuning.data import FewShotDataset
from deepchem_pintuning.episodes import evaluation_episode
from deepchem_pintuning.inductive import AdaptedSupport, adapt_to_support
from deepchem_pintuning.pintuning import EpisodeInputs, PinTuning

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from deepchem_pintuning.model import PinTuningModel

CLASS_STYLE = ((0, "inactive", "tab:blue"), (1, "active", "tab:red"))


def roc_pr_curves(result: Dict, title: str = "") -> "Figure":
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


def learning_curve(history: Union[str, Path, pd.DataFrame], title: str = "") -> "Figure":
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


def evaluation_curves(runs: Mapping[str, Sequence[Sequence[Dict]]], ax: Optional["Axes"] = None,
                      key: str = "eval_roc_auc", title: str = "Pin-Tuning during meta-training") -> "Figure":
    """ROC-AUC at each evaluation vs outer step: one line per run, one colour per configuration (beyond
    the 20 colours of ``tab20``, one line style per round of them).

    ``runs`` maps a configuration name to its runs (e.g. one per seed), each a sequence of records
    with ``step`` and ``key`` (``PinTuningModel.history``, whose loss records are skipped, or a
    benchmark JSON's evaluations). Draws on ``ax`` (a new figure by default); returns the figure.

    Examples
    --------
    >>> seed_0 = [{"step": 1, "loss": 0.7}, {"step": 1, "eval_roc_auc": 0.70}, {"step": 2, "eval_roc_auc": 0.75}]
    >>> seed_1 = [{"step": 1, "eval_roc_auc": 0.68}, {"step": 2, "eval_roc_auc": 0.74}]
    >>> fig = evaluation_curves({"50 steps": [seed_0, seed_1]})
    >>> ax = fig.axes[0]
    >>> len(ax.get_lines()), [t.get_text() for t in ax.get_legend().get_texts()]
    (2, ['50 steps'])
    """
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(runs) > len(colours):            # more configurations than the default cycle tells apart
        colours = [plt.cm.tab20(i) for i in range(20)]
    for number, (name, histories) in enumerate(runs.items()):
        for run, history in enumerate(histories):
            evaluations = [record for record in history if key in record]
            ax.plot([record["step"] for record in evaluations], [record[key] for record in evaluations],
                    marker="o", markersize=3, alpha=0.8, color=colours[number % len(colours)],
                    linestyle=("-", "--", ":", "-.")[number // len(colours) % 4], label=name if run == 0 else None)
    ax.set_xlabel("outer step")
    ax.set_ylabel("ROC-AUC (one line per run)")
    ax.set_title(title)
    if len(runs) > 6:                       # a long legend goes beside the axes, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=-(-len(runs) // 16))
    else:
        ax.legend(fontsize=8)
    return ax.figure


def adaptation_embeddings(model: "PinTuningModel", data: FewShotDataset, task: str, seed: int = 0,
                          per_class: int = 100, protocol: str = "paper") -> Dict[str, np.ndarray]:
    """Vectors of query molecules of ``task`` before and after the model adapts to that property.

    The support set is the fixed evaluation support of ``(seed, task)``; up to ``per_class``
    actives and ``per_class`` inactives are drawn (with ``seed``) from the rest of the labelled
    molecules. The model adapts to the support set alone
    (:func:`~deepchem_pintuning.inductive.adapt_to_support`), then every drawn molecule is encoded
    on a context graph with the support molecules, in eval mode:

    * ``before``: the pre-trained encoder's vector of the molecule (the frozen copy, ``f`` in
      :class:`~deepchem_pintuning.pintuning.PinTuning`);
    * ``after``: the adapted encoder's vector ``a``: embedding tables after the adaptation step,
      MP-Adapters fed with the molecule's and the property's context vectors.

    Parameters
    ----------
    protocol: str, default "paper"
        ``"paper"``: support and drawn molecules keep their labels on the training properties,
        and up to ``eval_query_chunk`` drawn molecules share a context graph (as in
        ``evaluate_fewshot``); ``"deployment"``: no auxiliary labels, every molecule on a
        context graph of its own (as ``predict_smiles`` scores a user's library).

    Returns
    -------
    dict
        ``before`` and ``after`` ``[n, emb_dim]``, ``labels`` (0/1), ``scores`` (the model's
        probability of activity for each molecule), ``indices`` (rows of ``data``), and ``task``.

    Examples
    --------
    >>> from deepchem_pintuning import PinTuningModel, load_fewshot
    >>> data = load_fewshot("toxcast-CLD")
    >>> model = PinTuningModel.for_dataset(data, n_shot=5, emb_dim=32, num_layer=2, adapter_dim=8,
    ...                                    encoder="gin_scratch", seed=0)
    >>> embeddings = adaptation_embeddings(model, data, data.test_tasks[0], per_class=10)
    >>> embeddings["before"].shape, embeddings["after"].shape, np.bincount(embeddings["labels"].astype(int)).tolist()
    ((20, 32), (20, 32), [10, 10])
    """
    if protocol not in ("paper", "deployment"):
        raise ValueError(f"protocol must be 'paper' or 'deployment', got {protocol!r}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    config, network = model.config, model.model
    episode = evaluation_episode(data, task, config.n_shot, seed, config.shuffle_aux)
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([
        rng.choice(members, min(per_class, len(members)), replace=False)
        for members in (episode.query[episode.query_labels == label] for label, _, _ in CLASS_STYLE)]))
    columns = [episode.task_index, *episode.aux_task_indices]
    support_labels = data.labels[np.ix_(episode.support, columns)] if protocol == "paper" else episode.support_labels
    support = [data.graphs[i] for i in episode.support]
    adapted = adapt_to_support(network, support, support_labels, episode.task_index, episode.aux_task_indices,
                               seed, device=model.device, mode=config.deployment_adaptation)
    size = config.eval_query_chunk if protocol == "paper" else 1
    chunks = [chosen[start:start + size] for start in range(0, len(chosen), size)]
    aux_labels = [data.labels[np.ix_(chunk, episode.aux_task_indices)] if protocol == "paper"
                  else np.full((len(chunk), len(episode.aux_task_indices)), np.nan) for chunk in chunks]
    features, logits = _classifier_inputs(network, adapted, support,
                                          [([data.graphs[i] for i in c], a) for c, a in zip(chunks, aux_labels)])
    d = config.emb_dim
    return {"before": features[:, :d], "after": features[:, 3 * d:], "labels": data.labels[chosen, episode.task_index],
            "scores": 1 / (1 + np.exp(-logits)), "indices": chosen, "task": task}


def _classifier_inputs(network: PinTuning, adapted: AdaptedSupport, support: Sequence,
                       chunks: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Classifier inputs ``[f || c_m || c_p || a]`` and logits of the molecules of each ``(graphs, auxiliary
    labels)`` chunk, each chunk on a context graph with the support molecules (eval mode, adapted weights)."""
    captured: list = []
    hook = network.classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    was_training = network.training
    network.eval()
    features, logits = [], []
    try:
        with torch.no_grad():
            for graphs, aux_labels in chunks:
                captured.clear()
                query_aux = torch.as_tensor(aux_labels, dtype=adapted.labels.dtype)
                inputs = EpisodeInputs(graphs=collate_graphs(list(support) + list(graphs), adapted.labels.device),
                                       frozen=None, property_ids=adapted.property_ids[0],
                                       label_edges=label_edges(adapted.labels.cpu(), query_aux,
                                                               network.config.query_aux_offset),
                                       n_support=len(support), support_labels=adapted.labels[:, 0])
                chunk_logits, _ = functional_call(network, adapted.fast, (inputs,))
                features.append(torch.cat(captured)[len(support):].cpu().numpy())
                logits.append(chunk_logits[len(support):].cpu().numpy())
    finally:
        hook.remove()
        network.train(was_training)
    return np.concatenate(features), np.concatenate(logits)


def embedding_view(embeddings: Dict[str, np.ndarray], method: str = "pca", seed: int = 0,
                   title: str = "") -> "Figure":
    """Two panels, molecules before and after adaptation (:func:`adaptation_embeddings`) in 2-D, coloured by label.

    Each panel has its own projection: ``"pca"`` (axes labelled with the share of variance
    they explain) or ``"tsne"`` (scikit-learn's t-SNE, seeded by ``seed``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.array([0] * 30 + [1] * 10)
    >>> embeddings = {"before": rng.normal(size=(40, 8)), "after": rng.normal(size=(40, 8)) + labels[:, None],
    ...               "labels": labels, "task": "SR-p53"}
    >>> fig = embedding_view(embeddings)
    >>> [len(c.get_offsets()) for c in fig.axes[1].collections]   # inactives, actives
    [30, 10]
    >>> fig.axes[1].get_title()
    'after adaptation to SR-p53'
    """
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    labels = np.asarray(embeddings["labels"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, panel in zip(axes, ("before", "after"),
                              ("before adaptation (pre-trained encoder)", f"after adaptation to {embeddings['task']}")):
        vectors = np.asarray(embeddings[key], dtype=np.float64)
        if method == "pca":
            pca = PCA(n_components=2, random_state=seed)
            points = pca.fit_transform(vectors)
            names = [f"PC {i + 1} ({share:.0%} of variance)" for i, share in enumerate(pca.explained_variance_ratio_)]
        else:
            perplexity = min(30.0, (len(vectors) - 1) / 3)
            points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
            names = ["t-SNE 1", "t-SNE 2"]
        for label, name, colour in CLASS_STYLE:
            members = labels == label
            ax.scatter(points[members, 0], points[members, 1], s=12, alpha=0.7, color=colour,
                       label=f"{name} ({int(members.sum())})")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title(panel)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
