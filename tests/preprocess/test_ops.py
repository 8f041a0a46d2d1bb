"""Each image operation on small arrays whose expected output is known by construction."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from cellinspect.config import ColourMode, FlipMode, Roi
from cellinspect.entities import ImageU8
from cellinspect.errors import PreprocessError
from cellinspect.preprocess import ops

MARK = (10, 20, 30)  # distinct per channel, so a channel swap would show


def marked(h: int = 4, w: int = 6, row: int = 1, col: int = 4) -> ImageU8:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[row, col] = MARK
    return image


def mark_position(image: ImageU8) -> tuple[int, int]:
    rows, cols = np.nonzero(image.any(axis=2))
    assert len(rows) == 1, f"expected one marked pixel, found {len(rows)}"
    assert tuple(image[rows[0], cols[0]]) == MARK
    return int(rows[0]), int(cols[0])


def centroid(image: ImageU8) -> tuple[float, float]:
    """Intensity-weighted (x, y) of the bright pixels."""
    weights = image[:, :, 0].astype(np.float64)
    ys, xs = np.indices(weights.shape)
    total = weights.sum()
    return float((xs * weights).sum() / total), float((ys * weights).sum() / total)


# --------------------------------------------------------------------------- rotate

# 4x6 image (h=4, w=6), mark at row 1, col 4.
ROTATIONS = [
    (90, (6, 4), (1, 1)),  # counter-clockwise: (r, c) -> (w-1-c, r)
    (180, (4, 6), (2, 1)),  # (r, c) -> (h-1-r, w-1-c)
    (270, (6, 4), (4, 2)),  # (r, c) -> (c, h-1-r)
    (-90, (6, 4), (4, 2)),  # same as 270
    (450, (6, 4), (1, 1)),  # same as 90
    (-180, (4, 6), (2, 1)),
]


@pytest.mark.parametrize(("degrees", "shape", "position"), ROTATIONS)
def test_rotate_right_angles_move_the_mark_exactly(
    degrees: float, shape: tuple[int, int], position: tuple[int, int]
) -> None:
    out = ops.rotate(marked(), degrees)
    assert out.shape == (*shape, 3)
    assert mark_position(out) == position


@pytest.mark.parametrize("degrees", [0, 360, -720, 0.0])
def test_rotate_by_full_turns_returns_the_input(degrees: float) -> None:
    image = marked()
    assert ops.rotate(image, degrees) is image


@pytest.mark.parametrize("degrees", [30.0, -45.0, 123.0])
def test_rotate_any_angle_turns_about_the_centre_and_keeps_the_size(degrees: float) -> None:
    image = np.zeros((31, 41, 3), dtype=np.uint8)  # centre (x=20, y=15)
    image[14:17, 28:31] = 255  # 3x3 block centred 9 px right of the centre
    out = ops.rotate(image, degrees)
    assert out.shape == image.shape
    theta = np.deg2rad(degrees)
    # Counter-clockwise on screen: y points down, so the point goes up for positive angles.
    expected = (20 + 9 * np.cos(theta), 15 - 9 * np.sin(theta))
    assert centroid(out) == pytest.approx(expected, abs=0.25)


@pytest.mark.parametrize("degrees", [float("nan"), float("inf")])
def test_rotate_refuses_non_finite_angles(degrees: float) -> None:
    with pytest.raises(PreprocessError, match="finite"):
        ops.rotate(marked(), degrees)


# --------------------------------------------------------------------------- flip


@pytest.mark.parametrize(
    ("mode", "position"),
    [
        (FlipMode.HORIZONTAL, (1, 1)),  # (r, w-1-c)
        (FlipMode.VERTICAL, (2, 4)),  # (h-1-r, c)
        (FlipMode.BOTH, (2, 1)),
        ("horizontal", (1, 1)),
    ],
)
def test_flip_moves_the_mark(mode: FlipMode | str, position: tuple[int, int]) -> None:
    out = ops.flip(marked(), mode)
    assert out.shape == (4, 6, 3)
    assert mark_position(out) == position


def test_flip_rejects_unknown_mode() -> None:
    with pytest.raises(PreprocessError, match="diagonal"):
        ops.flip(marked(), "diagonal")


# --------------------------------------------------------------------------- resize


def test_resize_shrinking_averages_areas() -> None:
    values = np.random.default_rng(3).integers(0, 256, (6, 6), dtype=np.uint8)
    image = np.dstack([values] * 3)
    out = ops.resize(image, 2, 2)
    # 3x3 block means; INTER_LINEAR would pick the blocks' centre pixels instead.
    blocks = values.reshape(2, 3, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(out[:, :, 0], np.round(blocks).astype(np.uint8))


def test_resize_enlarging_interpolates_linearly() -> None:
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[0, 1] = 200
    out = ops.resize(image, 4, 1)
    np.testing.assert_array_equal(out[0, :, 0], [0, 50, 150, 200])


@pytest.mark.parametrize(("width", "height"), [(32, 24), (100, 10), (64, 96), (1, 1), (200, 150)])
def test_resize_gives_the_requested_shape(noise_image: ImageU8, width: int, height: int) -> None:
    assert ops.resize(noise_image, width, height).shape == (height, width, 3)


def test_resize_to_the_same_size_returns_the_input(noise_image: ImageU8) -> None:
    assert ops.resize(noise_image, 64, 48) is noise_image


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-5, 10)])
def test_resize_refuses_empty_targets(noise_image: ImageU8, width: int, height: int) -> None:
    with pytest.raises(PreprocessError, match="positive"):
        ops.resize(noise_image, width, height)


# --------------------------------------------------------------------------- letterbox

BGR = (200, 100, 50)


@pytest.mark.parametrize(
    ("h", "w", "target", "scale", "offset"),
    [
        (50, 100, (64, 64), 0.64, (0, 16)),  # wide: bands top and bottom
        (100, 50, (64, 64), 0.64, (16, 0)),  # tall: bands left and right
        (32, 32, (64, 64), 2.0, (0, 0)),  # same aspect: no padding
        (10, 30, (20, 21), 2 / 3, (0, 7)),  # odd remainder
    ],
)
@pytest.mark.parametrize("pad", [0, 114, 255])
def test_letterbox_keeps_aspect_centres_and_pads(
    h: int,
    w: int,
    target: tuple[int, int],
    scale: float,
    offset: tuple[int, int],
    pad: int,
) -> None:
    image = np.full((h, w, 3), BGR, dtype=np.uint8)
    result = ops.letterbox(image, target[0], target[1], pad)
    out = result.image
    assert out.shape == (target[1], target[0], 3)
    assert result.scale == pytest.approx(scale)
    assert result.offset == offset
    content_w, content_h = round(w * scale), round(h * scale)
    x0, y0 = offset
    content = out[y0 : y0 + content_h, x0 : x0 + content_w]
    assert (content == BGR).all()
    mask = np.ones(out.shape[:2], dtype=bool)
    mask[y0 : y0 + content_h, x0 : x0 + content_w] = False
    assert (out[mask] == pad).all()
    assert mask.sum() == out.shape[0] * out.shape[1] - content_w * content_h


def test_letterbox_maps_points_back() -> None:
    result = ops.letterbox(np.zeros((50, 100, 3), dtype=np.uint8), 64, 64)
    assert result.to_original(0, 16) == pytest.approx((0.0, 0.0))
    assert result.to_original(64, 48) == pytest.approx((100.0, 50.0))


@pytest.mark.parametrize("pad", [-1, 256])
def test_letterbox_refuses_bad_pad_value(noise_image: ImageU8, pad: int) -> None:
    with pytest.raises(PreprocessError, match="pad_value"):
        ops.letterbox(noise_image, 32, 32, pad)


# --------------------------------------------------------------------------- colour


def test_gray_is_three_equal_channels_of_the_luminance() -> None:
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[:, :, 0] = 255  # pure blue: 0.114 * 255 = 29
    out = ops.colour(image, ColourMode.GRAY)
    assert out.shape == image.shape
    assert (out == 29).all()


def test_gray_matches_opencv_on_noise(noise_image: ImageU8) -> None:
    out = ops.colour(noise_image, "gray")
    expected = cv2.cvtColor(noise_image, cv2.COLOR_BGR2GRAY)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


def low_contrast_gray() -> ImageU8:
    ramp = np.tile(np.arange(100, 132, dtype=np.uint8), (16, 1))  # 16x32, levels 100..131
    return np.dstack([ramp] * 3)


@pytest.mark.parametrize("mode", [ColourMode.EQUALIZE, ColourMode.CLAHE])
def test_contrast_modes_stretch_luminance_and_keep_grey_grey(mode: ColourMode) -> None:
    image = low_contrast_gray()
    out = ops.colour(image, mode)
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert np.ptp(out[:, :, 1]) > 2 * np.ptp(image[:, :, 1])
    spread = out.astype(np.int16).max(axis=2) - out.astype(np.int16).min(axis=2)
    assert spread.max() <= 1  # grey in, grey out (YCrCb rounding at most 1 level)


def test_equalize_spreads_to_the_full_range() -> None:
    out = ops.colour(low_contrast_gray(), "equalize")
    assert out.min() < 10
    assert out.max() > 245


def test_colour_rejects_unknown_mode(noise_image: ImageU8) -> None:
    with pytest.raises(PreprocessError, match="sepia"):
        ops.colour(noise_image, "sepia")


# --------------------------------------------------------------------------- blur


def test_blur_spreads_an_impulse_symmetrically() -> None:
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[3, 3] = 255
    out = ops.blur(image, 3)[:, :, 0].astype(int)
    assert 0 < out[3, 3] < 255
    assert out[2, 3] == out[4, 3] == out[3, 2] == out[3, 4] > 0
    assert out[1:6, 1:6].sum() == out.sum()  # nothing beyond the 3x3 window
    assert out[3, 3] > out[2, 3] > out[2, 2]


def test_blur_with_kernel_one_returns_the_input(noise_image: ImageU8) -> None:
    assert ops.blur(noise_image, 1) is noise_image


@pytest.mark.parametrize("kernel", [0, 2, 4, -3])
def test_blur_refuses_even_or_non_positive_kernels(noise_image: ImageU8, kernel: int) -> None:
    with pytest.raises(PreprocessError, match=f"odd number >= 1, got {kernel}"):
        ops.blur(noise_image, kernel)


# --------------------------------------------------------------------------- crop_roi


def test_crop_roi_is_a_view_of_the_box(noise_image: ImageU8) -> None:
    roi = Roi(name="cell", x=10, y=5, width=20, height=30)
    crop = ops.crop_roi(noise_image, roi)
    assert crop.shape == (30, 20, 3)
    assert np.shares_memory(crop, noise_image)
    np.testing.assert_array_equal(crop, noise_image[5:35, 10:30])


def test_crop_roi_may_touch_the_frame_edges(noise_image: ImageU8) -> None:
    roi = Roi(name="all", x=0, y=0, width=64, height=48)
    assert ops.crop_roi(noise_image, roi).shape == noise_image.shape


@pytest.mark.parametrize(
    ("x", "y", "width", "height"),
    [(60, 0, 5, 5), (0, 44, 5, 5), (0, 0, 65, 48), (0, 0, 64, 49), (100, 100, 1, 1)],
)
def test_crop_roi_outside_the_frame_names_roi_box_and_frame(
    noise_image: ImageU8, x: int, y: int, width: int, height: int
) -> None:
    roi = Roi(name="busbar", x=x, y=y, width=width, height=height)
    with pytest.raises(PreprocessError) as info:
        ops.crop_roi(noise_image, roi)
    message = str(info.value)
    assert "'busbar'" in message
    assert f"x={x}, y={y}, width={width}, height={height}" in message
    assert "64x48 frame" in message


# --------------------------------------------------------------------------- broken input

ROI = Roi(name="r", x=0, y=0, width=1, height=1)
OPS: dict[str, Callable[[ImageU8], object]] = {
    "rotate": lambda im: ops.rotate(im, 90),
    "rotate_any": lambda im: ops.rotate(im, 10),
    "flip": lambda im: ops.flip(im, FlipMode.BOTH),
    "resize": lambda im: ops.resize(im, 8, 8),
    "letterbox": lambda im: ops.letterbox(im, 8, 8),
    "gray": lambda im: ops.colour(im, ColourMode.GRAY),
    "clahe": lambda im: ops.colour(im, ColourMode.CLAHE),
    "blur": lambda im: ops.blur(im, 3),
    "crop_roi": lambda im: ops.crop_roi(im, ROI),
}
BROKEN: dict[str, tuple[object, str]] = {
    "float": (np.zeros((4, 4, 3), dtype=np.float32), "dtype uint8"),
    "2-D": (np.zeros((4, 4), dtype=np.uint8), "HxWx3"),
    "4 channels": (np.zeros((4, 4, 4), dtype=np.uint8), "HxWx3"),
    "empty": (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    "list": ([[0, 0, 0]], "numpy array"),
    "none": (None, "numpy array"),
}


@pytest.mark.parametrize("op_name", OPS)
@pytest.mark.parametrize("broken", BROKEN)
def test_ops_refuse_broken_images(op_name: str, broken: str) -> None:
    value, expected = BROKEN[broken]
    with pytest.raises(PreprocessError, match=expected):
        OPS[op_name](value)  # type: ignore[arg-type]


@pytest.mark.parametrize("op_name", OPS)
def test_ops_never_modify_their_input(op_name: str, noise_image: ImageU8) -> None:
    before = noise_image.copy()
    OPS[op_name](noise_image)
    np.testing.assert_array_equal(noise_image, before)


# --------------------------------------------------------------------------- stretch


def test_stretch_maps_the_percentiles_to_black_and_white() -> None:
    ramp = np.repeat(np.arange(100, 200, dtype=np.uint8)[None, :], 10, axis=0)
    image = np.ascontiguousarray(np.repeat(ramp[:, :, None], 3, axis=2))
    before = image.copy()
    out = ops.stretch(image, 1.0, 99.0)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out.shape == image.shape and out.dtype == np.uint8
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all(), "a stretch keeps the order of grey levels"
    assert row[50] == pytest.approx(127, abs=4)


def test_stretch_uses_one_table_for_all_channels() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 90, (20, 20), dtype=np.uint8)
    image = np.ascontiguousarray(np.stack([grey, grey // 2, grey], axis=2))
    out = ops.stretch(image)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert out[:, :, 0].max() == 255 and out[:, :, 1].max() < out[:, :, 0].max()


def test_stretch_leaves_a_flat_image_alone() -> None:
    flat = np.full((8, 8, 3), 77, np.uint8)
    assert ops.stretch(flat) is flat


@pytest.mark.parametrize(("low", "high"), [(50.0, 40.0), (-1.0, 99.0), (1.0, 101.0)])
def test_stretch_rejects_bad_percentiles(low: float, high: float) -> None:
    with pytest.raises(PreprocessError, match="stretch: need 0 <= low_percentile"):
        ops.stretch(np.zeros((4, 4, 3), np.uint8), low, high)
