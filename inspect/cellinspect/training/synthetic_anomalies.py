"""Draw synthetic anomalies on good parts: a stand-in for defects when choosing a detector.

`--detector auto` has no defective parts to judge candidates on, so it draws marks on held-out
good parts (cut-paste of a patch to another place, thin scratches, soft blobs, and a patch of
another part's texture swapped in, in the spirit of CutPaste and DRAEM) and asks which
candidate tells them apart from the unmarked ones. Every mark comes with its mask, and a drawn
image differs from its source exactly on the mask (each masked pixel by at least
`MIN_DELTA` grey levels in some channel), so a test can check that nothing leaks outside it.
Draws come from `numpy` generators seeded per image: the same seed gives the same marks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError

KINDS = ("cut_paste", "scratch", "blob", "texture_swap")
MIN_DELTA = 16  # grey levels every masked pixel moves by at least (in its strongest channel)
MIN_SIDE = 16  # smaller images leave no room for a mark that a 224-pixel backbone can see

Mask = npt.NDArray[np.bool_]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SyntheticAnomaly:
    image: ImageU8
    mask: Mask  # True where the image differs from its source
    kind: str


def _size(image: ImageU8) -> tuple[int, int]:
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < MIN_SIDE:
        raise ModelError(f"synthetic anomalies need images of at least {MIN_SIDE} px, got {w}x{h}")
    return h, w


def _box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y, x, bh, bw): a box of 6-15 % of the shorter side, anywhere inside the image."""
    side = min(h, w)
    bh = max(4, int(side * rng.uniform(0.06, 0.15)))
    bw = max(4, int(side * rng.uniform(0.06, 0.15)))
    return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw


def _cut_paste(image: ImageU8, rng: np.random.Generator) -> tuple[F32, Mask]:
    """A patch of the part moved elsewhere (flipped or turned): right texture, wrong place."""
    h, w = _size(image)
    sy, sx, bh, bw = _box(h, w, rng)
    patch = image[sy : sy + bh, sx : sx + bw].astype(np.float32)
    turn = int(rng.integers(0, 4))
    patch = np.rot90(patch, turn) if bh == bw else np.flip(patch, axis=int(rng.integers(0, 2)))
    ph, pw = patch.shape[:2]
    ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    out = image.astype(np.float32)
    out[ty : ty + ph, tx : tx + pw] = patch * rng.uniform(0.85, 1.15)
    mask = np.zeros((h, w), bool)
    mask[ty : ty + ph, tx : tx + pw] = True
    return out, mask


def _scratch(image: ImageU8, rng: np.random.Generator) -> tuple[F32, Mask]:
    """A thin bent line, 30-80 grey levels darker or brighter than the part under it."""
    h, w = _size(image)
    side = min(h, w)
    start = rng.uniform(0.1, 0.9, 2) * (w, h)
    heading = rng.uniform(0, 2 * math.pi)
    length = side * rng.uniform(0.15, 0.45)
    points = [start]
    for _ in range(int(rng.integers(2, 5))):
        heading += rng.normal(0, 0.3)
        points.append(points[-1] + length / 3 * np.array([math.cos(heading), math.sin(heading)]))
    line = np.zeros((h, w), np.uint8)
    width = max(1, round(side / 160 * rng.uniform(0.8, 2.0)))
    cv2.polylines(line, [np.round(np.array(points)).astype(np.int32)], False, (255,), width)
    mask = line > 0
    out = image.astype(np.float32)
    out[mask] += rng.uniform(30, 80) * (-1 if rng.random() < 0.5 else 1)
    return out, mask


def _ellipse_mask(h: int, w: int, rng: np.random.Generator) -> Mask:
    side = min(h, w)
    centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    axes = (
        max(2, int(side * rng.uniform(0.03, 0.09))),
        max(2, int(side * rng.uniform(0.03, 0.09))),
    )
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, (255,), -1)
    return canvas > 0


def _blob(image: ImageU8, rng: np.random.Generator) -> tuple[F32, Mask]:
    """A soft-edged stain: the part shifted darker or brighter inside an ellipse."""
    h, w = _size(image)
    mask = _ellipse_mask(h, w, rng)
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, min(h, w) / 100))
    weight = np.where(mask, np.maximum(weight, 0.5), 0.0).astype(np.float32)
    shift = rng.uniform(25, 60) * (-1 if rng.random() < 0.5 else 1)
    out = image.astype(np.float32)
    scaled = weight[..., None] if out.ndim == 3 else weight
    return out + shift * scaled, mask


def _texture_swap(
    image: ImageU8, donor: ImageU8 | None, rng: np.random.Generator
) -> tuple[F32, Mask]:
    """A region filled with texture from elsewhere: another part stretched and turned, or
    (without a donor) smooth noise: a foreign surface the good parts never show."""
    h, w = _size(image)
    mask = _ellipse_mask(h, w, rng)
    if donor is not None and donor.shape == image.shape:
        zoom = rng.uniform(1.5, 3.0)
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), zoom)
        texture = cv2.warpAffine(donor, turn, (w, h), borderMode=cv2.BORDER_REFLECT).astype(
            np.float32
        )
    else:
        noise = rng.random((h, w), dtype=np.float32)
        smooth = cv2.GaussianBlur(noise, (0, 0), max(1.0, min(h, w) / 60))
        smooth = (smooth - smooth.min()) / (float(smooth.max() - smooth.min()) or 1.0)
        texture = (smooth * 255.0).astype(np.float32)
        if image.ndim == 3:
            texture = np.repeat(texture[..., None], image.shape[2], axis=2)
    out = image.astype(np.float32)
    out[mask] = texture[mask]
    return out, mask


def _settle(image: ImageU8, drawn: F32, mask: Mask) -> ImageU8:
    """The drawn image, equal to the source outside the mask and at least MIN_DELTA away from
    it (strongest channel) at every masked pixel: a mark that blends in by chance is pushed."""
    out = np.clip(np.rint(drawn), 0, 255).astype(np.int16)
    src = image.astype(np.int16)
    diff = np.abs(out - src)
    strongest = diff.max(axis=2) if diff.ndim == 3 else diff
    weak = mask & (strongest < MIN_DELTA)
    level = src.mean(axis=2) if src.ndim == 3 else src
    push = np.where(level > 127, -MIN_DELTA, MIN_DELTA).astype(np.int16)
    pushed = np.clip(src + (push[..., None] if src.ndim == 3 else push), 0, 255)
    where_weak = weak[..., None] if src.ndim == 3 else weak
    out = np.where(where_weak, pushed, out)
    keep = ~mask[..., None] if src.ndim == 3 else ~mask
    return np.asarray(np.where(keep, src, out), dtype=np.uint8)


def draw_anomaly(
    image: ImageU8, kind: str, rng: np.random.Generator, donor: ImageU8 | None = None
) -> SyntheticAnomaly:
    """One mark of `kind` on a copy of `image` (`donor`: texture source for texture_swap)."""
    if kind == "cut_paste":
        drawn, mask = _cut_paste(image, rng)
    elif kind == "scratch":
        drawn, mask = _scratch(image, rng)
    elif kind == "blob":
        drawn, mask = _blob(image, rng)
    elif kind == "texture_swap":
        drawn, mask = _texture_swap(image, donor, rng)
    else:
        raise ModelError(f"synthetic anomaly kind must be one of {KINDS}, got {kind!r}")
    return SyntheticAnomaly(_settle(image, drawn, mask), mask, kind)


def synthetic_set(
    images: Sequence[ImageU8], seed: int, kinds: Sequence[str] = KINDS
) -> list[SyntheticAnomaly]:
    """One mark per image, kinds taken in turn (so each is drawn about as often), image i drawn
    from a generator seeded by (seed, i): the same images and seed give the same set. The
    texture donor of image i is the next image."""
    if not kinds:
        raise ModelError("synthetic anomalies need at least one kind")
    n = len(images)
    return [
        draw_anomaly(
            img,
            kinds[i % len(kinds)],
            np.random.default_rng([seed, i]),
            images[(i + 1) % n] if n > 1 else None,
        )
        for i, img in enumerate(images)
    ]
