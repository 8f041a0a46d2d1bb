"""Drawn EL defects: only darken, stay inside the image, repeat for a seed, differ across seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.elpv.synthetic_defects import KINDS, defect_mask, draw_defect
from cellinspect.training.dataset import LabelledImage


def _cell(shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    grey = rng.integers(150, 220, shape[:2]).astype(np.uint8)
    return np.repeat(grey[..., None], shape[2], axis=2) if len(shape) == 3 else grey


@pytest.mark.parametrize("shape", [(300, 300, 3), (300, 300), (240, 320, 3)])
def test_drawn_defect_only_darkens_and_keeps_the_frame(shape: tuple[int, ...]) -> None:
    cell = _cell(shape)
    for seed in range(20):
        drawn = draw_defect(cell, np.random.default_rng(seed))
        assert drawn.shape == cell.shape and drawn.dtype == np.uint8
        assert (drawn <= cell).all()
        darkened = (drawn.astype(int) < cell.astype(int) - 10).mean()
        assert darkened > 0.0005, f"seed {seed} drew nothing visible"
        if drawn.ndim == 3:
            assert (drawn[..., 0] == drawn[..., 2]).all()  # grey stays grey


def test_draws_repeat_for_a_seed_and_differ_across_seeds() -> None:
    cell = _cell((300, 300, 3))
    first = draw_defect(cell, np.random.default_rng(5))
    again = draw_defect(cell, np.random.default_rng(5))
    other = draw_defect(cell, np.random.default_rng(6))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("kinds", [1, 2, len(KINDS)])
def test_mask_lies_in_unit_range(kinds: int) -> None:
    mask = defect_mask(128, np.random.default_rng(kinds), kinds=kinds)
    assert mask.shape == (128, 128)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert float(mask.max()) > 0.1


@pytest.mark.torch
def test_only_items_under_the_drawn_label_get_a_defect() -> None:
    synthetic = pytest.importorskip("benchmarks.elpv.synthetic")
    cell = _cell((64, 64, 3))
    rng = np.random.default_rng(0)
    good = synthetic.draw_on_defective(LabelledImage(Path(__file__), "good"), cell, rng)
    assert good is cell
    drawn = synthetic.draw_on_defective(
        LabelledImage(Path(__file__), synthetic.DRAWN_LABEL), cell, rng
    )
    assert not np.array_equal(drawn, cell)
