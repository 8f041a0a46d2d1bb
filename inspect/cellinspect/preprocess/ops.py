"""Pure image operations: HxWx3 uint8 BGR in, HxWx3 uint8 BGR out, the input never modified.

Each function checks its input and raises :class:`PreprocessError` naming the operation, so
a bad frame or a bad recipe value is reported where it happened instead of deep in OpenCV.
Operations that would not change the image (rotate by 0, resize to the same size, blur with
kernel 1) return the input array itself rather than a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from cellinspect.config import ColourMode, FlipMode, Roi
from cellinspect.entities import ImageU8, check_image
from cellinspect.errors import PreprocessError

_RIGHT_ANGLES = {
    90: cv2.ROTATE_90_COUNTERCLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_CLOCKWISE,
}
_FLIP_CODES = {FlipMode.HORIZONTAL: 1, FlipMode.VERTICAL: 0, FlipMode.BOTH: -1}


def ensure_image(image: object, what: str) -> ImageU8:
    """The image itself when it is HxWx3 uint8 and not empty, else a PreprocessError."""
    try:
        return check_image(image, what)
    except (TypeError, ValueError) as err:
        raise PreprocessError(str(err)) from err


def _as_u8(result: object) -> ImageU8:
    return np.asarray(result, dtype=np.uint8)


def rotate(image: ImageU8, degrees: float, border_value: int = 0) -> ImageU8:
    """Rotate counter-clockwise. Multiples of 90 are exact (width and height swap at 90/270);
    other angles rotate about the centre and keep the frame size, filling corners with
    `border_value`."""
    image = ensure_image(image, "rotate")
    if not math.isfinite(degrees):
        raise PreprocessError(f"rotate: degrees must be a finite number, got {degrees}")
    angle = degrees % 360.0
    nearest = round(angle) % 360
    if math.isclose(angle, round(angle), abs_tol=1e-9) and nearest % 90 == 0:
        if nearest == 0:
            return image
        return _as_u8(cv2.rotate(image, _RIGHT_ANGLES[nearest]))
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    out = cv2.warpAffine(
        image,
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value, border_value, border_value),
    )
    return _as_u8(out)


def flip(image: ImageU8, mode: FlipMode | str) -> ImageU8:
    """Mirror: horizontal swaps left and right, vertical swaps top and bottom, both does both."""
    image = ensure_image(image, "flip")
    try:
        code = _FLIP_CODES[FlipMode(mode)]
    except ValueError as err:
        choices = ", ".join(m.value for m in FlipMode)
        raise PreprocessError(f"flip: mode must be one of {choices}, got {mode!r}") from err
    return _as_u8(cv2.flip(image, code))


def interpolation_for(src_w: int, src_h: int, dst_w: int, dst_h: int) -> int:
    """INTER_AREA when either side shrinks (no aliasing), INTER_LINEAR when only enlarging."""
    return cv2.INTER_AREA if dst_w < src_w or dst_h < src_h else cv2.INTER_LINEAR


def _check_size(op: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise PreprocessError(f"{op}: target size must be positive, got {width}x{height}")


def resize(image: ImageU8, width: int, height: int) -> ImageU8:
    """Resize to exactly width x height (aspect ratio not kept; see letterbox for that)."""
    image = ensure_image(image, "resize")
    _check_size("resize", width, height)
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    inter = interpolation_for(w, h, width, height)
    return _as_u8(cv2.resize(image, (width, height), interpolation=inter))


@dataclass(frozen=True, slots=True)
class LetterboxResult:
    """A letterboxed image and how to map its pixels back to the original image."""

    image: ImageU8
    scale: float
    offset: tuple[int, int]  # (x, y) of the scaled content's top-left corner

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a point of the letterboxed image to the original image's pixel coordinates."""
        return (x - self.offset[0]) / self.scale, (y - self.offset[1]) / self.scale


def letterbox(image: ImageU8, width: int, height: int, pad_value: int = 114) -> LetterboxResult:
    """Scale to fit width x height keeping the aspect ratio, centred, padded with grey."""
    image = ensure_image(image, "letterbox")
    _check_size("letterbox", width, height)
    if not 0 <= pad_value <= 255:
        raise PreprocessError(f"letterbox: pad_value must be 0..255, got {pad_value}")
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    scaled = resize(image, new_w, new_h)
    left = (width - new_w) // 2
    top = (height - new_h) // 2
    out = cv2.copyMakeBorder(
        scaled,
        top,
        height - new_h - top,
        left,
        width - new_w - left,
        cv2.BORDER_CONSTANT,
        value=(pad_value, pad_value, pad_value),
    )
    return LetterboxResult(image=_as_u8(out), scale=scale, offset=(left, top))


def _on_luminance(image: ImageU8, mode: ColourMode, clip_limit: float, tile: int) -> ImageU8:
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    luma = np.ascontiguousarray(ycc[:, :, 0])
    if mode is ColourMode.EQUALIZE:
        luma = cv2.equalizeHist(luma)
    else:
        luma = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile)).apply(luma)
    ycc[:, :, 0] = luma
    return _as_u8(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR))


def colour(
    image: ImageU8, mode: ColourMode | str, clip_limit: float = 2.0, tile: int = 8
) -> ImageU8:
    """gray: grey level replicated to 3 channels (models keep their 3-channel input);
    equalize / clahe: contrast stretched on luminance only, so hues stay put."""
    image = ensure_image(image, "colour")
    try:
        chosen = ColourMode(mode)
    except ValueError as err:
        choices = ", ".join(m.value for m in ColourMode)
        raise PreprocessError(f"colour: mode must be one of {choices}, got {mode!r}") from err
    if chosen is ColourMode.GRAY:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return _as_u8(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    if clip_limit <= 0 or tile <= 0:
        raise PreprocessError(
            f"colour: clip_limit and tile must be positive, got {clip_limit} and {tile}"
        )
    return _on_luminance(image, chosen, clip_limit, tile)


def check_stretch(low: float, high: float) -> None:
    if not (0.0 <= low < high <= 100.0):
        raise PreprocessError(
            f"stretch: need 0 <= low_percentile < high_percentile <= 100, got {low} and {high}"
        )


def stretch(image: ImageU8, low: float = 1.0, high: float = 99.0) -> ImageU8:
    """Per-frame contrast stretch: grey levels at the low/high percentiles map to 0/255.

    Exposure and cell efficiency shift the whole image's brightness (electroluminescence
    images especially); a detector should see the pattern, not the gain. All channels get the
    same lookup table, so colours keep their hue. A flat image is returned as it is.
    """
    image = ensure_image(image, "stretch")
    check_stretch(low, high)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    counts = np.bincount(grey.ravel(), minlength=256).cumsum()
    total = counts[-1]
    lo = int(np.searchsorted(counts, total * low / 100.0, side="left"))
    hi = int(np.searchsorted(counts, total * high / 100.0, side="left"))
    if hi <= lo:
        return image
    levels = np.arange(256, dtype=np.float32)
    table = np.clip((levels - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    return _as_u8(cv2.LUT(image, table))


def check_blur_kernel(kernel: int) -> None:
    """Gaussian kernels need an odd size so they have a centre pixel."""
    if kernel < 1 or kernel % 2 == 0:
        raise PreprocessError(f"blur: kernel must be an odd number >= 1, got {kernel}")


def blur(image: ImageU8, kernel: int) -> ImageU8:
    """Gaussian blur with a kernel x kernel window (sigma derived from the size)."""
    image = ensure_image(image, "blur")
    check_blur_kernel(kernel)
    if kernel == 1:
        return image
    return _as_u8(cv2.GaussianBlur(image, (kernel, kernel), 0))


def crop_roi(image: ImageU8, roi: Roi) -> ImageU8:
    """The ROI as a view into `image` (no copy); an error when it does not lie inside."""
    image = ensure_image(image, f"ROI '{roi.name}'")
    h, w = image.shape[:2]
    right, bottom = roi.x + roi.width, roi.y + roi.height
    if roi.x < 0 or roi.y < 0 or right > w or bottom > h:
        raise PreprocessError(
            f"ROI '{roi.name}' (x={roi.x}, y={roi.y}, width={roi.width}, height={roi.height}; "
            f"right edge {right}, bottom edge {bottom}) lies outside the {w}x{h} frame"
        )
    return image[roi.y : bottom, roi.x : right]
