"""More views of few good parts for the bank or the Gaussians: flips and small shifts.

With tens of good parts a PatchCore bank or a per-position covariance has seen little of the
normal variation a line shows (a part placed a few pixels off, a mirrored texture). Each fitted
image may add flipped and shifted copies of itself; their features join the bank (PatchCore) or
the Gaussian statistics, never the held-out parts that set the score scale, and a copy always
goes where its source image goes (the same cross-fitting fold), so a held-out score is never
set by a copy of itself. The views are made from the cut, preprocessed ROI image, as the
station would see a part placed differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

AUGMENTS = ("flips", "shifts")
# One stride-8 patch of the 224-pixel model input: the smallest shift that moves a patch.
SHIFT_OF_SIZE = 1.0 / 28.0
VIEWS = {
    "flips": ("flip-h", "flip-v"),
    "shifts": ("shift-right", "shift-left", "shift-down", "shift-up"),
}


def parse_augment(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"flips,shifts"` (or a list of names) -> the augments in canonical order; "" = none."""
    if text is None:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = {n.strip() for n in names if n.strip() and n.strip() != "none"}
    unknown = sorted(wanted - set(AUGMENTS))
    if unknown:
        raise ModelError(
            f"augment (--augment): unknown {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(AUGMENTS)}"
        )
    return tuple(a for a in AUGMENTS if a in wanted)


def view_names(augments: Sequence[str]) -> tuple[str, ...]:
    """The extra views each fitted image gives (the original is not among them)."""
    return tuple(v for a in parse_augment(augments) for v in VIEWS[a])


def _shift(image: ImageU8, dx: int, dy: int) -> ImageU8:
    h, w = image.shape[:2]
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float64)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return np.asarray(out, dtype=np.uint8)


def make_view(image: ImageU8, view: str) -> ImageU8:
    """One named view of an image (a flip, or a shift by SHIFT_OF_SIZE of its size)."""
    h, w = image.shape[:2]
    dx, dy = max(1, round(w * SHIFT_OF_SIZE)), max(1, round(h * SHIFT_OF_SIZE))
    match view:
        case "flip-h":
            return np.ascontiguousarray(image[:, ::-1])
        case "flip-v":
            return np.ascontiguousarray(image[::-1])
        case "shift-right":
            return _shift(image, dx, 0)
        case "shift-left":
            return _shift(image, -dx, 0)
        case "shift-down":
            return _shift(image, 0, dy)
        case "shift-up":
            return _shift(image, 0, -dy)
    raise ModelError(f"augment: unknown view {view!r}")


@dataclass(frozen=True)
class AugmentedPatches:
    """Patch features of the extra views, each row tied to the index of its source image."""

    patches: F32  # (M, positions, channels)
    source: I64  # (M,) index into the fitted images

    def of(self, idx: npt.NDArray[np.integer]) -> F32:
        """The views whose source image is among `idx` (in `idx` order, views in turn)."""
        picked = [np.flatnonzero(self.source == i) for i in idx]
        rows = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        return self.patches[rows]

    def with_sources(self, patches: F32, idx: npt.NDArray[np.integer]) -> F32:
        """`patches[idx]` followed by their views: what a fit on the images `idx` sees."""
        extra = self.of(idx)
        return np.concatenate([patches[idx], extra], axis=0) if len(extra) else patches[idx]

    def project(self, projection: F32) -> AugmentedPatches:
        return AugmentedPatches(np.asarray(self.patches @ projection, np.float32), self.source)

    def per_image(self) -> int:
        """Views per source image (every image gets the same set)."""
        sources = len(np.unique(self.source))
        return len(self.source) // sources if sources else 0


def augment_features(
    images: Sequence[ImageU8],
    augments: Sequence[str],
    extract: Callable[[Sequence[ImageU8]], F32],
    chunk: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> AugmentedPatches | None:
    """Features of every extra view of `images`, extracted in chunks of source images so only
    a chunk's views are held as pixels at a time. None when no augment is asked for."""
    return views_features(images, view_names(augments), make_view, extract, chunk, progress)


def views_features(
    images: Sequence[ImageU8],
    names: Sequence[str],
    view: Callable[[ImageU8, str], ImageU8],
    extract: Callable[[Sequence[ImageU8]], F32],
    chunk: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> AugmentedPatches | None:
    """Features of the views `names` (made by `view`) of each image, chunk by chunk; None
    when there are no views. One loop for the fit's views and the benchmark's own."""
    if not names:
        return None
    parts: list[F32] = []
    sources: list[int] = []
    for start in range(0, len(images), chunk):
        idx = range(start, min(start + chunk, len(images)))
        parts.append(extract([view(images[i], v) for i in idx for v in names]))
        sources.extend(i for i in idx for _ in names)
        if progress is not None:
            progress(idx[-1] + 1, len(images))
    return AugmentedPatches(np.concatenate(parts, axis=0), np.asarray(sources, np.int64))
