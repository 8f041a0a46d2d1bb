"""Listing calibration images and rendering scenes for conversion checks.

(Preparing tensors is `preprocess.model_input.prepare_batch`, tested in tests/preprocess.)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.errors import ModelError
from cellinspect.training.feed import list_images, render_scene


def test_list_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.JPG", "c.txt"):
        cv2.imwrite(str(tmp_path / name.replace(".txt", ".png")), render_scene(rng, 16))
    (tmp_path / "c.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "broken.png", "c.png"]
    with pytest.raises(ModelError, match="not found"):
        list_images(tmp_path / "missing")


@pytest.mark.parametrize("size", [8, 33, 224])
def test_render_scene_is_an_image_and_repeatable(size: int) -> None:
    first = render_scene(np.random.default_rng(3), size)
    again = render_scene(np.random.default_rng(3), size)
    assert first.shape == (size, size, 3)
    assert first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert first.std() > 1.0


def test_render_scene_refuses_tiny_size() -> None:
    with pytest.raises(ValueError, match="size must be >= 8"):
        render_scene(np.random.default_rng(0), 4)
