"""The views the few-shot benchmark can measure: the fit's own (`bank_augment`: flips, shifts)
and quarter turns, which only the benchmark makes.

Quarter turns are not a `--augment` choice: on elpv cells (square, on a regular grid, where a
turned cell is a plausible cell) they gained nothing beyond the draws' spread
(docs/benchmarks/few-good-parts.md), so they stay here, where that was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.training.bank_augment import (
    AUGMENTS,
    VIEWS,
    AugmentedPatches,
    make_view,
    views_features,
)

F32 = npt.NDArray[np.float32]

BENCH_VIEWS = {**VIEWS, "rotations": ("rot-90", "rot-180", "rot-270")}  # clockwise
BENCH_AUGMENTS = (*AUGMENTS, "rotations")


def parse_views(text: str | Sequence[str]) -> tuple[str, ...]:
    """`"rotations,flips"` (or a list) -> the augments in canonical order; refuses unknown."""
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = {n.strip() for n in names if n.strip() and n.strip() != "none"}
    unknown = sorted(wanted - set(BENCH_AUGMENTS))
    if unknown:
        raise ModelError(f"--augment-views: unknown {unknown}; choose from {BENCH_AUGMENTS}")
    return tuple(a for a in BENCH_AUGMENTS if a in wanted)


def bench_view_names(augments: Sequence[str]) -> tuple[str, ...]:
    """The extra views each image gives for `augments`, in a fixed order."""
    return tuple(v for a in parse_views(augments) for v in BENCH_VIEWS[a])


def bench_view(image: ImageU8, view: str) -> ImageU8:
    """One named view: a quarter turn (square images only) or one of the fit's own views."""
    if not view.startswith("rot-"):
        return make_view(image, view)
    h, w = image.shape[:2]
    if h != w:
        raise ModelError(f"rotations need square images, got {w}x{h}")
    return np.ascontiguousarray(np.rot90(image, -int(view[4:]) // 90))


def bench_augment_features(
    images: Sequence[ImageU8],
    augments: Sequence[str],
    extract: Callable[[Sequence[ImageU8]], F32],
    chunk: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> AugmentedPatches | None:
    """As `bank_augment.augment_features` (each image's views in turn, chunk by chunk), with
    the benchmark's views."""
    return views_features(images, bench_view_names(augments), bench_view, extract, chunk, progress)
