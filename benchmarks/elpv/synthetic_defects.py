"""Draw plausible electroluminescence defects onto good cells: anomaly training without defects.

An EL image shows a working cell bright and a broken one dark where current no longer flows:
cracks are thin dark lines (straight, bent or branched), a crack that isolates part of the cell
leaves that part dark, and broken fingers or contact faults leave short dark dashes. A network
taught to tell good cells from good cells with such marks drawn on them (in the spirit of
CutPaste and DRAEM) learns what a defect looks like without ever seeing a defective cell, so it
is still taught on good parts only. Every draw comes from the caller's generator: seeded runs
draw the same marks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8

F32 = npt.NDArray[np.float32]
KINDS = ("crack", "isolated_area", "dashes", "dark_blob")
# How often each kind is drawn: cracks and isolated areas are the common EL defects.
KIND_WEIGHTS = (0.45, 0.25, 0.1, 0.2)


def _crack_points(size: int, rng: np.random.Generator) -> npt.NDArray[np.int32]:
    """A random walk that keeps roughly one heading: a bent crack across part of the cell."""
    start = rng.uniform(0.05, 0.95, 2) * size
    heading = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.25, 1.1) * size
    segments = int(rng.integers(2, 7))
    points = [start]
    for _ in range(segments):
        heading += rng.normal(0, 0.25)
        step = length / segments
        points.append(points[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
    return np.round(np.array(points)).astype(np.int32)


def _draw_crack(mask: F32, rng: np.random.Generator) -> None:
    size = mask.shape[0]
    width = 1 if rng.random() < 0.6 else 2
    points = _crack_points(size, rng)
    cv2.polylines(mask, [points], False, float(rng.uniform(0.25, 0.7)), width, cv2.LINE_AA)
    if rng.random() < 0.3:  # a branch from a point of the crack
        branch = _crack_points(size, rng)
        branch = branch - branch[0] + points[int(rng.integers(0, len(points)))]
        cv2.polylines(mask, [branch[:3]], False, float(rng.uniform(0.2, 0.6)), 1, cv2.LINE_AA)


def _texture(size: int, rng: np.random.Generator) -> F32:
    """A smooth random field in [0.4, 1]: dark regions of real cells are never flat."""
    noise = rng.random((size, size), dtype=np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), size * 0.03)
    span = float(smooth.max() - smooth.min()) or 1.0
    return np.asarray(0.4 + 0.6 * (smooth - smooth.min()) / span, dtype=np.float32)


def _draw_isolated_area(mask: F32, rng: np.random.Generator) -> None:
    """The part of the cell beyond a crack line goes dark (no current reaches it)."""
    size = mask.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    normal = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
    # Offset so that between 5% and 45% of the cell lies beyond the line.
    centre = (size - 1) / 2.0
    reach = abs(normal[0]) + abs(normal[1])
    offset = rng.uniform(0.1, 0.9) * reach * centre
    side = (xx - centre) * normal[0] + (yy - centre) * normal[1] - offset
    area = (side > 0).astype(np.float32) * float(rng.uniform(0.25, 0.8)) * _texture(size, rng)
    mask[:] = np.maximum(mask, area)
    edge = np.abs(side) < 1.0
    mask[edge] = np.maximum(mask[edge], float(rng.uniform(0.4, 0.8)))


def _draw_dashes(mask: F32, rng: np.random.Generator) -> None:
    """Short dark dashes along one row or column: broken fingers or a faulty contact."""
    size = mask.shape[0]
    horizontal = rng.random() < 0.5
    line = float(rng.uniform(0.1, 0.9) * size)
    count = int(rng.integers(3, 10))
    length = rng.uniform(0.02, 0.06) * size
    thickness = int(rng.integers(2, 5))
    level = float(rng.uniform(0.3, 0.7))
    for along in np.sort(rng.uniform(0.05, 0.95, count)) * size:
        a = (along, line) if horizontal else (line, along)
        b = (along + length, line) if horizontal else (line, along + length)
        p1 = (round(a[0]), round(a[1]))
        p2 = (round(b[0]), round(b[1]))
        cv2.line(mask, p1, p2, level, thickness, cv2.LINE_AA)


def _draw_dark_blob(mask: F32, rng: np.random.Generator) -> None:
    """An irregular dark patch: a soldering fault, a shunt or a large crack's dark region."""
    size = mask.shape[0]
    centre = rng.uniform(0.1, 0.9, 2) * size
    axes = rng.uniform(0.03, 0.25, 2) * size
    angle = rng.uniform(0, 180)
    level = float(rng.uniform(0.3, 0.85))
    blob = np.zeros_like(mask)
    for _ in range(int(rng.integers(1, 4))):  # a few overlapping ellipses: an irregular edge
        jitter = centre + rng.normal(0, 0.3, 2) * axes
        cv2.ellipse(
            blob,
            (round(jitter[0]), round(jitter[1])),
            (max(2, round(axes[0] * rng.uniform(0.5, 1.0))), max(1, round(axes[1]))),
            angle + rng.normal(0, 15),
            0,
            360,
            level,
            -1,
            cv2.LINE_AA,
        )
    soft = cv2.GaussianBlur(blob, (0, 0), float(rng.uniform(0.5, 3.0))) * _texture(size, rng)
    mask[:] = np.maximum(mask, soft)


_DRAW = {
    "crack": _draw_crack,
    "isolated_area": _draw_isolated_area,
    "dashes": _draw_dashes,
    "dark_blob": _draw_dark_blob,
}


def defect_mask(size: int, rng: np.random.Generator, kinds: int | None = None) -> F32:
    """How much each pixel of a size x size cell is darkened (0 = untouched, 1 = black)."""
    mask = np.zeros((size, size), dtype=np.float32)
    count = kinds if kinds is not None else (1 if rng.random() < 0.75 else 2)
    for kind in rng.choice(KINDS, size=count, p=KIND_WEIGHTS):
        _DRAW[str(kind)](mask, rng)
    blur = float(rng.uniform(0.3, 1.2))  # the camera's own softness
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), blur), dtype=np.float32)


def draw_defect(image: ImageU8, rng: np.random.Generator) -> ImageU8:
    """`image` with one or two drawn EL defects; every channel is darkened alike."""
    height, width = image.shape[:2]
    size = max(height, width)
    mask = defect_mask(size, rng)[:height, :width]
    factor = 1.0 - np.clip(mask, 0.0, 1.0)
    shaped = factor[..., None] if image.ndim == 3 else factor
    return np.asarray(np.clip(image.astype(np.float32) * shaped, 0, 255), dtype=np.uint8)
