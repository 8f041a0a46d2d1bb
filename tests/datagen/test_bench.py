"""The render benchmark runs end to end (timings are reported, never asserted)."""

from __future__ import annotations

import math

import pytest

from cellinspect.datagen.bench import benchmark_render
from cellinspect.datagen.flange import LABELS


def test_benchmark_reports_every_label() -> None:
    results = benchmark_render(repeats=1)
    expected = {f"render_{label}_ms" for label in LABELS} | {"render_all_ms", "distort_image_ms"}
    assert set(results) == expected
    assert all(math.isfinite(v) and v > 0 for v in results.values())


def test_benchmark_needs_a_repeat() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        benchmark_render(repeats=0)
