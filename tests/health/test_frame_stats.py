"""Frame statistics move the right way when the picture degrades (rendered flanges)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cellinspect.datagen.drift import Drift, DriftKind
from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.entities import ImageU8
from cellinspect.health.frame_stats import FrameStats, frame_stats


@pytest.fixture(scope="module")
def part() -> ImageU8:
    spec = next(s for s in plan_parts(4, 0, 0.0) if s.is_good)
    return render_part(spec)


def _at(kind: DriftKind, image: ImageU8, severity: float) -> FrameStats:
    drift = Drift(kind, start_part=1, full_part=101)
    return frame_stats(drift.apply(image, 1 + round(severity * 100), "good"))


def test_blur_lowers_focus_and_noise_not_brightness(part: ImageU8) -> None:
    sharp = frame_stats(part)
    soft = _at(DriftKind.FOCUS, part, 0.5)
    assert soft.focus < 0.7 * sharp.focus
    assert soft.noise < sharp.noise
    assert soft.brightness == pytest.approx(sharp.brightness, rel=0.02)


def test_dimming_lowers_brightness_and_contrast(part: ImageU8) -> None:
    lit = frame_stats(part)
    dim = _at(DriftKind.LIGHT, part, 0.5)
    assert dim.brightness == pytest.approx(lit.brightness * 0.75, rel=0.05)
    assert dim.contrast < 0.8 * lit.contrast


def test_a_shifted_camera_moves_the_part_centroid_by_the_shift(part: ImageU8) -> None:
    here = frame_stats(part)
    m = np.array([[1, 0, 8], [0, 1, -5]], dtype=np.float32)
    moved = frame_stats(
        np.ascontiguousarray(cv2.warpAffine(part, m, (320, 320), borderMode=cv2.BORDER_REPLICATE))
    )
    assert moved.x - here.x == pytest.approx(8, abs=0.5)
    assert moved.y - here.y == pytest.approx(-5, abs=0.5)


def test_overexposure_clips_and_noise_rises_with_sensor_noise(part: ImageU8) -> None:
    assert frame_stats(part).clipping < 0.01
    bright = np.asarray(cv2.convertScaleAbs(part, alpha=3.0), dtype=np.uint8)
    assert frame_stats(bright).clipping > 0.2
    rng = np.random.default_rng(0)
    noisy = np.asarray(np.clip(part + rng.normal(0, 6, part.shape), 0, 255), dtype=np.uint8)
    assert frame_stats(noisy).noise > 2 * frame_stats(part).noise


def test_a_frame_without_a_part_has_no_position() -> None:
    blank = np.full((64, 64, 3), 90, np.uint8)
    stats = frame_stats(blank)
    assert math.isnan(stats.x) and math.isnan(stats.y)
    assert stats.focus == 0.0 and stats.contrast == 0.0
