"""Metrics in physical units next to the standardized ones that ``spktrain`` logs.

The loss and the ``ModelOutput`` metrics of a model trained on standardized
labels (:class:`~schnet_transfer.normalizer.StandardizeProperty`) are in units
of the training standard deviation: ``test_gap_mae 1.667`` is 1.667 std, not
eV.  :class:`PhysicalUnitMetrics`, a Lightning callback (``callbacks:`` of
``spktrain``), adds to every ``ModelOutput`` whose property the model's
postprocessors de-standardize a copy of each metric under ``<metric>_physical``
that sees predictions and targets mapped back with that normalizer
(``y * stddev + mean``); the stock ``AtomisticTask`` logs it as
``test_gap_mae_physical`` (eV for HOPV gaps, kcal/mol for FreeSolv).

Examples
--------
>>> import torch
>>> from torchmetrics.regression import MeanAbsoluteError
>>> from schnet_transfer.metrics import PhysicalUnits
>>> from schnet_transfer.normalizer import StandardizeProperty
>>> mae = PhysicalUnits(MeanAbsoluteError(), StandardizeProperty("gap", inverse=True, mean=2.0, stddev=0.5))
>>> mae(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
tensor(0.2500)
"""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torchmetrics import Metric
from torchmetrics.wrappers.transformations import MetricInputTransformer

from schnet_transfer.normalizer import StandardizeProperty

__all__ = ["PhysicalUnitMetrics", "PhysicalUnits", "SUFFIX"]

#: Appended to the metric name: ``mae`` -> ``mae_physical`` (logged ``test_gap_mae_physical``).
SUFFIX = "_physical"


class PhysicalUnits(MetricInputTransformer):
    """Evaluate ``wrapped_metric`` on de-standardized predictions and targets.

    Parameters
    ----------
    wrapped_metric
        Metric on physical values (e.g. ``MeanAbsoluteError()``).
    normalizer
        The model's inverse :class:`StandardizeProperty`; its ``mean`` and
        ``stddev`` are read at every update, so they may be fitted later.  It is
        referenced, not registered, so it adds nothing to a ``state_dict``.
    """

    def __init__(self, wrapped_metric: Metric, normalizer: StandardizeProperty, **kwargs: Any):
        super().__init__(wrapped_metric, **kwargs)
        self._normalizer = [normalizer]  # a list: not a submodule

    def transform_pred(self, pred: torch.Tensor) -> torch.Tensor:
        norm = self._normalizer[0]
        return pred * norm.stddev.to(pred) + norm.mean.to(pred)

    transform_target = transform_pred

    def forward(self, *args: torch.Tensor, **kwargs: Any) -> Any:
        self._forward_cache = super().forward(*args, **kwargs)  # what Lightning logs per step
        return self._forward_cache


def _inverse_normalizer(model: torch.nn.Module, prop: str) -> Optional[StandardizeProperty]:
    for module in getattr(model, "postprocessors", []):
        if isinstance(module, StandardizeProperty) and module.inverse and module._property == prop:
            return module
    return None


def add_physical_metrics(task: pl.LightningModule) -> list[str]:
    """Add ``<metric>_physical`` copies to the outputs of a task; returns the names added."""
    added = []
    for output in task.outputs:
        normalizer = _inverse_normalizer(task.model, output.name)
        if normalizer is None:
            continue
        for subset, metrics in output.metrics.items():
            for name in [n for n in metrics if not n.endswith(SUFFIX)]:
                if name + SUFFIX not in metrics:
                    metric = PhysicalUnits(metrics[name].clone(), normalizer).to(task.device)
                    metrics[name + SUFFIX] = metric
                    added.append(f"{subset}_{output.name}_{name}{SUFFIX}")
    return added


class PhysicalUnitMetrics(pl.Callback):
    """Lightning callback: log every metric of a standardized output also in physical units."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        add_physical_metrics(pl_module)

    on_validation_start = on_test_start = on_fit_start
