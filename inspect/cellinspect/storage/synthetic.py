"""Synthetic results with small images, for the benchmark, demos and tests of the store.

They exercise storage and the API, not a model: scores and classes are made up, but every
field is filled the way the inspector fills it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np

from cellinspect.entities import (
    ImageU8,
    InspectedFrame,
    InspectionResult,
    ModelRef,
    RoiDecision,
    Verdict,
)

EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
CLASSES = ("scratch", "crack", "dent")


def synthetic_result(
    index: int,
    verdict: Verdict = Verdict.FAIL,
    *,
    defect_class: str | None = None,
    score: float = 0.5,
    captured: datetime | None = None,
    part_id: int | None = None,
    model_version: str = "1.0.0",
    latency_ms: float = 12.0,
    source: str = "synthetic",
    prefix: str = "r",
    station_id: str | None = None,
) -> InspectionResult:
    """One plausible result; `index` fixes its id, time (one per second) and part id."""
    cls = defect_class if verdict is not Verdict.PASS else None
    roi_scores = {"anomaly:anomaly": float(score)}
    if cls is not None:
        roi_scores[f"classifier:{cls}"] = float(score)
    return InspectionResult(
        result_id=f"{prefix}{index:06d}",
        frame_id=index,
        source=source,
        verdict=verdict,
        reasons=() if verdict is Verdict.PASS else (f"anomaly score {score:.2f} over threshold",),
        captured_wall=captured or EPOCH + timedelta(seconds=index),
        recipe_name="synthetic",
        recipe_sha256="0" * 64,
        defect_class=cls,
        rois=(
            RoiDecision(
                roi="part", verdict=verdict, reasons=(), defect_class=cls, scores=roi_scores
            ),
        ),
        models=(
            ModelRef("anomaly", model_version, "a" * 64),
            ModelRef("classifier", model_version, "b" * 64),
        ),
        timings_ms={"preprocess": 1.0, "inference": latency_ms - 2.0, "total": latency_ms},
        path=f"part_{index:06d}.png",
        part_id=index if part_id is None else part_id,
        station_id=station_id,
    )


def synthetic_image(seed: str, size: int = 64) -> ImageU8:
    """A small BGR image fixed by `seed` (different seeds give different pixels)."""
    digest = hashlib.sha256(seed.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def synthetic_frame(
    result: InspectionResult, size: int = 64, with_images: bool = True
) -> InspectedFrame:
    """The result with an image and a reddened overlay (or none)."""
    if not with_images:
        return InspectedFrame(result)
    image = synthetic_image(result.result_id, size)
    overlay = image.copy()
    overlay[..., 2] = 255
    return InspectedFrame(result, image, overlay)
