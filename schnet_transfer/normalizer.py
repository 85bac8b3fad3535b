"""The cheap-QC label normalizer: a schnetpack ``Transform`` that z-scores a property.

Pre-training labels (xTB) and fine-tuning labels (PBE0 gaps, experimental
hydration free energies) live on different scales.  Following Kirschbaum &
Bande (2024), both are standardized to mean 0 and standard deviation 1 with the
statistics of the *training split* of their own dataset, so the pre-trained
output head starts on the right scale for the target.

Use one instance as a data preprocessor and a second one with
``inverse=True`` as a model postprocessor.  Both fetch the statistics from the
``AtomsDataModule`` (which computes them on the training split only, cached, as
for schnetpack's ``RemoveOffsets``) and keep them in buffers, so a saved model
predicts in the target's physical units without the training data.

Examples
--------
>>> import torch
>>> from schnet_transfer.normalizer import StandardizeProperty
>>> forward = StandardizeProperty("gap", mean=2.0, stddev=0.5)
>>> inverse = StandardizeProperty("gap", mean=2.0, stddev=0.5, inverse=True)
>>> z = forward({"gap": torch.tensor([3.0])})["gap"]
>>> z
tensor([2.])
>>> inverse({"gap": z})["gap"]
tensor([3.])
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from schnetpack.transform import Transform

__all__ = ["StandardizeProperty"]


class StandardizeProperty(Transform):
    """Standardize ``property`` to mean 0 / std 1, or undo it (``inverse=True``).

    Parameters
    ----------
    property
        Key of the property in the inputs (preprocessor) or results (postprocessor).
    inverse
        False: ``(y - mean) / stddev`` (data preprocessing).  True:
        ``y * stddev + mean`` (model postprocessing, back to physical units).
    mean, stddev
        Fixed statistics.  When omitted they are taken from the training split
        via the datamodule the first time one is attached.

    Raises
    ------
    ValueError
        If ``stddev`` is not positive or a statistic is not finite, or (from
        the datamodule) the training split has fewer than 2 molecules or only
        equal labels: the message says which.
    """

    is_preprocessor: bool = True
    is_postprocessor: bool = True

    def __init__(
        self,
        property: str,
        inverse: bool = False,
        mean: Optional[float] = None,
        stddev: Optional[float] = None,
    ):
        super().__init__()
        if (mean is None) != (stddev is None):
            raise ValueError("give both mean and stddev, or neither")
        self._property = property
        self.inverse = inverse
        self.register_buffer("initialized", torch.tensor(mean is not None))
        self.register_buffer("mean", torch.tensor(0.0 if mean is None else mean, dtype=torch.float64))
        self.register_buffer("stddev", torch.tensor(1.0 if stddev is None else stddev, dtype=torch.float64))
        if mean is not None:
            self._check(self.mean, self.stddev)

    def _check(
        self, mean: torch.Tensor, stddev: torch.Tensor, n_train: Optional[int] = None
    ) -> None:
        where = "" if n_train is None else f" over {n_train} training molecules"
        if not (torch.isfinite(mean) and torch.isfinite(stddev)):
            raise ValueError(
                f"non-finite statistics for {self._property!r}{where} (mean={float(mean)}, "
                f"stddev={float(stddev)}); check the labels for NaN"
            )
        if stddev <= 0:
            same = "" if n_train is None else f": all {n_train} training labels are equal"
            raise ValueError(
                f"stddev of {self._property!r} must be positive, got {float(stddev)}{same}"
            )

    def datamodule(self, _datamodule) -> None:
        """Take mean and std of the training split from an ``AtomsDataModule``.

        Raises
        ------
        ValueError
            If the training split has fewer than 2 molecules (no standard
            deviation) or its statistics are not usable.
        """
        if bool(self.initialized):
            return
        train_idx = getattr(_datamodule, "train_idx", None)
        n_train = None if train_idx is None else len(train_idx)
        if n_train is not None and n_train < 2:
            raise ValueError(
                f"cannot standardize {self._property!r} on a training split of {n_train} "
                f"molecule(s) (database {getattr(_datamodule, 'datapath', '?')}): a standard "
                "deviation needs at least 2; use a larger database or data.num_train"
            )
        mean, stddev = _datamodule.get_stats(self._property, False, False)
        self._check(mean, stddev, n_train)
        self.mean = mean.detach().to(torch.float64).reshape(())
        self.stddev = stddev.detach().to(torch.float64).reshape(())
        self.initialized = torch.tensor(True)

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        value = inputs[self._property]
        mean = self.mean.to(value.dtype)
        stddev = self.stddev.to(value.dtype)
        if self.inverse:
            inputs[self._property] = value * stddev + mean
        else:
            inputs[self._property] = (value - mean) / stddev
        return inputs
