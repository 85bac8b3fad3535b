"""Refuse a data split too small to train on before training starts.

schnetpack turns relative split sizes into ``int(fraction * n)``, so a tiny
database (3 molecules with the default 0.7 / 0.1 / 0.2) gets an empty
validation split.  Training then runs an epoch and fails with a Lightning
error about the missing ``val_loss`` (monitored by checkpointing, early
stopping and the learning-rate schedule).  :class:`SplitSizeCheck`, a
Lightning callback in the extension's configs, checks the split right after
the datamodule set it up and raises one ``ValueError`` naming the sizes.

The training split's own constraint (at least 2 molecules for a standard
deviation) is checked by :class:`schnet_transfer.normalizer.StandardizeProperty`,
which runs earlier, in the datamodule's setup.

Examples
--------
>>> from types import SimpleNamespace
>>> from schnet_transfer.split_check import check_split_sizes
>>> dm = SimpleNamespace(datapath="tiny.db", train_idx=[0, 1], val_idx=[], test_idx=[])
>>> check_split_sizes(dm)
Traceback (most recent call last):
...
ValueError: tiny.db: 2 molecules split into train 2 / val 0 / test 0; ...
"""

from __future__ import annotations

from pytorch_lightning import Callback

__all__ = ["SplitSizeCheck", "check_split_sizes", "MIN_TRAIN", "MIN_VAL"]

#: Smallest training split: the label normalizer needs a standard deviation.
MIN_TRAIN = 2
#: Smallest validation split: ``val_loss`` is monitored.
MIN_VAL = 1


def check_split_sizes(datamodule) -> None:
    """Raise if the split of a set-up ``AtomsDataModule`` is too small to train on.

    Raises
    ------
    ValueError
        If the training split has fewer than :data:`MIN_TRAIN` or the
        validation split fewer than :data:`MIN_VAL` molecules.
    """
    sizes = {k: len(getattr(datamodule, f"{k}_idx") or []) for k in ("train", "val", "test")}
    if sizes["train"] >= MIN_TRAIN and sizes["val"] >= MIN_VAL:
        return
    dataset = getattr(datamodule, "dataset", None)
    total = sum(sizes.values()) if dataset is None else len(dataset)
    raise ValueError(
        f"{getattr(datamodule, 'datapath', 'the database')}: {total} molecules "
        f"split into train {sizes['train']} / val {sizes['val']} / test {sizes['test']}; "
        f"training needs at least {MIN_TRAIN} training and {MIN_VAL} validation molecule(s) "
        "(val_loss is monitored); use a larger database or set data.num_train / data.num_val "
        "to absolute sizes"
    )


class SplitSizeCheck(Callback):
    """Lightning callback: :func:`check_split_sizes` on the datamodule before fitting."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.datamodule is not None:
            check_split_sizes(trainer.datamodule)
