"""Median timings of the preprocessing hot paths (for `cellinspect bench`, not for tests)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.inference.manifest import ColourOrder, InputSpec, Layout
from cellinspect.preprocess.model_input import InputPreparer
from cellinspect.preprocess.undistort import Undistorter

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def median_ms(fn: Callable[[], object], repeats: int = 300, warmup: int = 20) -> float:
    """Median wall time of `fn` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def benchmark_preprocess(repeats: int = 300, seed: int = 0) -> dict[str, float]:
    """Medians (ms) of undistort at the virtual camera's 320x320 and of model input
    preparation for one 256x256 image into a 224x224 ImageNet-normalised tensor."""
    rng = np.random.default_rng(seed)
    cam = DEFAULT_CAMERA
    calibration = CameraCalibration(
        calibration_id="virtual",
        image_size=(cam.width, cam.height),
        camera_matrix=cam.camera_matrix,
        dist_coeffs=cam.dist_coeffs,
    )
    undistort = Undistorter(calibration, alpha=0.0)
    frame = rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    fitted = crop[:224, :224].copy()
    results = {"undistort_320x320_ms": median_ms(lambda: undistort(frame), repeats)}
    for layout in Layout:
        shape: list[int | None] = [1, 3, 224, 224] if layout is Layout.NCHW else [1, 224, 224, 3]
        spec = InputSpec(
            name="input",
            shape=shape,
            layout=layout,
            colour=ColourOrder.RGB,
            scale=1 / 255,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
        prepare = InputPreparer(spec)
        key = layout.value.lower()
        results[f"prepare_256_to_224_{key}_ms"] = median_ms(partial(prepare, [crop]), repeats)
        results[f"prepare_224_no_resize_{key}_ms"] = median_ms(partial(prepare, [fitted]), repeats)
    return results
