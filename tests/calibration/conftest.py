"""Rendered board views with known truth, shared by the calibration tests (rendered once)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.render import CAMERA_BOARD, Look, calibration_poses, render_board
from cellinspect.datagen.camera import DEFAULT_CAMERA

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "calibration"
VIEWS = 8


@pytest.fixture(scope="session")
def true_camera() -> CameraCalibration:
    """The virtual camera's real intrinsics, as a calibration."""
    return CameraCalibration(
        calibration_id="truth",
        image_size=(DEFAULT_CAMERA.width, DEFAULT_CAMERA.height),
        camera_matrix=DEFAULT_CAMERA.camera_matrix,
        dist_coeffs=DEFAULT_CAMERA.dist_coeffs,
    )


@pytest.fixture(scope="session")
def view_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VIEWS rendered chessboard pictures (10x7 squares, 8 mm) as PNG files."""
    folder = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(7)
    for i, pose in enumerate(calibration_poses(CAMERA_BOARD, VIEWS, seed=7)):
        img = render_board(CAMERA_BOARD, pose, look=Look.random(rng), rng=rng)
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), img)
    return folder


@pytest.fixture(scope="session")
def view_files(view_dir: Path) -> list[Path]:
    return sorted(view_dir.glob("view_*.png"))


def imread(path: Path) -> np.ndarray:
    """cv2.imread that fails loudly instead of returning None."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return np.asarray(img, dtype=np.uint8)
