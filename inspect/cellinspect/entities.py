"""Domain data that flows between stages: frozen, validated on creation.

A frame that cannot be read travels as a :class:`FrameFailure`, never as a missing item, so the
pipeline can turn it into a fail-safe result instead of dropping it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

ImageU8 = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]


class Verdict(enum.StrEnum):
    """Outcome for one part (or one ROI). There is no 'unknown': failures map to FAIL/REVIEW."""

    PASS = "pass"
    FAIL = "fail"
    REVIEW = "review"


class Task(enum.StrEnum):
    """What a model does; decides how its outputs are read."""

    CLASSIFICATION = "classification"
    ANOMALY = "anomaly"
    FEATURES = "features"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_image(image: object, what: str = "image") -> ImageU8:
    """Validate an HxWx3 uint8 image and say what came instead when it is not one."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected shape HxWx3 (BGR), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: empty image {image.shape}")
    return image


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image plus what was latched with it (part id and encoder count on trigger)."""

    image: ImageU8
    frame_id: int
    source: str
    captured_mono: float = field(default_factory=time.monotonic)
    captured_wall: datetime = field(default_factory=_utcnow)
    path: str | None = None
    part_id: int | None = None
    encoder: int | None = None

    def __post_init__(self) -> None:
        check_image(self.image, f"frame {self.frame_id} from {self.source}")
        if self.frame_id < 0:
            raise ValueError(f"frame_id must be >= 0, got {self.frame_id}")


@dataclass(frozen=True, slots=True)
class FrameFailure:
    """A frame the source tried and failed to deliver (corrupt file, dropped grab, ...)."""

    frame_id: int
    source: str
    reason: str
    captured_mono: float = field(default_factory=time.monotonic)
    captured_wall: datetime = field(default_factory=_utcnow)
    path: str | None = None
    part_id: int | None = None
    encoder: int | None = None

    @classmethod
    def instead_of(cls, item: Frame | FrameFailure, reason: str) -> FrameFailure:
        """The failure that stands for `item` (dropped, not inspected): same ids and times."""
        return cls(
            frame_id=item.frame_id,
            source=item.source,
            reason=reason,
            captured_mono=item.captured_mono,
            captured_wall=item.captured_wall,
            path=item.path,
            part_id=item.part_id,
            encoder=item.encoder,
        )


SourceItem = Frame | FrameFailure


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Identity of a model as it was used: enough to reproduce a verdict."""

    name: str
    version: str
    sha256: str  # the seal's package hash: the .onnx and every verdict-changing manifest field


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What one model said about one ROI, already post-processed."""

    model: ModelRef
    task: Task
    class_scores: dict[str, float] = field(default_factory=dict)
    anomaly_score: float | None = None
    anomaly_map: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.task is Task.CLASSIFICATION and not self.class_scores:
            raise ValueError(f"{self.model.name}: classification output without class scores")
        if self.task is Task.ANOMALY and self.anomaly_score is None:
            raise ValueError(f"{self.model.name}: anomaly output without a score")
        if self.anomaly_map is not None and self.anomaly_map.ndim != 2:
            raise ValueError(
                f"{self.model.name}: anomaly map must be 2-D, got shape {self.anomaly_map.shape}"
            )


@dataclass(frozen=True, slots=True)
class RoiDecision:
    """Verdict for one ROI with the reasons that led to it."""

    roi: str
    verdict: Verdict
    reasons: tuple[str, ...]
    defect_class: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InspectionResult:
    """Everything needed to explain and reproduce one part's verdict."""

    result_id: str
    frame_id: int
    source: str
    verdict: Verdict
    reasons: tuple[str, ...]
    captured_wall: datetime
    recipe_name: str
    recipe_sha256: str
    defect_class: str | None = None
    rois: tuple[RoiDecision, ...] = ()
    models: tuple[ModelRef, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)
    path: str | None = None
    part_id: int | None = None
    encoder: int | None = None
    calibration_id: str | None = None
    calibration_sha256: str | None = None
    plane_calibration_id: str | None = None
    plane_calibration_sha256: str | None = None
    pick_x_mm: float | None = None
    pick_y_mm: float | None = None
    pick_angle_deg: float | None = None
    pick_frame: str | None = None  # "plane" or "robot_base"
    error: str | None = None
    image_paths: dict[str, str] = field(default_factory=dict)
    station_id: str | None = None  # the station that judged the part; stamped by the station
    line: str | None = None
    site: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.verdict is Verdict.PASS:
            raise ValueError(f"result {self.result_id}: an error can never be PASS ({self.error})")

    @property
    def score(self) -> float | None:
        """The highest anomaly score over all ROIs, if any model gave one."""
        values = [r.scores[k] for r in self.rois for k in r.scores if k.endswith(":anomaly")]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as values, datetimes as ISO 8601)."""
        return {
            "result_id": self.result_id,
            "frame_id": self.frame_id,
            "source": self.source,
            "station_id": self.station_id,
            "line": self.line,
            "site": self.site,
            "path": self.path,
            "part_id": self.part_id,
            "encoder": self.encoder,
            "captured_wall": self.captured_wall.isoformat(),
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "defect_class": self.defect_class,
            "error": self.error,
            "rois": [
                {
                    "roi": r.roi,
                    "verdict": r.verdict.value,
                    "reasons": list(r.reasons),
                    "defect_class": r.defect_class,
                    "scores": dict(r.scores),
                }
                for r in self.rois
            ],
            "models": [
                {"name": m.name, "version": m.version, "sha256": m.sha256} for m in self.models
            ],
            "timings_ms": dict(self.timings_ms),
            "recipe_name": self.recipe_name,
            "recipe_sha256": self.recipe_sha256,
            "calibration_id": self.calibration_id,
            "calibration_sha256": self.calibration_sha256,
            "plane_calibration_id": self.plane_calibration_id,
            "plane_calibration_sha256": self.plane_calibration_sha256,
            "pick": None
            if self.pick_x_mm is None
            else {
                "x_mm": self.pick_x_mm,
                "y_mm": self.pick_y_mm,
                "angle_deg": self.pick_angle_deg,
                "frame": self.pick_frame,
            },
            "image_paths": dict(self.image_paths),
        }


@dataclass(frozen=True, slots=True)
class InspectedFrame:
    """A result plus the pictures behind it, for the store and the review page.

    `image` is the frame as the models' ROIs were cut from it (after preprocessing such as
    undistortion); `overlay` is that image with the anomaly heatmap blended in, when a model
    produced a map. Both are None when the frame could not be read.
    """

    result: InspectionResult
    image: ImageU8 | None = None
    overlay: ImageU8 | None = None
