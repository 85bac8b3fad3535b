"""Plots from a real (tiny) model on ToxCast-CLD: curves per property, axis labels, data ranges, embedded points."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from deepchem_pintuning.batching import collate_graphs  # noqa: E402
from deepchem_pintuning.cli import main  # noqa: E402
from deepchem_pintuning.episodes import evaluation_episode  # noqa: E402
from deepchem_pintuning.inductive import adapt_to_support, score_molecules  # noqa: E402
from deepchem_pintuning.model import PinTuningModel  # noqa: E402
from deepchem_pintuning.plotting import (adaptation_embeddings, embedding_view, evaluation_curves,  # noqa: E402
                                         learning_curve, roc_pr_curves)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, n_shot=5, encoder="gcn_scratch")


@pytest.fixture(scope="module")
def trained(cld, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plotted")
    model = PinTuningModel.for_dataset(cld, seed=0, model_dir=str(folder / "model"), **TINY)
    model.fit(cld, steps=4, eval_every=2, progress=False, eval_tasks=cld.test_tasks[:2])
    return model, folder


def test_roc_and_pr_curves_one_per_property(cld, trained):
    model, _ = trained
    result = model.evaluate_fewshot(cld, tasks=cld.test_tasks[:3], return_scores=True)
    fig = roc_pr_curves(result)
    roc_ax, pr_ax = fig.axes
    assert len(roc_ax.get_lines()) == len(pr_ax.get_lines()) == 3 + 1          # 3 properties + chance line
    assert (roc_ax.get_xlabel(), roc_ax.get_ylabel()) == ("false positive rate", "true positive rate")
    assert (pr_ax.get_xlabel(), pr_ax.get_ylabel()) == ("recall", "precision")
    for line in roc_ax.get_lines()[:3]:
        x, y = line.get_data()
        assert x[0] == 0 and x[-1] == 1 and y[-1] == 1 and np.all(np.diff(x) >= 0)   # a ROC curve
    legend = [t.get_text() for t in roc_ax.get_legend().get_texts()]
    task = cld.test_tasks[0]
    assert legend[0] == f"{task} (AUC {result['per_task'][task]['roc_auc']:.3f})"   # the evaluation's ROC-AUC
    with pytest.raises(ValueError, match="return_scores"):
        roc_pr_curves(model.evaluate_fewshot(cld, tasks=cld.test_tasks[:1]))


def test_learning_curve_from_the_saved_history(trained):
    model, folder = trained
    fig = learning_curve(folder / "model" / "training_history.csv")
    loss_ax, auc_ax = fig.axes
    steps, losses = loss_ax.get_lines()[0].get_data()
    assert list(steps) == [1, 2, 3, 4] and np.allclose(losses, [h["loss"] for h in model.history if "loss" in h])
    evaluation_steps, aucs = auc_ax.get_lines()[0].get_data()
    assert list(evaluation_steps) == [2, 4] and np.all((aucs >= 0) & (aucs <= 1))


def test_evaluation_curves_one_line_per_run_one_colour_per_configuration(trained):
    model, _ = trained
    evaluations = [h for h in model.history if "eval_roc_auc" in h]
    fig = evaluation_curves({"tiny": [model.history, evaluations], "again": [evaluations]})
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3 and lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tiny", "again"]
    for line in lines:
        steps, aucs = line.get_data()
        assert list(steps) == [h["step"] for h in evaluations] and list(aucs) == [h["eval_roc_auc"] for h in evaluations]


def test_evaluation_curves_keep_many_configurations_apart():
    runs = {f"run {i}": [[{"step": 1, "eval_roc_auc": 0.5 + i / 100}]] for i in range(25)}
    (ax,) = evaluation_curves(runs).axes
    styles = {(str(line.get_color()), line.get_linestyle()) for line in ax.get_lines()}
    assert len(styles) == 25                                    # colour and line style tell every run apart
    texts = ax.get_legend().get_texts()
    ax.figure.canvas.draw()
    assert len(texts) == 25 and len({round(t.get_window_extent().x0) for t in texts}) == 2   # in two columns


def test_tox21_benchmark_plot_draws_every_run_of_the_committed_results(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    import plot_tox21
    runs = plot_tox21.load_runs()
    rows = plot_tox21.summarise(runs)
    fig = plot_tox21.plot(rows, runs, tmp_path / "tox21.png")
    bars, curves = fig.axes
    pintuning = [r for r in runs if r["method"] == "pintuning"]
    assert len(curves.get_lines()) == len(pintuning) > 0
    assert {t.get_text() for t in curves.get_legend().get_texts()} == \
        {plot_tox21.short_name(plot_tox21.row_name(r)) for r in pintuning}
    longest = max(pintuning, key=lambda r: r["steps"])
    assert max(line.get_xdata().max() for line in curves.get_lines()) == longest["evaluations"][-1]["step"]
    assert len(bars.patches) == 2 * len(rows)
    committed = json.loads((BENCHMARKS / "results" / "baselines_tox21.json").read_text())["runs"]
    assert {r["key"] for r in committed} <= {r["key"] for r in rows}


@pytest.mark.parametrize("protocol", ["paper", "deployment"])
def test_embeddings_before_and_after_adaptation(cld, trained, protocol):
    model, _ = trained
    task = cld.test_tasks[1]
    embeddings = adaptation_embeddings(model, cld, task, seed=0, per_class=12, protocol=protocol)
    episode = evaluation_episode(cld, task, model.config.n_shot, seed=0)
    labels, indices = embeddings["labels"], embeddings["indices"]
    assert np.bincount(labels.astype(int)).tolist() == [12, 12]
    assert set(indices) <= set(episode.query) and np.array_equal(labels, cld.labels[indices, episode.task_index])
    model.model.eval()
    graphs = [cld.graphs[i] for i in indices]
    frozen = model.model.frozen_vectors(collate_graphs(graphs)).numpy()
    assert np.array_equal(embeddings["before"], frozen)                          # the pre-trained encoder's vectors
    assert embeddings["after"].shape == frozen.shape and not np.allclose(embeddings["after"], frozen)
    if protocol == "deployment":   # the vectors behind the scores a user gets from predict_smiles
        adapted = adapt_to_support(model.model, [cld.graphs[i] for i in episode.support], episode.support_labels,
                                   episode.task_index, episode.aux_task_indices, seed=0)
        assert np.allclose(embeddings["scores"], score_molecules(model.model, adapted, graphs), atol=1e-6)
    with pytest.raises(ValueError, match="protocol"):
        adaptation_embeddings(model, cld, task, protocol="transductive")


@pytest.mark.parametrize("method,axis", [("pca", "PC 1 ("), ("tsne", "t-SNE 1")])
def test_embedding_view_two_panels_points_per_class(cld, trained, method, axis):
    model, _ = trained
    task = cld.test_tasks[0]
    embeddings = adaptation_embeddings(model, cld, task, seed=1, per_class=15)
    counts = np.bincount(embeddings["labels"].astype(int), minlength=2)
    fig = embedding_view(embeddings, method=method)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["before adaptation (pre-trained encoder)",
                                                   f"after adaptation to {task}"]
    for ax in fig.axes:
        assert ax.get_xlabel().startswith(axis) and ax.get_ylabel().startswith(axis.replace("1", "2"))
        inactive, active = ax.collections
        assert [len(inactive.get_offsets()), len(active.get_offsets())] == counts.tolist()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"inactive ({counts[0]})",
                                                                       f"active ({counts[1]})"]
    if method == "pca":   # PCA of the vectors, so the two panels show the data, not a fixed layout
        before = np.vstack([c.get_offsets() for c in fig.axes[0].collections])
        assert np.isclose(before[:, 0].var() * len(before) / (len(before) - 1),
                          np.linalg.svd(embeddings["before"] - embeddings["before"].mean(0), compute_uv=False)[0] ** 2
                          / (len(before) - 1), rtol=1e-4)
    with pytest.raises(ValueError, match="method"):
        embedding_view(embeddings, method="umap")


def test_plot_command_writes_the_figures(cld, trained, tmp_path, capsys):
    _, folder = trained
    assert main(["plot", "--model-dir", str(folder / "model"), "--out-dir", str(tmp_path / "plots")]) == 0
    assert "embeddings.png" in capsys.readouterr().out
    for name in ("learning_curve.png", "roc_pr.png", "embeddings.png"):
        image = imread(tmp_path / "plots" / name)
        assert image.shape[0] > 100 and image.std() > 0                       # a drawn, non-blank figure
    assert main(["plot", "--model-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "p2")]) == 2
    assert main(["plot", "--model-dir", str(folder / "model"), "--out-dir", str(tmp_path / "p2"),
                 "--embedding-property", "no-such-assay"]) == 2
    assert "no-such-assay" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists()


def test_plot_command_without_matplotlib_says_which_extra_to_install(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # an environment without the plot extra
    assert main(["plot", "--model-dir", str(tmp_path), "--out-dir", str(tmp_path / "plots")]) == 2
    assert "deepchem-pintuning[plot]" in capsys.readouterr().err
