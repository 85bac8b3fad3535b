"""The z-score label normalizer: exact round trip, training-split statistics, clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from schnetpack.data import ASEAtomsData, AtomsDataModule

from schnet_transfer.datasets import convert_hopv
from schnet_transfer.normalizer import StandardizeProperty

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hopv_db(tmp_path_factory):
    return convert_hopv(ROOT / "data" / "hopv", tmp_path_factory.mktemp("hopv") / "hopv.db", limit=40)


def _datamodule(db, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    dm = AtomsDataModule(db, batch_size=7, num_train=20, num_val=10, num_test=10,
                         split_file=str(tmp_path / "split.npz"), num_workers=0)
    dm.setup()
    return dm


def test_statistics_come_from_the_training_split_only(hopv_db, tmp_path):
    dm = _datamodule(hopv_db, tmp_path)
    data = ASEAtomsData(hopv_db)
    gaps = np.array([float(data[i]["gap"][0]) for i in range(40)])
    assert data[0]["gap"].dtype == torch.float64  # labels are stored in double precision
    train = gaps[dm.train_idx]
    norm = StandardizeProperty("gap")
    norm.datamodule(dm)
    assert float(norm.mean) == pytest.approx(train.mean(), abs=1e-10)
    assert float(norm.stddev) == pytest.approx(train.std(), abs=1e-10)
    assert float(norm.mean) != pytest.approx(gaps.mean(), abs=1e-6)  # not the full set
    # a second datamodule (the fine-tuning data) does not overwrite saved statistics
    saved = norm.state_dict()
    assert saved["initialized"] and float(saved["mean"]) == float(norm.mean)
    fresh = StandardizeProperty("gap", inverse=True)
    fresh.load_state_dict(saved)
    fresh.datamodule(_datamodule(hopv_db, tmp_path / "other"))
    assert float(fresh.mean) == float(norm.mean)


def test_round_trip_is_exact_on_real_labels(hopv_db, tmp_path):
    dm = _datamodule(hopv_db, tmp_path)
    forward, inverse = StandardizeProperty("gap"), StandardizeProperty("gap", inverse=True)
    forward.datamodule(dm)
    inverse.datamodule(dm)
    gaps = torch.tensor([float(ASEAtomsData(hopv_db)[i]["gap"][0]) for i in range(40)],
                        dtype=torch.float64)
    z = forward({"gap": gaps.clone()})["gap"]
    assert float(z[dm.train_idx].mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(z[dm.train_idx].std(unbiased=False)) == pytest.approx(1.0, abs=1e-12)
    back = inverse({"gap": z})["gap"]
    assert torch.allclose(back, gaps, rtol=0, atol=1e-12)


def test_bad_statistics_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        StandardizeProperty("gap", mean=0.0, stddev=0.0)
    with pytest.raises(ValueError, match="NaN"):
        StandardizeProperty("gap", mean=float("nan"), stddev=1.0)
    with pytest.raises(ValueError, match="both"):
        StandardizeProperty("gap", mean=1.0)

    class NanStats:
        def get_stats(self, *args):
            return torch.tensor(float("nan")), torch.tensor(1.0)

    with pytest.raises(ValueError, match="NaN"):
        StandardizeProperty("gap").datamodule(NanStats())


def test_linear_calibration_is_fitted_on_the_training_split(tmp_path):
    from schnet_transfer.calibration import LinearCalibration, fit_linear_calibration

    db = str(ROOT / "data" / "qm9" / "test_qm9.db")  # 20 real QM9 molecules, read only
    dm = AtomsDataModule(db, batch_size=5, num_train=12, num_val=4, num_test=4,
                         split_file=str(tmp_path / "split.npz"), num_workers=0,
                         load_properties=["gap", "lumo"])
    dm.setup()
    calibrate = LinearCalibration("gap", cheap_property="lumo")
    calibrate.datamodule(dm)
    data = ASEAtomsData(db)
    lumo = np.array([float(data[i]["lumo"][0]) for i in range(20)])
    gap = np.array([float(data[i]["gap"][0]) for i in range(20)])
    train = np.asarray(dm.train_idx)
    slope, intercept = np.polyfit(lumo[train], gap[train], 1)
    assert float(calibrate.slope) == pytest.approx(slope, rel=1e-9)
    assert float(calibrate.intercept) == pytest.approx(intercept, rel=1e-9, abs=1e-12)
    assert float(calibrate.slope) != pytest.approx(np.polyfit(lumo, gap, 1)[0], rel=1e-6)
    out = calibrate({"lumo": torch.tensor(lumo)})["gap"].numpy()
    assert np.allclose(out, slope * lumo + intercept)
    with pytest.raises(ValueError, match="constant"):
        fit_linear_calibration(np.ones(3), np.arange(3.0))
    with pytest.raises(KeyError, match="lacks"):
        LinearCalibration("gap", cheap_property="xtb_gap").datamodule(dm)
