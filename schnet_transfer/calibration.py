"""Linear calibration of a cheap label against a reference label (training split only).

A cheap method is often off by a scale and an offset (xTB gaps vs PBE0 gaps,
ALPB solvation vs experiment).  :func:`fit_linear_calibration` fits
``reference ≈ slope * cheap + intercept`` by least squares; the
:class:`LinearCalibration` transform applies it, with the fit taken from the
training split of an ``AtomsDataModule`` whose database holds both labels
(e.g. HOPV relabelled with ``schnet-transfer label``).  As a model
postprocessor after the normalizer it turns predictions of the cheap label
into calibrated predictions of the reference.

Examples
--------
>>> import numpy as np, torch
>>> from schnet_transfer.calibration import LinearCalibration, fit_linear_calibration
>>> slope, intercept = fit_linear_calibration(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.5, 6.5]))
>>> round(slope, 9), round(intercept, 9)
(2.0, 0.5)
>>> calibrate = LinearCalibration("gap", cheap_property="xtb_gap", slope=2.0, intercept=0.5)
>>> calibrate({"xtb_gap": torch.tensor([1.5])})["gap"].tolist()
[3.5]
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from schnetpack.transform import Transform

__all__ = ["fit_linear_calibration", "LinearCalibration", "CalibratedResidual"]


def fit_linear_calibration(cheap: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Least-squares ``slope, intercept`` of ``reference ≈ slope * cheap + intercept``.

    Raises
    ------
    ValueError
        For NaN/inf values, mismatched lengths, fewer than 2 points or a constant cheap label.
    """
    cheap, reference = np.asarray(cheap, float).ravel(), np.asarray(reference, float).ravel()
    if cheap.shape != reference.shape or len(cheap) < 2:
        raise ValueError(f"need two equally long label arrays (got {cheap.shape}, {reference.shape})")
    if not (np.isfinite(cheap).all() and np.isfinite(reference).all()):
        raise ValueError("labels contain NaN or inf")
    if np.ptp(cheap) == 0.0:
        raise ValueError("the cheap label is constant; no calibration can be fitted")
    slope, intercept = np.polyfit(cheap, reference, 1)
    return float(slope), float(intercept)


class LinearCalibration(Transform):
    """Write ``slope * inputs[cheap_property] + intercept`` to ``inputs[property]``.

    Parameters
    ----------
    property
        Reference property (output key).
    cheap_property
        Key of the cheap label or of the model output predicting it.
    slope, intercept
        Fixed calibration; when omitted, fitted on the training split of the
        datamodule (whose database must hold both properties).
    """

    is_preprocessor: bool = True
    is_postprocessor: bool = True

    def __init__(
        self,
        property: str,
        cheap_property: str,
        slope: Optional[float] = None,
        intercept: Optional[float] = None,
    ):
        super().__init__()
        if (slope is None) != (intercept is None):
            raise ValueError("give both slope and intercept, or neither")
        self._property = property
        self._cheap_property = cheap_property
        self.register_buffer("initialized", torch.tensor(slope is not None))
        self.register_buffer("slope", torch.tensor(1.0 if slope is None else slope, dtype=torch.float64))
        self.register_buffer("intercept", torch.tensor(0.0 if intercept is None else intercept, dtype=torch.float64))

    def datamodule(self, _datamodule) -> None:
        """Fit on the raw (untransformed) labels of the training split."""
        if bool(self.initialized):
            return
        data = _datamodule.dataset
        missing = {self._property, self._cheap_property} - set(data.available_properties)
        if missing:
            raise KeyError(f"the database lacks {sorted(missing)} needed for the calibration")
        rows = [data.conn.get(int(i) + 1).data for i in _datamodule.train_idx]
        values = {
            key: np.array([float(np.ravel(r[key])[0]) for r in rows]) * data.conversions[key]
            for key in (self._property, self._cheap_property)
        }
        slope, intercept = fit_linear_calibration(values[self._cheap_property], values[self._property])
        self.slope = torch.tensor(slope, dtype=torch.float64)
        self.intercept = torch.tensor(intercept, dtype=torch.float64)
        self.initialized = torch.tensor(True)

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cheap = inputs[self._cheap_property]
        inputs[self._property] = cheap * self.slope.to(cheap.dtype) + self.intercept.to(cheap.dtype)
        return inputs


class CalibratedResidual(LinearCalibration):
    """Delta-learning target: ``property`` minus the calibrated cheap label, or plus it.

    As a data preprocessor (``inverse=False``) it replaces ``inputs[property]``
    by the residual ``property - (slope * cheap + intercept)``, with the
    calibration fitted on the training split only; a model trained on these
    inputs learns the residual.  As a model postprocessor (``inverse=True``,
    after the normalizer's inverse) it adds the calibrated cheap label back,
    so the model predicts ``baseline + residual`` in the target's units.  The
    inverse instance takes the fit of the forward instance among the
    datamodule's training transforms, so both use one calibration.

    Parameters
    ----------
    property
        Target property (replaced by the residual, or by the full prediction).
    cheap_property
        The cheap label of the same molecule (e.g. ``xtb_gap``); it must be
        loaded with the data, also at prediction time.
    inverse
        False: subtract the baseline (preprocessing); True: add it (postprocessing).
    slope, intercept
        Fixed calibration; when omitted, taken from the training split.

    Examples
    --------
    >>> import torch
    >>> from schnet_transfer.calibration import CalibratedResidual
    >>> to_residual = CalibratedResidual("gap", "xtb_gap", slope=2.0, intercept=0.5)
    >>> to_target = CalibratedResidual("gap", "xtb_gap", inverse=True, slope=2.0, intercept=0.5)
    >>> residual = to_residual({"gap": torch.tensor([4.0]), "xtb_gap": torch.tensor([1.5])})
    >>> residual["gap"].tolist()
    [0.5]
    >>> to_target({"gap": torch.tensor([0.5]), "xtb_gap": torch.tensor([1.5])})["gap"].tolist()
    [4.0]
    """

    def __init__(
        self,
        property: str,
        cheap_property: str,
        inverse: bool = False,
        slope: Optional[float] = None,
        intercept: Optional[float] = None,
    ):
        super().__init__(property, cheap_property, slope, intercept)
        self.inverse = inverse

    def datamodule(self, _datamodule) -> None:
        """Fit on the training split (forward) or copy the forward instance's fit (inverse)."""
        if bool(self.initialized):
            return
        forward = self._forward_instance(_datamodule) if self.inverse else None
        if forward is None:
            super().datamodule(_datamodule)
            return
        forward.datamodule(_datamodule)
        self.slope, self.intercept = forward.slope.clone(), forward.intercept.clone()
        self.initialized = torch.tensor(True)

    def _forward_instance(self, _datamodule) -> Optional["CalibratedResidual"]:
        for t in getattr(_datamodule, "train_transforms", None) or []:
            if isinstance(t, CalibratedResidual) and not t.inverse and t is not self \
                    and t._property == self._property:
                return t
        return None

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        value = inputs[self._property]
        cheap = inputs[self._cheap_property].to(value.dtype)
        baseline = cheap * self.slope.to(value.dtype) + self.intercept.to(value.dtype)
        inputs[self._property] = value + baseline if self.inverse else value - baseline
        return inputs
