"""Evaluation plots: round ticks whose labels name the value they stand at, whole counts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.training.evaluate import EvaluationReport
from cellinspect.training.plots import (
    Axis,
    histogram_plot,
    nice_ticks,
    roc_plot,
    write_plots,
)


def _report(good: list[float], bad: list[float]) -> EvaluationReport:
    per_image = [{"score": s, "defect": False} for s in good]
    per_image += [{"score": s, "defect": True} for s in bad]
    return EvaluationReport(
        model="flange-anomaly",
        version="1",
        task="anomaly",
        images=len(per_image),
        counts={"good": len(good), "scratch": len(bad)},
        per_image=per_image,
        threshold_review=1.009,
        threshold_fail=1.147,
    )


def _check_axis(axis: Axis, lo: float, hi: float, vertical: bool) -> None:
    values = [t.value for t in axis.ticks]
    assert axis.lo <= lo and axis.hi >= hi  # the ticks span every value drawn
    assert values[0] == axis.lo and values[-1] == axis.hi and len(values) >= 2
    steps = np.diff(values)
    assert np.allclose(steps, steps[0])
    for tick in axis.ticks:
        assert float(tick.label) == pytest.approx(tick.value, abs=1e-12)  # label = its value
        fraction = (tick.value - axis.lo) / (axis.hi - axis.lo)
        expected = 420 - fraction * 360 if vertical else 60 + fraction * 520
        assert abs(tick.pixel - expected) <= 0.5  # drawn where the value is


@pytest.mark.parametrize("n_good", [3, 37, 240])
def test_score_histogram_counts_are_whole_and_ticks_stand_at_their_values(n_good: int) -> None:
    rng = np.random.default_rng(n_good)
    good = [float(s) for s in rng.normal(0.95, 0.03, n_good)]
    bad = [float(s) for s in rng.normal(1.25, 0.1, 7)]
    figure = histogram_plot(_report(good, bad))
    assert figure.image.shape == (480, 640, 3)
    assert figure.x is not None and figure.y is not None
    lo, hi = min([*good, *bad, 1.009]), max([*good, *bad, 1.147])
    _check_axis(figure.x, lo, hi, vertical=False)
    edges = np.linspace(lo, hi, 31)  # the plot's 30 bins
    top = max(np.histogram(good, edges)[0].max(), np.histogram(bad, edges)[0].max())
    _check_axis(figure.y, 0.0, float(top), vertical=True)
    for tick in figure.y.ticks:
        assert tick.value == int(tick.value) and tick.label == str(int(tick.value))


def test_roc_axes_are_rates_with_exact_labels() -> None:
    figure = roc_plot(_report([0.9, 0.95, 1.0], [1.1, 1.2]))
    assert figure.x is not None and figure.y is not None
    for axis, vertical in ((figure.x, False), (figure.y, True)):
        _check_axis(axis, 0.0, 1.0, vertical)
        assert [t.label for t in axis.ticks] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]


@pytest.mark.parametrize(
    ("lo", "hi", "integer", "labels"),
    [
        (0.0, 3.0, True, ["0", "1", "2", "3"]),
        (0.0, 37.0, True, ["0", "10", "20", "30", "40"]),
        (0.0, 1.0, True, ["0", "1"]),
        (0.93, 1.147, False, ["0.90", "0.95", "1.00", "1.05", "1.10", "1.15"]),
        (0.0, 12.0, False, ["0.0", "2.5", "5.0", "7.5", "10.0", "12.5"]),
        (-2.3, 5.1, False, ["-4", "-2", "0", "2", "4", "6"]),
    ],
)
def test_nice_ticks(lo: float, hi: float, integer: bool, labels: list[str]) -> None:
    start, end, ticks = nice_ticks(lo, hi, integer=integer)
    assert [label for _, label in ticks] == labels
    assert start <= lo and end >= hi


def test_write_plots_writes_the_figures(tmp_path: Path) -> None:
    written = write_plots(_report([0.9, 0.95, 1.0], [1.1, 1.2]), tmp_path)
    assert [p.name for p in written] == ["roc.png", "scores.png", "confusion.png"]
    for path in written:
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (480, 640, 3)
