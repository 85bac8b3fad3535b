"""Plots from a real (tiny) model on ToxCast-CLD: curves per property, axis labels, data ranges."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from deepchem_pintuning.cli import main  # noqa: E402
from deepchem_pintuning.model import PinTuningModel  # noqa: E402
from deepchem_pintuning.plotting import learning_curve, roc_pr_curves  # noqa: E402

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


def test_plot_command_writes_both_figures(cld, trained, tmp_path, capsys):
    _, folder = trained
    assert main(["plot", "--model-dir", str(folder / "model"), "--out-dir", str(tmp_path / "plots")]) == 0
    assert "mean ROC-AUC" in capsys.readouterr().out
    for name in ("learning_curve.png", "roc_pr.png"):
        image = imread(tmp_path / "plots" / name)
        assert image.shape[0] > 100 and image.std() > 0                       # a drawn, non-blank figure
    assert main(["plot", "--model-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2").exists()
