"""Slow faults for the simulated camera: a lens going soft, a lamp dimming, a knocked camera,
and tool wear on the parts themselves.

A drift is a function of the part id: parts before `start_part` are untouched (the station
takes its health baseline on them), then the severity grows linearly and reaches 1.0 at
`full_part` (and keeps growing after it). Everything is deterministic by part id, so a line
run with a drift is repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cellinspect.datagen.drift_kind import DriftKind
from cellinspect.entities import ImageU8

__all__ = ["Drift", "DriftKind"]

GOOD = "good"

FOCUS_SIGMA_PX = 2.0
"""Gaussian blur (sigma, pixels) the frame has faded into at severity 1: a soft lens."""
LIGHT_LOSS = 0.5
"""Fraction of the light lost at severity 1."""
SHIFT_PX = (12.0, 6.0)
"""(x, y) image shift at severity 1: the camera knocked or its bracket slipping."""
WEAR_AMPLITUDE = 4.0
"""Grey levels of surface texture on good parts at severity 1: a worn tool's finish."""


@dataclass(frozen=True, slots=True)
class Drift:
    """A linear ramp of one fault over part ids."""

    kind: DriftKind
    start_part: int = 60
    full_part: int = 400

    def __post_init__(self) -> None:
        if self.start_part < 1:
            raise ValueError(f"drift start_part must be >= 1, got {self.start_part}")
        if self.full_part <= self.start_part:
            raise ValueError(
                f"drift full_part ({self.full_part}) must be after start_part ({self.start_part})"
            )

    def severity(self, part_id: int) -> float:
        """0 up to `start_part`, then linear: 1.0 at `full_part`."""
        return max(0.0, (part_id - self.start_part) / (self.full_part - self.start_part))

    def apply(self, image: ImageU8, part_id: int, label: str) -> ImageU8:
        """The frame the drifted camera would give for this part (a new array)."""
        s = self.severity(part_id)
        if s <= 0.0:
            return image
        if self.kind is DriftKind.FOCUS:
            # Fading into a blurred copy loses fine detail smoothly from the first part on
            # (a small Gaussian sigma would do nothing, then suddenly a lot).
            blurred = cv2.GaussianBlur(image, (0, 0), FOCUS_SIGMA_PX)
            return _u8(cv2.addWeighted(image, 1.0 - min(s, 1.0), blurred, min(s, 1.0), 0.0))
        if self.kind is DriftKind.LIGHT:
            return _u8(cv2.convertScaleAbs(image, alpha=max(0.0, 1.0 - LIGHT_LOSS * s)))
        if self.kind is DriftKind.SHIFT:
            dx, dy = SHIFT_PX
            # Whole pixels: a sub-pixel warp would also blur the frame (a second fault).
            m = np.array([[1, 0, round(dx * s)], [0, 1, round(dy * s)]], dtype=np.float32)
            h, w = image.shape[:2]
            return _u8(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
        if label != GOOD:  # wear: the finish of good parts coarsens; defects stay as rendered
            return image
        return _worn(image, part_id, s)


def _worn(image: ImageU8, part_id: int, severity: float) -> ImageU8:
    """Coarse surface texture on the part (not the belt), stronger with severity."""
    rng = np.random.default_rng(part_id)
    h, w = image.shape[:2]
    noise = rng.standard_normal((h, w)).astype(np.float32)
    texture = np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.2), dtype=np.float32)
    texture = texture * np.float32(WEAR_AMPLITUDE * severity / max(float(texture.std()), 1e-6))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    _, part = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    worn = image.astype(np.float32) + (texture * part.astype(np.float32))[:, :, None]
    return _u8(np.clip(worn, 0, 255))


def _u8(image: object) -> ImageU8:
    return np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
