"""Defect painters: each changes the part's layers in one way and returns where it did so.

Sizes, positions and strengths are drawn from the part's defect stream within ranges chosen
to be visible to an ImageNet-feature detector at 320 px yet look like real faults, not blobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.datagen.geometry import F32, Geometry, disc_alpha
from cellinspect.datagen.part import BOLT_HOLE_COUNT

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
F64 = npt.NDArray[np.float64]


@dataclass
class Layers:
    """What a part is made of before composition; painters edit it in place."""

    metal: F32  # grey level of the top face, [0, 1]
    part_alpha: F32  # coverage of the part's outline (holes excluded)
    light: tuple[float, float]  # unit vector toward the light, on screen (x right, y down)
    drilled: set[int] = field(default_factory=lambda: set(range(BOLT_HOLE_COUNT)))
    stain_alpha: F32 | None = None
    stain_transmission: tuple[float, float, float] = (1.0, 1.0, 1.0)  # BGR


Painter = Callable[[np.random.Generator, Geometry, Layers], F32]


def _canvas(layers: Layers) -> npt.NDArray[np.uint8]:
    return np.zeros(layers.metal.shape, dtype=np.uint8)


def _polyline(canvas: npt.NDArray[np.uint8], pts: F64, thickness: int) -> None:
    fixed = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [fixed], False, 255, thickness, cv2.LINE_AA, _SHIFT)


def _walk(
    start: tuple[float, float],
    heading: float,
    length_px: float,
    rng: np.random.Generator,
    turn_sd: float,
    step_px: float,
    pull: float = 0.3,
) -> F64:
    """A path from `start`: each step turns at random, pulled back toward `heading`."""
    n = max(2, int(length_px / step_px) + 1)
    pts = np.empty((n, 2), dtype=np.float64)
    pts[0] = start
    h = heading
    for i in range(1, n):
        h += rng.normal(0.0, turn_sd) + pull * (heading - h)
        pts[i] = pts[i - 1] + step_px * np.array([math.cos(h), -math.sin(h)])
    return pts


def _face_point(
    rng: np.random.Generator,
    geom: Geometry,
    layers: Layers,
    rho: tuple[float, float],
    keep_mm: float,
) -> tuple[float, float]:
    """A random point on the top face, at least `keep_mm` away from every drilled hole.

    Gives up after 50 tries and keeps the last point: the band between holes is wide enough
    for every defect size used here, so that never matters in practice.
    """
    hole_r = geom.spec.hole_diameter_mm / 2.0 * geom.ppm
    holes = [geom.hole_centre(k) for k in sorted(layers.drilled)]
    x, y = 0.0, 0.0
    for _ in range(50):
        x, y = geom.px(rng.uniform(*rho), rng.uniform(0.0, 2.0 * math.pi))
        if all(math.hypot(x - hx, y - hy) > hole_r + keep_mm * geom.ppm for hx, hy in holes):
            break
    return x, y


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> F32:
    """Smooth noise scaled to [-1, 1]: mottling inside stains."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return np.asarray(noise / max(float(np.abs(noise).max()), 1e-6), dtype=np.float32)


def _mask(canvas: npt.NDArray[np.uint8], grow: int = 1) -> F32:
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    grown = cv2.dilate(canvas, kernel)
    return (grown > 0).astype(np.float32)


def scratch(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A thin straight or gently curved line, bright (burnished) or dark, fading at its ends."""
    ppm = geom.ppm
    mid = _face_point(rng, geom, layers, (13.0, 23.0), 0.0)
    heading = rng.uniform(0.0, 2.0 * math.pi)
    length = rng.uniform(10.0, 22.0) * ppm
    start = (
        mid[0] - 0.5 * length * math.cos(heading),
        mid[1] + 0.5 * length * math.sin(heading),
    )
    curve = rng.uniform(-0.05, 0.05) / ppm
    n = 32
    s = np.linspace(0.0, length, n)
    h = heading + curve * s
    steps = np.stack([np.cos(h), -np.sin(h)], axis=1) * (length / (n - 1))
    pts = start + np.vstack([[0.0, 0.0], np.cumsum(steps[:-1], axis=0)])
    pts += rng.normal(0.0, 0.12, size=pts.shape)
    canvas = _canvas(layers)
    _polyline(canvas, pts, int(rng.choice([1, 2], p=[0.6, 0.4])))
    if rng.random() < 0.5:  # a companion groove from the same grit
        offset = np.array([-math.sin(heading), -math.cos(heading)]) * rng.uniform(1.5, 3.0)
        part = pts[int(n * 0.2) : int(n * rng.uniform(0.6, 0.95))]
        _polyline(canvas, part + offset, 1)
    line = canvas.astype(np.float32) / 255.0
    # Fade toward both ends along the scratch.
    xs = geom.dx + np.float32(geom.spec.centre_x_px)
    ys = geom.dy + np.float32(geom.spec.centre_y_px)
    ux, uy = math.cos(heading), -math.sin(heading)
    t = ((xs - start[0]) * ux + (ys - start[1]) * uy) / np.float32(length)
    fade = np.clip(np.sin(np.clip(t, 0.0, 1.0) * math.pi) * 2.0, 0.3, 1.0)
    bright = rng.random() < 0.6  # burnished; otherwise a dark groove
    amp = rng.uniform(0.35, 0.55) if bright else -rng.uniform(0.32, 0.45)
    layers.metal += (amp * line * fade).astype(np.float32)
    return _mask(canvas)


def crack(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A dark jagged line with a branch or two, running from a hole, the bore or the rim."""
    spec, ppm = geom.spec, geom.ppm
    where = rng.choice(["hole", "rim", "bore"], p=[0.5, 0.3, 0.2])
    alpha = rng.uniform(0.0, 2.0 * math.pi)
    length = rng.uniform(6.0, 13.0) * ppm
    if where == "hole":
        k = int(rng.choice(sorted(layers.drilled)))
        hx, hy = geom.hole_centre(k)
        radial = geom.theta + geom.hole_angle(k)
        if rng.random() < 0.4:  # through the ligament to the rim, the shortest way out
            heading = radial + rng.uniform(-0.35, 0.35)
            length = (spec.outer_diameter_mm - spec.bolt_circle_diameter_mm) / 2 * ppm
        else:  # around the bolt circle or in toward the hub
            heading = radial + rng.choice([-1.0, 1.0]) * rng.uniform(1.3, 2.6)
        r_h = spec.hole_diameter_mm / 2.0 * ppm - 1.0
        start = (hx + r_h * math.cos(heading), hy - r_h * math.sin(heading))
    elif where == "rim":
        start = geom.px(spec.outer_diameter_mm / 2.0 - 0.2, alpha)
        heading = geom.theta + alpha + math.pi + rng.uniform(-0.5, 0.5)
    else:
        start = geom.px(spec.bore_diameter_mm / 2.0 - 0.2, alpha)
        heading = geom.theta + alpha + rng.uniform(-0.5, 0.5)
    trunk = _walk(start, heading, length, rng, turn_sd=0.35, step_px=2.0, pull=0.4)
    canvas = _canvas(layers)
    half = max(2, len(trunk) // 2)
    _polyline(canvas, trunk[: half + 1], 2)  # widest where it started
    _polyline(canvas, trunk[half:], 1)
    for _ in range(int(rng.integers(1, 3))):
        at = int(rng.integers(len(trunk) // 4, max(len(trunk) // 4 + 1, len(trunk) - 2)))
        side = rng.choice([-1.0, 1.0])
        branch_heading = heading + side * rng.uniform(0.45, 1.0)
        branch = _walk(
            (float(trunk[at, 0]), float(trunk[at, 1])),
            branch_heading,
            length * rng.uniform(0.25, 0.5),
            rng,
            turn_sd=0.4,
            step_px=1.8,
        )
        _polyline(canvas, branch, 1)
    line = canvas.astype(np.float32) / 255.0
    depth = rng.uniform(0.65, 0.85)
    layers.metal *= (1.0 - depth * line).astype(np.float32)
    return _mask(canvas)


def dent(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A small pit: shaded wall (dark toward the light), dull bottom, a pushed-up bright lip."""
    ppm = geom.ppm
    sigma = rng.uniform(0.9, 1.6) * ppm
    x, y = _face_point(rng, geom, layers, (12.0, 27.5), 3.0 * sigma / ppm)
    h_img, w_img = layers.metal.shape
    half = math.ceil(4.0 * sigma)
    x0, x1 = max(0, int(x) - half), min(w_img, int(x) + half + 2)
    y0, y1 = max(0, int(y) - half), min(h_img, int(y) + half + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ox, oy = xx - np.float32(x), yy - np.float32(y)
    d = np.hypot(ox, oy) / np.float32(sigma)
    pit = np.exp(-0.5 * d * d)
    lx, ly = layers.light
    facing = (ox * lx + oy * ly) / np.float32(sigma)  # > 0 on the side nearer the light
    strength = rng.uniform(0.32, 0.55)
    wall = -strength * pit * facing
    lip = 0.22 * strength * np.exp(-0.5 * ((d - 2.0) / 0.45) ** 2) * np.clip(-facing / 2.0, 0, 1)
    bottom = -0.18 * pit
    window = layers.metal[y0:y1, x0:x1]
    smooth = float(window.mean())
    window[...] = window * (1.0 - pit) + smooth * pit + wall + lip + bottom
    mask = np.zeros_like(layers.metal)
    mask[y0:y1, x0:x1] = (d < 2.6).astype(np.float32)
    return mask


def missing_hole(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """One bolt hole never drilled; sometimes the spot-drill cone of it is there."""
    k = int(rng.choice(sorted(layers.drilled)))
    layers.drilled.discard(k)
    hx, hy = geom.hole_centre(k)
    dist = geom.distance_px(hx, hy)
    if rng.random() < 0.4:
        cone = disc_alpha(dist, rng.uniform(0.6, 1.0) * geom.ppm)
        layers.metal *= (1.0 - 0.45 * cone).astype(np.float32)
    radius = geom.radius_px(geom.spec.hole_diameter_mm) + 0.5 * geom.ppm
    return (dist <= radius).astype(np.float32)


def chipped_edge(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A bite out of the outer rim with a rough fracture edge; the belt shows through it."""
    ppm, outer = geom.ppm, geom.spec.outer_diameter_mm / 2.0
    bite_r = rng.uniform(2.2, 4.5)
    depth = rng.uniform(1.3, min(3.2, bite_r))
    alpha = rng.uniform(0.0, 2.0 * math.pi)
    cx, cy = geom.px(outer + bite_r - depth, alpha)
    n = 48
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    rough = 1.0 + 0.12 * np.convolve(rng.standard_normal(n + 4), np.ones(3) / 3, mode="valid")[:n]
    radius = bite_r * ppm * rough
    pts = np.stack([cx + radius * np.cos(angles), cy - radius * np.sin(angles)], axis=1)
    canvas = _canvas(layers)
    cv2.fillPoly(canvas, [np.round(pts * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    bite = canvas.astype(np.float32) / 255.0
    fracture = np.clip(cv2.GaussianBlur(bite, (0, 0), 1.3) * 3.0, 0.0, 1.0) * (1.0 - bite)
    layers.metal *= (1.0 - 0.35 * fracture).astype(np.float32)
    before = layers.part_alpha.copy()
    layers.part_alpha *= 1.0 - bite
    return np.asarray((before * (bite + fracture)) > 0.2, dtype=np.float32)


def stain(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A semi-transparent blot of oil or rust with an irregular, soft outline."""
    ppm = geom.ppm
    size = rng.uniform(3.5, 6.5) * ppm
    x, y = _face_point(rng, geom, layers, (12.0, 26.0), 0.0)
    h_img, w_img = layers.metal.shape
    half = math.ceil(2.2 * size)
    x0, x1 = max(0, int(x) - half), min(w_img, int(x) + half + 2)
    y0, y1 = max(0, int(y) - half), min(h_img, int(y) + half + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    blob = np.zeros_like(xx)
    for _ in range(int(rng.integers(3, 7))):
        bx = x + rng.normal(0.0, 0.45 * size)
        by = y + rng.normal(0.0, 0.45 * size)
        s = rng.uniform(0.35, 0.6) * size
        blob += np.exp(-0.5 * ((xx - bx) ** 2 + (yy - by) ** 2) / s**2)
    coarse = _unit_noise(rng, xx.shape, 3.0)
    fine = _unit_noise(rng, xx.shape, 0.9)
    level = blob / max(float(blob.max()), 1e-6) + 0.18 * coarse
    edge = np.clip((level - 0.32) / 0.18, 0.0, 1.0)
    strength = rng.uniform(0.55, 0.85)
    local = (strength * edge * np.clip(0.75 + 0.2 * coarse + 0.2 * fine, 0, 1)).astype(np.float32)
    alpha = np.zeros_like(layers.metal)
    alpha[y0:y1, x0:x1] = local
    if rng.random() < 0.5:  # rust: brown-orange
        layers.stain_transmission = (0.30, 0.46, 0.78)
    else:  # oil: darker, warm
        layers.stain_transmission = (0.46, 0.52, 0.56)
    layers.stain_alpha = alpha
    return (alpha > 0.08).astype(np.float32)


def hairline(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A faint hairline crack: one pixel wide and shallow, running out from a bolt hole.

    Not among the shipped classes (`part.NEW_DEFECT_CLASSES`): the simulated line's
    `--new-defect hairline` brings it in so the adaptive loop has a defect the shipped
    anomaly model lets pass often (docs/benchmarks/adaptive-loop.md).
    """
    ppm = geom.ppm
    k = int(rng.choice(sorted(layers.drilled)))
    hx, hy = geom.hole_centre(k)
    heading = geom.theta + geom.hole_angle(k) + rng.choice([-1.0, 1.0]) * rng.uniform(1.2, 2.4)
    r_h = geom.spec.hole_diameter_mm / 2.0 * ppm - 1.0
    start = (hx + r_h * math.cos(heading), hy - r_h * math.sin(heading))
    length = rng.uniform(HAIRLINE_LENGTH_MM[0], HAIRLINE_LENGTH_MM[1]) * ppm
    trunk = _walk(start, heading, length, rng, turn_sd=0.25, step_px=2.0, pull=0.5)
    canvas = _canvas(layers)
    _polyline(canvas, trunk, 1)
    line = canvas.astype(np.float32) / 255.0
    depth = rng.uniform(HAIRLINE_DEPTH[0], HAIRLINE_DEPTH[1])
    layers.metal *= (1.0 - depth * line).astype(np.float32)
    return _mask(canvas)


HAIRLINE_LENGTH_MM = (6.0, 11.0)
HAIRLINE_DEPTH = (0.25, 0.45)


def haze(rng: np.random.Generator, geom: Geometry, layers: Layers) -> F32:
    """A faint film over the whole face (dried coolant, heat tint): a warm colour cast.

    Not among the shipped classes (`part.NEW_DEFECT_CLASSES`): its contrast is low and its
    edges far apart, so the shipped patch-wise anomaly detector passes about half of them,
    while the part as a whole changes colour, which a head on pooled features learns from a
    few dozen reviewed parts (docs/benchmarks/adaptive-loop.md).
    """
    ppm = geom.ppm
    size = rng.uniform(*HAZE_SIZE_MM) * ppm
    x, y = _face_point(rng, geom, layers, (14.0, 22.0), 0.0)
    h_img, w_img = layers.metal.shape
    yy, xx = np.mgrid[0:h_img, 0:w_img].astype(np.float32)
    blob = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / np.float32(size) ** 2)
    coarse = _unit_noise(rng, blob.shape, 6.0)
    strength = rng.uniform(*HAZE_STRENGTH)
    alpha = np.clip(strength * blob * (0.85 + 0.15 * coarse), 0.0, 1.0).astype(np.float32)
    layers.stain_transmission = (0.55, 0.75, 0.95)  # BGR: a yellow-brown film
    layers.stain_alpha = alpha * layers.part_alpha
    return (layers.stain_alpha > 0.05).astype(np.float32)


HAZE_SIZE_MM = (40.0, 50.0)
HAZE_STRENGTH = (0.15, 0.3)


# Defects whose truth region reaches past the top face (the belt shows where metal is gone).
MASK_BEYOND_FACE = frozenset({"chipped_edge"})

PAINTERS: dict[str, Painter] = {
    "scratch": scratch,
    "crack": crack,
    "dent": dent,
    "missing_hole": missing_hole,
    "chipped_edge": chipped_edge,
    "stain": stain,
    "hairline": hairline,
    "haze": haze,
}
