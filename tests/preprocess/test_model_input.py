"""Model input preparation against a naive numpy reference and known pixel values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError, PreprocessError
from cellinspect.inference.manifest import ColourOrder, InputSpec, Layout
from cellinspect.preprocess import ops
from cellinspect.preprocess.model_input import SPEC_KEY_FIELDS, InputPreparer, prepare_batch

IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CENTRED = {"scale": 1.0, "mean": [127.5, 120.0, 100.0], "std": [127.5, 60.0, 2.0]}
RAW = {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def spec(
    layout: Layout = Layout.NCHW,
    colour: ColourOrder = ColourOrder.RGB,
    norm: dict[str, object] | None = None,
    h: int = 24,
    w: int = 32,
) -> InputSpec:
    shape: list[int | None] = [None, 3, h, w] if layout is Layout.NCHW else [None, h, w, 3]
    return InputSpec.model_validate(
        {"name": "images", "shape": shape, "layout": layout, "colour": colour, **(norm or RAW)}
    )


def reference(images: Sequence[ImageU8], s: InputSpec) -> np.ndarray:
    """Straightforward float64 numpy, one image at a time."""
    out = []
    for image in images:
        x = ops.resize(image, s.width, s.height).astype(np.float64)
        if s.colour is ColourOrder.RGB:
            x = x[:, :, ::-1]
        x = (x * s.scale - np.array(s.mean)) / np.array(s.std)
        out.append(x.transpose(2, 0, 1) if s.layout is Layout.NCHW else x)
    return np.stack(out)


def mixed_images() -> list[ImageU8]:
    rng = np.random.default_rng(11)
    big = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return [
        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),  # shrink
        rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),  # enlarge
        rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),  # already the model size
        big[5:29, 7:39],  # a non-contiguous ROI view of the model size
        big[:40, :20],  # a view that shrinks one side and enlarges the other
    ]


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("colour", list(ColourOrder))
@pytest.mark.parametrize("norm", [IMAGENET, CENTRED, RAW], ids=["imagenet", "centred", "raw"])
def test_matches_the_numpy_reference(
    layout: Layout, colour: ColourOrder, norm: dict[str, object]
) -> None:
    s = spec(layout, colour, norm)
    images = mixed_images()
    batch = prepare_batch(images, s)
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    expected_shape = (5, 3, 24, 32) if layout is Layout.NCHW else (5, 24, 32, 3)
    assert batch.shape == expected_shape
    np.testing.assert_allclose(batch, reference(images, s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("layout", "colour", "red_index"),
    [
        (Layout.NCHW, ColourOrder.RGB, (0, 0)),
        (Layout.NCHW, ColourOrder.BGR, (0, 2)),
        (Layout.NHWC, ColourOrder.RGB, (0, ..., 0)),
        (Layout.NHWC, ColourOrder.BGR, (0, ..., 2)),
    ],
)
def test_red_lands_in_the_channel_the_manifest_names(
    layout: Layout, colour: ColourOrder, red_index: tuple[Any, ...]
) -> None:
    red = np.zeros((24, 32, 3), dtype=np.uint8)
    red[:, :, 2] = 255  # BGR frame: red is the last channel
    batch = prepare_batch([red], spec(layout, colour, RAW))
    assert (batch[red_index] == 255).all()
    assert batch.sum() == 255 * 24 * 32


def test_scale_mean_and_std_per_channel() -> None:
    grey = np.full((24, 32, 3), 100, dtype=np.uint8)
    norm = {"scale": 0.5, "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0]}
    batch = prepare_batch([grey], spec(Layout.NCHW, ColourOrder.BGR, norm))
    for c, expected in enumerate([(50 - 10) / 2, (50 - 20) / 4, (50 - 30) / 8]):
        assert (batch[0, c] == np.float32(expected)).all()


def test_preparer_is_reusable_and_leaves_images_alone() -> None:
    images = mixed_images()
    before = [im.copy() for im in images]
    prepare = InputPreparer(spec(norm=IMAGENET))
    first = prepare(images)
    second = prepare(images)
    np.testing.assert_array_equal(first, second)
    assert first is not second
    for image, copy in zip(images, before, strict=True):
        np.testing.assert_array_equal(image, copy)


@pytest.mark.parametrize("layout", list(Layout))
def test_no_images_give_an_empty_batch(layout: Layout) -> None:
    batch = prepare_batch([], spec(layout))
    assert batch.shape[0] == 0
    assert batch.dtype == np.float32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros((24, 32, 3), dtype=np.float32), "dtype uint8"),
        (np.zeros((24, 32), dtype=np.uint8), "HxWx3"),
        (np.zeros((0, 32, 3), dtype=np.uint8), "empty"),
        (None, "numpy array"),
    ],
    ids=["float", "2-D", "empty", "none"],
)
def test_broken_images_are_named_by_index(image: ImageU8, expected: str) -> None:
    good = np.zeros((24, 32, 3), dtype=np.uint8)
    with pytest.raises(PreprocessError, match=f"model input 1: .*{expected}"):
        prepare_batch([good, image], spec())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"std": [1.0, 0.0, 1.0]}, "std must not contain 0"),
        ({"mean": [0.5, 0.5]}, "mean needs 3 values"),
        ({"std": [1.0, float("inf"), 1.0]}, "std must be finite"),
        ({"shape": [1, 3, 24]}, "4-D shape"),
        ({"shape": [1, 1, 24, 32]}, "3 channels"),
        ({"shape": [1, 3, None, 32]}, "fixed and positive"),
        ({"scale": float("nan")}, "scale must be finite"),
    ],
)
def test_bad_specs_are_model_errors(changes: dict[str, object], message: str) -> None:
    data = spec().model_dump() | changes
    with pytest.raises(ModelError, match=f"manifest input 'images': .*{message}"):
        InputPreparer(InputSpec.model_validate(data))


def test_cache_key_covers_every_spec_field() -> None:
    assert set(SPEC_KEY_FIELDS) == set(InputSpec.model_fields)


def test_a_spec_edited_in_place_gets_fresh_tables() -> None:
    grey = [np.full((24, 32, 3), 100, dtype=np.uint8)]
    s = spec(Layout.NCHW, ColourOrder.BGR, RAW)
    assert (prepare_batch(grey, s) == 100).all()
    s.scale = 0.5
    assert (prepare_batch(grey, s) == 50).all()
    s.mean = [50.0, 0.0, 0.0]
    assert (prepare_batch(grey, s)[0, 0] == 0).all()
