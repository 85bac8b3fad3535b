"""The cheap-QC label normalizer: a schnetpack ``Transform`` that z-scores a property.

Pre-training labels (xTB) and fine-tuning labels (PBE0 gaps, experimental
hydration free energies) live on different scales.  Following Kirschbaum &
Bande (2024), both are standardized to mean 0 and standard deviation 1 with the
statistics of the *training split* of their own dataset, so the pre-trained
output head starts on the right scale for the target.

Use one instance as a data preprocessor and a second one with
``inverse=True`` as a model postprocessor.  Both fetch the statistics from the
``AtomsDataModule`` (training split only) and keep them in buffers, so a saved
model predicts in the target's physical units without the training data.  Like
schnetpack's ``RemoveOffsets`` it can remove single-atom references
(``remove_atomrefs``, ``is_extensive``), and after a ``RemoveOffsets`` it
standardizes what that transform left (see :class:`StandardizeProperty`).

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

import copy
from typing import Dict, List, Optional

import torch
import schnetpack.properties as structure
from schnetpack.nn import scatter_add
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
    remove_atomrefs
        Also subtract the single-atom references of the database before
        standardizing (the inverse adds them back), as schnetpack's
        ``RemoveOffsets(remove_atomrefs=True)`` / ``AddOffsets(add_atomrefs=True)``
        do.  Leave False when a ``RemoveOffsets`` before this transform
        already removed them.
    is_extensive
        As in ``RemoveOffsets``: the atom-reference offset of a molecule is the
        sum over its atoms (True) or that sum divided by the number of atoms.
    zmax, atomrefs
        Size of the atom-reference table, or the table itself (else it is read
        from the training dataset's ``atomrefs``).

    Raises
    ------
    ValueError
        If ``stddev`` is not positive or a statistic is not finite, or (from
        the datamodule) the training split has fewer than 2 molecules or only
        equal labels, or atom references are asked for and the database has
        none: the message says which.

    Notes
    -----
    The statistics describe the labels *as this transform receives them*: in
    a datamodule whose transforms run e.g. ``RemoveOffsets`` first, they are
    measured on the training labels after those transforms (and after its own
    atom-reference removal), so the standardized training labels have mean 0
    and std 1 whatever came before.  Without preceding transforms they come
    from ``AtomsDataModule.get_stats`` (cached).  An inverse instance takes the
    statistics of the forward instance for the same property in the
    datamodule's transforms, so a postprocessor chain ``[..., inverse,
    AddOffsets]`` undoes ``[RemoveOffsets, forward, ...]``.
    """

    is_preprocessor: bool = True
    is_postprocessor: bool = True

    def __init__(
        self,
        property: str,
        inverse: bool = False,
        mean: Optional[float] = None,
        stddev: Optional[float] = None,
        remove_atomrefs: bool = False,
        is_extensive: bool = True,
        zmax: int = 100,
        atomrefs: Optional[torch.Tensor] = None,
    ):
        super().__init__()
        if (mean is None) != (stddev is None):
            raise ValueError("give both mean and stddev, or neither")
        self._property = property
        self.inverse = inverse
        self.remove_atomrefs = remove_atomrefs
        self.is_extensive = is_extensive
        self._atomrefs_given = atomrefs is not None
        self.register_buffer("initialized", torch.tensor(mean is not None))
        self.register_buffer("mean", torch.tensor(0.0 if mean is None else mean, dtype=torch.float64))
        self.register_buffer("stddev", torch.tensor(1.0 if stddev is None else stddev, dtype=torch.float64))
        if remove_atomrefs:
            table = torch.zeros(zmax) if atomrefs is None else torch.as_tensor(atomrefs)
            self.register_buffer("atomref", table.detach().to(torch.float64))
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
            deviation), its statistics are not usable, or the database has no
            atom references for ``property`` while ``remove_atomrefs`` is set.
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
        if self.remove_atomrefs and not self._atomrefs_given:
            refs = _datamodule.train_dataset.atomrefs
            if self._property not in refs:
                raise ValueError(
                    f"remove_atomrefs=True but the database {getattr(_datamodule, 'datapath', '?')} "
                    f"has no atom references for {self._property!r}"
                )
            self.atomref = refs[self._property].detach().to(torch.float64)
        forward = self._forward_instance(_datamodule) if self.inverse else None
        if forward is not None:
            forward.datamodule(_datamodule)
            mean, stddev = forward.mean, forward.stddev
        else:
            before = self._preceding(_datamodule)
            if before or self.remove_atomrefs:
                mean, stddev = self._measure(_datamodule, before)
            else:
                mean, stddev = _datamodule.get_stats(self._property, False, False)
        self._check(mean, stddev, n_train)
        self.mean = mean.detach().to(torch.float64).reshape(())
        self.stddev = stddev.detach().to(torch.float64).reshape(())
        self.initialized = torch.tensor(True)

    def _forward_instance(self, _datamodule) -> Optional["StandardizeProperty"]:
        """The non-inverse instance for the same property among the training transforms."""
        for t in getattr(_datamodule, "train_transforms", None) or []:
            if isinstance(t, StandardizeProperty) and not t.inverse and t is not self \
                    and t._property == self._property:
                return t
        return None

    def _preceding(self, _datamodule) -> List[Transform]:
        """The training transforms that run before this one (empty if it is not among them)."""
        transforms = list(getattr(_datamodule, "train_transforms", None) or [])
        for i, t in enumerate(transforms):
            if t is self:
                return transforms[:i]
        return []

    def _measure(self, _datamodule, before: List[Transform]):
        """Population mean and std of the training labels after ``before`` and own offsets."""
        data = copy.copy(_datamodule.train_dataset)
        data.transforms = before
        values = []
        for i in range(len(data)):
            inputs = data[i]
            if self.remove_atomrefs:
                inputs[self._property] = inputs[self._property] - self._atomref_offset(inputs)
            values.append(inputs[self._property].detach().to(torch.float64).reshape(-1))
        values = torch.cat(values)
        return values.mean(), values.std(unbiased=False)

    def _atomref_offset(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum (or mean, if intensive) of the atom references of each molecule."""
        n_atoms = inputs[structure.n_atoms]
        idx_m = inputs.get(structure.idx_m)
        if idx_m is None:  # one molecule, as in data preprocessing
            idx_m = torch.zeros_like(inputs[structure.Z])
        offset = scatter_add(self.atomref[inputs[structure.Z]], idx_m, dim_size=n_atoms.shape[0])
        return offset if self.is_extensive else offset / n_atoms

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        value = inputs[self._property]
        mean = self.mean.to(value.dtype)
        stddev = self.stddev.to(value.dtype)
        if self.inverse:
            value = value * stddev + mean
            if self.remove_atomrefs:
                value = value + self._atomref_offset(inputs).to(value.dtype)
        else:
            if self.remove_atomrefs:
                value = value - self._atomref_offset(inputs).to(value.dtype)
            value = (value - mean) / stddev
        inputs[self._property] = value
        return inputs
