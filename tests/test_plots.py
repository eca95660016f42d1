"""training.plots writes real, non-trivial PNG files and leaves no figure open."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from training.plots import calibration_curve, feature_importance, lift_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.binomial(1, 0.2, n)
    good = np.clip(0.2 + 0.35 * (y - 0.2) + rng.normal(0, 0.15, n), 0, 1)
    return y, {"model": good, "noise": rng.uniform(0, 1, n)}


def test_lift_chart_writes_a_png(tmp_path, scored):
    y, scores = scored
    out = lift_chart(y, scores, tmp_path / "nested" / "lift.png")
    assert out == tmp_path / "nested" / "lift.png"
    width, height = _png_size(out)
    assert width > height  # gain curves and decile bars side by side
    assert out.stat().st_size > 20_000
    assert plt.get_fignums() == []


def test_calibration_curve_writes_a_png(tmp_path, scored):
    y, probs = scored
    out = calibration_curve(y, probs, tmp_path / "calibration.png", n_bins=10)
    width, height = _png_size(out)
    assert height > width  # reliability diagram above the histogram
    assert out.stat().st_size > 20_000
    assert plt.get_fignums() == []


def test_feature_importance_writes_a_png_sized_to_top(tmp_path):
    names = [f"feature_{i}" for i in range(40)]
    importances = np.arange(40, dtype=float)
    few = feature_importance(names, importances, tmp_path / "few.png", top=5)
    many = feature_importance(names, importances, str(tmp_path / "many.png"), top=25)
    assert few.stat().st_size > 5_000
    assert _png_size(many)[1] > _png_size(few)[1]  # one bar per row
    assert plt.get_fignums() == []


def test_plots_reject_bad_input(tmp_path, scored):
    y, scores = scored
    with pytest.raises(ValueError, match="length mismatch"):
        lift_chart(y, {"short": scores["model"][:10]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        calibration_curve(y, {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="length mismatch"):
        feature_importance(["a", "b"], [1.0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert plt.get_fignums() == []
