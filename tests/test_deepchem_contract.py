"""PinTuningModel through DeepChem's stock idioms: fit(nb_epoch), plain datasets, evaluate, dc.hyper, callbacks."""
import json

import deepchem as dc
import numpy as np
import pandas as pd
import pytest
import torch

from deepchem_pintuning.deepchem_contract import HISTORY_FILE
from deepchem_pintuning.model import PinTuningModel

TINY = dict(emb_dim=32, num_layer=2, adapter_dim=8, context_edge_hidden=8, n_shot=5, encoder="gcn_scratch")


def test_fit_takes_nb_epoch_and_returns_the_mean_loss(cld, tmp_path):
    model = PinTuningModel.for_dataset(cld, seed=0, model_dir=str(tmp_path), **TINY)
    losses = []
    loss = model.fit(cld, nb_epoch=1, all_losses=losses)
    steps = [h for h in model.history if "loss" in h]
    assert len(steps) == 3                                   # ceil(14 training properties / 5 per step)
    assert loss == pytest.approx(np.mean([h["loss"] for h in steps])) and losses == [h["loss"] for h in steps]
    assert len(pd.read_csv(tmp_path / HISTORY_FILE)) == 3
    with pytest.raises(ValueError, match="nb_epoch or steps"):
        model.fit(cld, nb_epoch=1, steps=2)


def test_a_plain_deepchem_dataset_is_accepted(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, **TINY)
    model.fit(cld.dataset, steps=1, progress=False)
    scores = model.evaluate(cld.dataset, [dc.metrics.Metric(dc.metrics.roc_auc_score)])
    assert list(scores) == ["roc_auc_score"] and 0 <= scores["roc_auc_score"] <= 1
    other = dc.data.NumpyDataset(np.zeros((3, 4)), np.zeros((3, len(cld.tasks))))
    with pytest.raises(ValueError, match="PretrainGNNFeaturizer"):
        model.fit(other, steps=1)


def test_evaluate_is_the_fewshot_evaluation_with_per_task_scores(cld):
    model = PinTuningModel.for_dataset(cld, seed=0, **TINY)
    metric = dc.metrics.Metric(dc.metrics.roc_auc_score, name="roc_auc")
    scores, per_task = model.evaluate(cld, [metric], per_task_metrics=True)
    reference = model.evaluate_fewshot(cld, metrics=[metric])
    assert scores["roc_auc"] == reference["roc_auc"]            # deterministic: the adaptation's dropout is seeded
    assert per_task["roc_auc"].shape == (len(cld.test_tasks),)


@pytest.mark.parametrize("method", ["predict", "predict_on_batch", "predict_embedding"])
def test_prediction_without_a_support_set_names_the_method_to_use(cld, method):
    model = PinTuningModel.for_dataset(cld, seed=0, **TINY)
    with pytest.raises(NotImplementedError, match="predict_smiles"):
        getattr(model, method)(cld.dataset)


def test_stock_constructor_arguments(cld, tmp_path):
    model = PinTuningModel.for_dataset(cld, seed=0, learning_rate=2e-3, batch_size=8, tensorboard=True,
                                       log_frequency=1, model_dir=str(tmp_path), **TINY)
    assert model.config.meta_lr == 2e-3 and model.batch_size == 8 and model.tensorboard
    model.fit(cld, steps=2, progress=False)
    assert list(tmp_path.glob("events.out.tfevents*"))       # the loss went to TensorBoard


def test_device_by_name_in_the_constructor_and_load(cld, tmp_path):
    model = PinTuningModel.for_dataset(cld, seed=0, device="cpu", model_dir=str(tmp_path), **TINY)
    assert model.device == torch.device("cpu")
    model.fit(cld, steps=1, progress=False)
    assert PinTuningModel.load(str(tmp_path), device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0' is not a torch device"):
        PinTuningModel.for_dataset(cld, device="gpu0", **TINY)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            PinTuningModel.for_dataset(cld, device=torch.device("cuda"), **TINY)


def test_grid_hyperparameter_search_drives_it(cld, tmp_path):
    def builder(inner_lr, model_dir):
        return PinTuningModel.for_dataset(cld, seed=0, inner_lr=inner_lr, model_dir=model_dir, **TINY)

    metric = dc.metrics.Metric(dc.metrics.roc_auc_score)
    search = dc.hyper.GridHyperparamOpt(builder)
    best, params, scores = search.hyperparam_search({"inner_lr": [0.05, 0.5]}, cld, cld, metric, nb_epoch=1,
                                                    logdir=str(tmp_path))
    assert len(scores) == 2 and params["inner_lr"] in (0.05, 0.5)
    assert isinstance(best, PinTuningModel) and (tmp_path / next(iter(scores)) / "pintuning_config.json").exists()


def test_validation_callback_evaluates_during_fit(cld, tmp_path):
    model = PinTuningModel.for_dataset(cld, seed=0, model_dir=str(tmp_path / "model"), **TINY)
    log = tmp_path / "validation.log"
    with open(log, "w") as handle:
        callback = dc.models.ValidationCallback(cld, 2, [dc.metrics.Metric(dc.metrics.roc_auc_score)],
                                                output_file=handle)
        model.fit(cld, steps=4, progress=False, callbacks=[callback])
    assert log.read_text().count("roc_auc_score") == 2          # steps 2 and 4


def test_saved_model_card_and_refusal_of_other_properties(cld, tox21, tmp_path):
    model = PinTuningModel.for_dataset(cld, seed=0, model_dir=str(tmp_path), **TINY)
    model.fit(cld, steps=1, eval_every=1, progress=False, eval_tasks=cld.test_tasks[:1])
    card = json.loads((tmp_path / "pintuning_config.json").read_text())["card"]
    assert card["dataset"] == "toxcast-CLD" and card["tasks"] == cld.tasks and card["test_tasks"] == cld.test_tasks
    assert card["outer_steps"] == 1 and card["versions"]["torch"] and "eval_roc_auc" in card["last_evaluation"]
    loaded = PinTuningModel.load(str(tmp_path))
    assert loaded.card["tasks"] == cld.tasks
    with pytest.raises(ValueError, match="other properties than the model's toxcast-CLD"):
        loaded.evaluate_fewshot(tox21)
