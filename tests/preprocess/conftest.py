"""Shared fixtures: the virtual camera's calibration and small marked images."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.entities import ImageU8


@pytest.fixture
def calibration() -> CameraCalibration:
    """The true intrinsics of the virtual camera the sample images are rendered with."""
    cam = DEFAULT_CAMERA
    return CameraCalibration(
        calibration_id="virtual-cam",
        image_size=(cam.width, cam.height),
        camera_matrix=cam.camera_matrix,
        dist_coeffs=cam.dist_coeffs,
    )


@pytest.fixture
def noise_image() -> ImageU8:
    return np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
