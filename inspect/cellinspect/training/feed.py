"""Images for conversion checks and calibration: listing a folder, rendering test scenes.

Tensors are prepared by `preprocess.model_input.prepare_batch`, the station's own code, so
checks and calibration feed the model exactly as the station does. The scenes (edges, blobs,
gradients, noise) serve checks that need image-like input before real images exist.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.sources.decode import IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name so runs are reproducible."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: image folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def render_scene(rng: np.random.Generator, size: int) -> ImageU8:
    """A BGR image with a gradient, filled shapes, lines, texture and blur: image-like input."""
    if size < 8:
        raise ValueError(f"render_scene: size must be >= 8, got {size}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 255, 3).astype(np.float32)
    tilt = rng.uniform(-120, 120, (2, 3)).astype(np.float32)
    image = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            radius = int(rng.integers(size // 16 + 1, size // 3 + 2))
            cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)
        else:
            other = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.rectangle(canvas, centre, other, colour, -1)
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        start = tuple(int(c) for c in rng.integers(0, size, 2))
        end = tuple(int(c) for c in rng.integers(0, size, 2))
        cv2.line(canvas, start, end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    noise = rng.normal(0.0, rng.uniform(2.0, 12.0), canvas.shape)
    noisy = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(noisy, (3, 3), float(rng.uniform(0.3, 1.2)))
    return np.ascontiguousarray(blurred, dtype=np.uint8)
