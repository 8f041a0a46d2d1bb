"""Synthetic anomalies: seeded, confined to their mask, and visible inside it."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.training.synthetic_anomalies import (
    KINDS,
    MIN_DELTA,
    draw_anomaly,
    synthetic_set,
)


@pytest.fixture(scope="module")
def parts() -> list[ImageU8]:
    return [render_part(spec) for spec in plan_parts(4, 3, 0.0)]


def test_same_seed_same_marks_other_seed_other_marks(parts: list[ImageU8]) -> None:
    a = synthetic_set(parts, seed=7)
    b = synthetic_set(parts, seed=7)
    c = synthetic_set(parts, seed=8)
    assert [x.kind for x in a] == list(KINDS)  # kinds in turn, one per image
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
    assert any(not np.array_equal(x.mask, z.mask) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marks_change_the_mask_and_nothing_else(parts: list[ImageU8], kind: str, seed: int) -> None:
    src = parts[seed % len(parts)]
    out = draw_anomaly(src, kind, np.random.default_rng(seed), donor=parts[-1])
    assert out.kind == kind and out.image.shape == src.shape and out.image.dtype == np.uint8
    changed = np.abs(out.image.astype(int) - src.astype(int)).max(axis=2)
    assert out.mask.any()
    assert not changed[~out.mask].any()  # outside the mask: the source, bit for bit
    assert (changed[out.mask] >= MIN_DELTA).all()  # inside: every pixel visibly moved
    assert out.mask.mean() < 0.1  # a local mark, not a new image


def test_grey_images_and_flat_ones_are_marked_too() -> None:
    flat = np.full((64, 80), 255, np.uint8)  # nothing to cut or brighten: marks must still show
    for kind in KINDS:
        out = draw_anomaly(flat, kind, np.random.default_rng(3))
        assert out.image.shape == flat.shape
        assert (out.image != flat).sum() == out.mask.sum() > 0


def test_bad_kind_and_tiny_image_are_refused(parts: list[ImageU8]) -> None:
    with pytest.raises(ModelError, match="kind must be one of"):
        draw_anomaly(parts[0], "smudge", np.random.default_rng(0))
    with pytest.raises(ModelError, match="at least 16 px"):
        draw_anomaly(np.zeros((8, 8, 3), np.uint8), "blob", np.random.default_rng(0))
