"""Feeding images to a model as its manifest says."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import ColourOrder, InputSpec, Layout
from cellinspect.training.feed import list_images, read_image, render_scene, to_tensor


def spec(**changes: object) -> InputSpec:
    base: dict[str, object] = {
        "name": "image",
        "shape": [None, 3, 4, 6],
        "mean": [127.0] * 3,
        "std": [128.0] * 3,
    }
    return InputSpec.model_validate({**base, **changes})


def test_to_tensor_reorders_colour_and_normalises() -> None:
    image = np.zeros((8, 12, 3), dtype=np.uint8)
    image[..., 0] = 255  # blue in BGR
    out = to_tensor([image], spec())
    assert out.shape == (1, 3, 4, 6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 2], (255 - 127) / 128)  # blue lands last in RGB
    np.testing.assert_allclose(out[0, 0], -127 / 128)


def test_to_tensor_keeps_bgr_and_nhwc_when_asked() -> None:
    image = np.full((4, 6, 3), (10, 20, 30), dtype=np.uint8)
    nhwc = spec(shape=[None, 4, 6, 3], layout=Layout.NHWC, colour=ColourOrder.BGR)
    nhwc = nhwc.model_copy(update={"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 0.5})
    out = to_tensor([image, image], nhwc)
    assert out.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(out[1, 0, 0], [5.0, 10.0, 15.0])


@pytest.mark.parametrize(
    ("images", "error"),
    [
        ([], ValueError),
        ([np.zeros((4, 4), dtype=np.uint8)], ValueError),
        ([np.zeros((4, 4, 3), dtype=np.float32)], ValueError),
        ([np.zeros((0, 4, 3), dtype=np.uint8)], ValueError),
    ],
)
def test_to_tensor_refuses_bad_images(images: list[np.ndarray], error: type[Exception]) -> None:
    with pytest.raises(error):
        to_tensor(images, spec())


def test_to_tensor_needs_fixed_spatial_size() -> None:
    with pytest.raises(ModelError, match="fixed height and width"):
        to_tensor([np.zeros((4, 4, 3), dtype=np.uint8)], spec(shape=[None, 3, None, None]))


def test_list_and_read_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.JPG", "c.txt"):
        cv2.imwrite(str(tmp_path / name.replace(".txt", ".png")), render_scene(rng, 16))
    (tmp_path / "c.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "broken.png", "c.png"]
    assert read_image(tmp_path / "b.png").shape == (16, 16, 3)
    with pytest.raises(ModelError, match="cannot read"):
        read_image(tmp_path / "broken.png")
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
