"""Per-frame camera statistics, cheap enough for every part (well under a millisecond).

Each number answers one question an operator would otherwise ask only after the rejects
pile up: is the lens still in focus (variance of the Laplacian), is the lamp as bright as it
was (mean), has the contrast or the sensor noise changed, is the image clipping, and is the
part still where the camera saw it at teach time (centroid of the largest blob).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from cellinspect.entities import ImageU8

CLIP_LOW = 2
CLIP_HIGH = 253
POSITION_SCALE = 4

# Immerkaer's kernel: the Laplacian of a Laplacian, which cancels smooth image content and
# leaves the sensor noise ("Fast Noise Variance Estimation", CVIU 1996).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


class Stat(enum.StrEnum):
    """The statistics the health monitor follows (names used in the station file)."""

    FOCUS = "focus"
    BRIGHTNESS = "brightness"
    CONTRAST = "contrast"
    NOISE = "noise"
    CLIPPING = "clipping"
    POSITION = "position"
    SCORE_DRIFT = "score_drift"
    SCORE_SHIFT = "score_shift"


FRAME_STATS: tuple[Stat, ...] = (
    Stat.FOCUS,
    Stat.BRIGHTNESS,
    Stat.CONTRAST,
    Stat.NOISE,
    Stat.CLIPPING,
)
"""Statistics compared with the baseline as a relative change (fraction of the baseline)."""


@dataclass(frozen=True, slots=True)
class FrameStats:
    """One frame's numbers; `x`, `y` are the part's centroid in pixels (NaN: no part found)."""

    focus: float
    brightness: float
    contrast: float
    noise: float
    clipping: float
    x: float
    y: float

    def value(self, stat: Stat) -> float:
        return float(getattr(self, stat.value))


def _gray(image: ImageU8) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def part_centroid(gray: np.ndarray) -> tuple[float, float]:
    """Centroid of the largest blob after Otsu's threshold (the part against the belt).

    Found on a quarter-size copy: the area average smooths surface texture that would split
    the part's mask, and costs less; the moments still give the centroid to a fraction of
    a pixel.
    """
    h, w = gray.shape
    small = cv2.resize(
        gray, (w // POSITION_SCALE, h // POSITION_SCALE), interpolation=cv2.INTER_AREA
    )
    _, mask = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    covered = cv2.countNonZero(mask) / mask.size
    if not 0.01 <= covered <= 0.95:  # an empty or flat frame: nothing stands out
        return math.nan, math.nan
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return math.nan, math.nan
    largest = max(contours, key=cv2.contourArea)
    m = cv2.moments(largest)
    if m["m00"] <= 0:
        return math.nan, math.nan
    # pixel centres: small pixel i covers full-size pixels 4i .. 4i+3
    k = POSITION_SCALE
    return (m["m10"] / m["m00"] + 0.5) * k - 0.5, (m["m01"] / m["m00"] + 0.5) * k - 0.5


def frame_stats(image: ImageU8) -> FrameStats:
    """Focus, brightness, contrast, noise, clipping and part position of one frame."""
    gray = _gray(image)
    h, w = gray.shape
    mean, std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F, ksize=3))
    residual = cv2.filter2D(gray.astype(np.float32), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    noise = (
        math.sqrt(math.pi / 2.0)
        * float(cv2.norm(residual, cv2.NORM_L1))
        / (6.0 * (w - 2) * (h - 2))
    )
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    clipped = float(hist[: CLIP_LOW + 1].sum() + hist[CLIP_HIGH:].sum()) / float(h * w)
    x, y = part_centroid(gray)
    return FrameStats(
        focus=float(lap_std[0, 0]) ** 2,
        brightness=float(mean[0, 0]),
        contrast=float(std[0, 0]),
        noise=noise,
        clipping=clipped,
        x=x,
        y=y,
    )
