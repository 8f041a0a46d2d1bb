"""How long rendering a sample part takes (median per label), for reports and the CLI."""

from __future__ import annotations

import statistics
import time

from cellinspect.datagen.camera import distort_image
from cellinspect.datagen.part import LABELS, make_spec
from cellinspect.datagen.render import render_part


def benchmark_render(repeats: int = 10, seed: int = 0) -> dict[str, float]:
    """Median milliseconds of render_part per label over `repeats` parts, and of the lens step."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    render_part(make_spec(0, seed, LABELS[0]))  # first call fills the caches
    results: dict[str, float] = {}
    everything: list[float] = []
    for label in LABELS:
        times = []
        for index in range(repeats):
            spec = make_spec(index, seed, label)
            start = time.perf_counter()
            image = render_part(spec)
            times.append((time.perf_counter() - start) * 1000.0)
        results[f"render_{label}_ms"] = statistics.median(times)
        everything += times
    results["render_all_ms"] = statistics.median(everything)
    lens = []
    for _ in range(repeats):
        start = time.perf_counter()
        distort_image(image)
        lens.append((time.perf_counter() - start) * 1000.0)
    results["distort_image_ms"] = statistics.median(lens)
    return results
