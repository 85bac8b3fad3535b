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

__all__ = ["fit_linear_calibration", "LinearCalibration"]


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
