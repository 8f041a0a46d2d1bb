"""Turn BGR images into the float tensor a manifest's input spec asks for.

Conversion checks, calibration and fidelity figures must feed the model exactly as the station
does, so the recipe for it (size, colour order, scale, mean, std, layout) is read from the
manifest's :class:`InputSpec`, never repeated by hand. Also renders scenes with edges, blobs,
gradients and noise for checks that need image-like input before real images exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from cellinspect.entities import FloatArray, ImageU8, check_image
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import ColourOrder, InputSpec, Layout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_tensor(images: Sequence[ImageU8], spec: InputSpec) -> FloatArray:
    """Resize, reorder and normalise BGR uint8 images into one batch for `spec`."""
    if not images:
        raise ValueError(f"input {spec.name!r}: no images to feed")
    height, width = spec.height, spec.width
    if height <= 0 or width <= 0:
        raise ModelError(f"input {spec.name!r}: needs a fixed height and width, got {spec.shape}")
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    batch = np.empty((len(images), height, width, 3), dtype=np.float32)
    for i, image in enumerate(images):
        check_image(image, f"image {i}")
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if spec.colour is ColourOrder.RGB:
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        batch[i] = resized
    batch = (batch * np.float32(spec.scale) - mean) / std
    if spec.layout is Layout.NCHW:
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def read_image(path: Path) -> ImageU8:
    """Read one image file as BGR uint8; grey and 4-channel files are converted."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ModelError(f"{path}: cannot read as an image")
    return np.ascontiguousarray(image, dtype=np.uint8)


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
