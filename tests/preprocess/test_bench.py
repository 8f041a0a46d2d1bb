"""The benchmark runs end to end (timings are reported, never asserted)."""

from __future__ import annotations

import math

from cellinspect.preprocess.bench import benchmark_preprocess


def test_benchmark_reports_every_hot_path() -> None:
    results = benchmark_preprocess(repeats=3)
    assert set(results) == {
        "undistort_320x320_ms",
        "prepare_256_to_224_nchw_ms",
        "prepare_224_no_resize_nchw_ms",
        "prepare_256_to_224_nhwc_ms",
        "prepare_224_no_resize_nhwc_ms",
    }
    assert all(math.isfinite(v) and v > 0 for v in results.values())
