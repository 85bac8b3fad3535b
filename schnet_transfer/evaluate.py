"""Evaluate a trained ``spktrain`` run on its test split in physical units.

``spktrain`` logs metrics on the standardized targets; this module runs the
saved ``best_model`` (with its postprocessors, so outputs are in the target's
units) on the test indices of the run's ``split.npz``.

The model file is unpickled (``torch.load(weights_only=False)``; a whole
schnetpack model cannot be read otherwise), so code in it runs: evaluate only
models you trained yourself.

Examples
--------
``split_errors("runs/finetune_hopv_seed0", "~/.cache/schnet_transfer/hopv.db", "gap")``
returns ``{"mae": ..., "rmse": ..., "n": ...}`` in eV.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import schnetpack as spk
import torch
from schnetpack.data import ASEAtomsData, AtomsLoader

__all__ = ["predict", "split_errors"]


def predict(
    model_path: str | os.PathLike,
    db: str | os.PathLike,
    indices: Sequence[int],
    property: str,
    batch_size: int = 32,
    postprocess: bool = True,
    trust_pickle: bool = False,
    extra_properties: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and reference values of ``indices``.

    With ``postprocess`` (default) predictions are in physical units; without,
    they are the raw (standardized) network outputs.  ``extra_properties``
    are loaded with the data for postprocessors that read them (the cheap
    label of a Delta-learning model, ``xtb_gap``).

    Raises
    ------
    FileNotFoundError
        If the model or the database does not exist.

    Warnings
    --------
    ``model_path`` is a whole pickled schnetpack model (``best_model`` of
    ``spktrain``); it is read with ``torch.load(weights_only=False)``, which
    runs code stored in the file.  Give only models you trained yourself, and
    say so with ``trust_pickle=True`` (without it the file is refused).
    """
    if not trust_pickle:
        raise ValueError(f"{model_path} is a pickled model: reading it runs code stored in the file; "
                         "pass trust_pickle=True if you trained it yourself")
    for path in (model_path, db):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
    # a whole pickled model (not only weights): unpickling is needed, see Warnings
    model = torch.load(model_path, map_location="cpu", weights_only=False)
    model.do_postprocessing = postprocess
    model.eval()
    cutoff = float(model.representation.cutoff)
    data = ASEAtomsData(
        str(db),
        load_properties=[property, *extra_properties],
        transforms=[spk.transform.MatScipyNeighborList(cutoff), spk.transform.CastTo32()],
    ).subset(list(map(int, indices)))
    predictions, references = [], []
    for batch in AtomsLoader(data, batch_size=batch_size, shuffle=False):
        references.append(batch[property].double().numpy())
        with torch.no_grad():
            predictions.append(model(batch)[property].double().numpy())
    return np.concatenate(predictions), np.concatenate(references)


def split_errors(
    run_dir: str | os.PathLike,
    db: str | os.PathLike,
    property: str,
    split_file: str | os.PathLike | None = None,
) -> dict[str, float]:
    """MAE and RMSE of a run's ``best_model`` on the test indices of its split.

    ``split_file`` defaults to the run's own ``split.npz``; pass the shared file
    when the run was given ``data.split_file``.  The run's ``best_model`` is
    unpickled (``predict(..., trust_pickle=True)``): call it only on runs you made yourself.
    """
    split = np.load(split_file or os.path.join(run_dir, "split.npz"))
    pred, ref = predict(os.path.join(run_dir, "best_model"), db, split["test_idx"], property, trust_pickle=True)
    err = pred - ref
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "n": int(len(err)),
    }
