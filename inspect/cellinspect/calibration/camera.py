"""Camera intrinsics from board views: detect, reject what cannot be trusted, calibrate.

Images where the board is missing or blurred are set aside with the reason, so the user can
retake them; the calibration refuses to run on fewer than `min_views` usable views or on
images of different sizes, because either would give intrinsics that look fine and are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.board import (
    BoardDetection,
    BoardSpec,
    detect_board,
    laplacian_variance,
    to_gray,
)
from cellinspect.calibration.camera_file import (
    CameraCalibration,
    load_camera_calibration,
    save_camera_calibration,
)
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]

DEFAULT_MIN_VIEWS = 5
DEFAULT_MIN_SHARPNESS = 150.0
"""Variance of the Laplacian inside the board outline below which a view counts as blurred.

Sharp renders of the virtual camera score 1000-7000; a Gaussian blur of sigma 2 px brings
them under 100.
"""

ImageInput = Path | str | ImageU8


@dataclass(frozen=True)
class Rejected:
    """An input image that was set aside, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class UsedView:
    """An input image that went into the calibration, with its reprojection error."""

    name: str
    detection: BoardDetection
    rms_error_px: float = 0.0


@dataclass(frozen=True)
class CameraCalibrationReport:
    """The calibration plus everything a user needs to judge it."""

    calibration: CameraCalibration
    used: tuple[UsedView, ...]
    rejected: tuple[Rejected, ...]
    std_intrinsics: dict[str, float] = field(default_factory=dict)
    preview: ImageU8 | None = None  # one used view, for the report picture
    preview_name: str = ""


def _name(item: ImageInput, index: int) -> str:
    if isinstance(item, np.ndarray):
        return f"image[{index}]"
    return Path(item).name


def _load(item: ImageInput, name: str) -> ImageU8 | None:
    if isinstance(item, np.ndarray):
        return item
    img = cv2.imread(str(item), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return np.asarray(img, dtype=np.uint8)


def _check_sizes(sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """All images must come from one camera at one resolution; name the odd ones out."""
    counts: dict[tuple[int, int], list[str]] = {}
    for name, size in sizes.items():
        counts.setdefault(size, []).append(name)
    if len(counts) > 1:
        ordered = sorted(counts.items(), key=lambda kv: -len(kv[1]))
        parts = [f"{w}x{h}: {', '.join(names)}" for (w, h), names in ordered]
        raise CalibrationError("images have different sizes (" + "; ".join(parts) + ")")
    return next(iter(counts))


def _per_view_rms(
    views: Sequence[UsedView], rvecs: Sequence[F64], tvecs: Sequence[F64], k: F64, dist: F64
) -> list[float]:
    errors = []
    for view, rvec, tvec in zip(views, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(view.detection.object_points, rvec, tvec, k, dist)
        diff = proj.reshape(-1, 2) - view.detection.image_points.reshape(-1, 2)
        errors.append(float(np.sqrt(np.mean(np.sum(diff**2, axis=1)))))
    return errors


def _reach(det: BoardDetection, k: F64) -> float:
    """How far a view's corners reach from the principal point (where distortion shows)."""
    d = det.image_points - k[:2, 2]
    return float(np.hypot(d[:, 0], d[:, 1]).max())


def detect_views(
    images: Sequence[ImageInput],
    board: BoardSpec,
    min_sharpness: float = DEFAULT_MIN_SHARPNESS,
) -> tuple[list[UsedView], list[Rejected], dict[str, tuple[int, int]], dict[str, ImageU8]]:
    """Detect the board in every image; sort them into usable and rejected (with reasons)."""
    used: list[UsedView] = []
    rejected: list[Rejected] = []
    sizes: dict[str, tuple[int, int]] = {}
    loaded: dict[str, ImageU8] = {}
    for index, item in enumerate(images):
        name = _name(item, index)
        img = _load(item, name)
        if img is None:
            rejected.append(Rejected(name, "cannot be read as an image"))
            continue
        sizes[name] = (int(img.shape[1]), int(img.shape[0]))
        try:
            det = detect_board(img, board)
        except CalibrationError as err:
            rejected.append(Rejected(name, str(err)))
            continue
        if det is None:
            focus = laplacian_variance(to_gray(img))
            hint = f" (image looks blurry: sharpness {focus:.0f})" if focus < min_sharpness else ""
            rejected.append(Rejected(name, f"board not found{hint}"))
            continue
        if det.sharpness < min_sharpness:
            rejected.append(
                Rejected(
                    name,
                    f"blurry: sharpness {det.sharpness:.0f} < {min_sharpness:.0f} "
                    "(variance of the Laplacian over the board)",
                )
            )
            continue
        used.append(UsedView(name, det))
        loaded[name] = img
    return used, rejected, sizes, loaded


def calibrate_camera(
    images: Sequence[ImageInput],
    board: BoardSpec,
    calibration_id: str,
    min_views: int = DEFAULT_MIN_VIEWS,
    min_sharpness: float = DEFAULT_MIN_SHARPNESS,
    fix_k3: bool = True,
) -> CameraCalibrationReport:
    """Intrinsics and distortion (k1, k2, p1, p2[, k3]) from views of `board`.

    Raises CalibrationError for mixed image sizes or too few usable views; the message names
    the rejected images and why each was rejected.
    """
    if not images:
        raise CalibrationError("no images given")
    used, rejected, sizes, loaded = detect_views(images, board, min_sharpness)
    if sizes:
        _check_sizes(sizes)
    if len(used) < min_views:
        why = "; ".join(f"{r.name}: {r.reason}" for r in rejected) or "no images rejected"
        raise CalibrationError(
            f"too few views: {len(used)} usable of {len(images)}, need at least {min_views} ({why})"
        )
    width, height = used[0].detection.image_size
    obj = [u.detection.object_points.reshape(-1, 1, 3) for u in used]
    img_pts = [u.detection.image_points.reshape(-1, 1, 2) for u in used]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, k_raw, dist_raw, rvecs_raw, tvecs_raw, std_in, _, _ = cv2.calibrateCameraExtended(
            obj,
            img_pts,
            (width, height),
            np.eye(3),
            np.zeros(5),
            flags=flags,
            criteria=criteria,
        )
    except cv2.error as err:
        raise CalibrationError(f"OpenCV calibrateCamera failed: {err}") from err
    k: F64 = np.asarray(k_raw, dtype=np.float64)
    dist: F64 = np.asarray(dist_raw, dtype=np.float64).ravel()[:5]
    rvecs = [np.asarray(r, dtype=np.float64) for r in rvecs_raw]
    tvecs = [np.asarray(t, dtype=np.float64) for t in tvecs_raw]
    errors = _per_view_rms(used, rvecs, tvecs, k, dist)
    used = [UsedView(u.name, u.detection, e) for u, e in zip(used, errors, strict=True)]
    std = np.asarray(std_in, dtype=np.float64).ravel()
    std_named = dict(zip(("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3"), std, strict=False))
    cal = CameraCalibration(
        calibration_id=calibration_id,
        image_size=(width, height),
        camera_matrix=k,
        dist_coeffs=dist,
        rms_error=float(rms),
        per_image_errors=tuple(errors),
        board=board.describe(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    best = max(used, key=lambda u: _reach(u.detection, k))
    return CameraCalibrationReport(
        calibration=cal,
        used=tuple(used),
        rejected=tuple(rejected),
        std_intrinsics={k_: float(v) for k_, v in std_named.items()},
        preview=loaded.get(best.name),
        preview_name=best.name,
    )


def undistort_image(image: ImageU8, cal: CameraCalibration) -> ImageU8:
    """The frame as a distortion-free pinhole camera with the same camera matrix would see it.

    Undistorted pixel coordinates everywhere in this package mean exactly this image
    (cv2.undistort with newCameraMatrix = the calibration's own K).
    """
    cal.check_fits(int(image.shape[1]), int(image.shape[0]), "image")
    out = cv2.undistort(image, cal.camera_matrix, cal.dist_coeffs)
    return np.asarray(out, dtype=np.uint8)


def _label(img: ImageU8, text: str) -> ImageU8:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def report_image(report: CameraCalibrationReport) -> ImageU8:
    """Corners found on one view (left) beside the same view undistorted (right)."""
    if report.preview is None:
        raise CalibrationError("the report has no preview image")
    view = next(u for u in report.used if u.name == report.preview_name)
    left = report.preview.copy()
    pts = view.detection.image_points.reshape(-1, 1, 2)
    for (x, y), i in zip(pts.reshape(-1, 2), view.detection.ids, strict=True):
        colour = (0, 0, 255) if i == 0 else (0, 200, 0)
        cv2.circle(left, (round(float(x)), round(float(y))), 3, colour, 1, cv2.LINE_AA)
    right = undistort_image(report.preview, report.calibration)
    gap = np.full((left.shape[0], 4, 3), 255, dtype=np.uint8)
    cal = report.calibration
    return np.hstack(
        [
            _label(left, f"{report.preview_name}: {view.detection.count} corners"),
            gap,
            _label(right, f"undistorted, rms {cal.rms_error:.3f} px"),
        ]
    )


def save_camera_report(
    report: CameraCalibrationReport, yaml_path: Path | str, png_path: Path | str | None = None
) -> CameraCalibration:
    """Write the calibration YAML (and the report picture); returns the file as read back."""
    file = save_camera_calibration(report.calibration, yaml_path)
    if png_path is not None and report.preview is not None:
        png = Path(png_path)
        png.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(png), report_image(report)):
            raise CalibrationError(f"{png}: cannot write the report image")
    return load_camera_calibration(file)
