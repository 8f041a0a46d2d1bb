"""Checks on an uploaded image before it reaches the inspector.

Order: declared media type, size, then the header read by Pillow (format allow-list, pixel
count, and what decoding would cost in memory from width, height, channels and bit depth, so a
small file that would inflate to gigabytes is refused before decoding), then the full decode.
Decoding uses `cellinspect.sources.decode.decode_image_bytes` when that module is present, else
OpenCV's imdecode.
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, FrameReadError

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP"})
ALLOWED_MEDIA = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/webp",
        "application/octet-stream",
    }
)


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff(data: bytes) -> str | None:
    """Format named by the first bytes, for telling a corrupt image from a non-image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


class UploadRejectedError(CellInspectError):
    """An upload failed a check; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Decoding budget per pixel of the recipe's frame: 4 channels of 16 bits, so any image of the
# expected size decodes, in any accepted format.
BYTES_PER_FRAME_PIXEL = 8
# Without a frame size from the recipe: an 8-bit BGR image of max_pixels.
BYTES_PER_MAX_PIXEL = 3


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int
    frame_size: tuple[int, int] | None = None  # (width, height) the recipe expects

    @property
    def max_decoded_bytes(self) -> int:
        if self.frame_size is not None:
            width, height = self.frame_size
            return width * height * BYTES_PER_FRAME_PIXEL
        return self.max_pixels * BYTES_PER_MAX_PIXEL

    def describe_decoded_limit(self) -> str:
        mb = self.max_decoded_bytes / 1e6
        if self.frame_size is not None:
            width, height = self.frame_size
            return f"{mb:.1f} MB (a 16-bit RGBA frame of the recipe's {width}x{height})"
        return f"{mb:.1f} MB (an 8-bit colour image of max_image_pixels {self.max_pixels})"


def _sample_bytes(img: Image.Image, fmt: str, data: bytes) -> int:
    """Bytes per sample from the header: 16-bit PNG and TIFF load as 8-bit modes in Pillow."""
    depth = 8
    if fmt == "PNG" and len(data) >= 26:
        depth = data[24]  # IHDR: 8 signature + 4 length + 4 type + 4 width + 4 height
    elif fmt == "TIFF":
        tags = getattr(img, "tag_v2", None)
        bits: object = tags.get(258, 8) if tags is not None else 8
        values = bits if isinstance(bits, tuple) else (bits,)
        depth = max((v for v in values if isinstance(v, int)), default=8)
    if img.mode in ("I", "F"):
        depth = max(depth, 32)
    elif img.mode.startswith("I;16"):
        depth = max(depth, 16)
    return max(1, (depth + 7) // 8)


def _decoded_bytes(img: Image.Image, fmt: str, data: bytes, width: int, height: int) -> int:
    """What a decode holds at least: every band at its bit depth, and never under 8-bit BGR."""
    bands = max(3, len(img.getbands()))
    return width * height * bands * _sample_bytes(img, fmt, data)


def check_media_type(content_type: str | None, what: str) -> None:
    if not content_type:
        return
    base = content_type.split(";", 1)[0].strip().lower()
    if base not in ALLOWED_MEDIA:
        raise UploadRejectedError(
            415,
            f"{what}: expected an image (PNG, JPEG, BMP, TIFF or WebP), got media type {base!r}",
        )


def check_header(data: bytes, limits: UploadLimits, what: str) -> tuple[str, int, int]:
    """Format and size from the header alone; refuses unknown formats and pixel bombs."""
    if not data:
        raise UploadRejectedError(422, f"{what}: the upload is empty")
    if len(data) > limits.max_bytes:
        raise UploadRejectedError(
            413, f"{what}: {len(data)} bytes is over the upload limit of {limits.max_bytes}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                fmt, (width, height) = str(img.format), img.size
                decoded = _decoded_bytes(img, fmt, data, width, height)
    except Image.DecompressionBombError as err:
        raise UploadRejectedError(413, f"{what}: image has too many pixels ({err})") from err
    except UnidentifiedImageError as err:
        kind = sniff(data)
        if kind is not None:
            raise UploadRejectedError(
                422, f"{what}: unreadable image header (corrupt {kind})"
            ) from err
        raise UploadRejectedError(
            415, f"{what}: not a recognised image (expected PNG, JPEG, BMP, TIFF or WebP)"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UploadRejectedError(422, f"{what}: unreadable image header ({err})") from err
    if fmt not in ALLOWED_FORMATS:
        raise UploadRejectedError(
            415, f"{what}: image format {fmt} is not accepted (expected {sorted(ALLOWED_FORMATS)})"
        )
    if width <= 0 or height <= 0:
        raise UploadRejectedError(422, f"{what}: image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise UploadRejectedError(
            413,
            f"{what}: image is {width}x{height} = {width * height} pixels, "
            f"over the limit of {limits.max_pixels}",
        )
    if decoded > limits.max_decoded_bytes:
        raise UploadRejectedError(
            413,
            f"{what}: a {width}x{height} {fmt} needs about {decoded / 1e6:.1f} MB to decode, "
            f"over the limit of {limits.describe_decoded_limit()}",
        )
    return fmt, width, height


def _cv2_decode(data: bytes, what: str) -> ImageU8:
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise FrameReadError(f"{what}: OpenCV cannot decode the image ({err})") from err
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise FrameReadError(f"{what}: OpenCV cannot decode the image")
    return cast(ImageU8, image.astype(np.uint8, copy=False))


def _decoder() -> Callable[[bytes, str], ImageU8]:
    try:
        module = importlib.import_module("cellinspect.sources.decode")
    except ImportError:
        return _cv2_decode
    decode = getattr(module, "decode_image_bytes", None)
    return cast(Callable[[bytes, str], ImageU8], decode) if callable(decode) else _cv2_decode


def decode_upload(data: bytes, limits: UploadLimits, what: str) -> ImageU8:
    """All checks, then the decoded HxWx3 uint8 BGR image; raises UploadRejectedError."""
    check_header(data, limits, what)
    try:
        image = _decoder()(data, what)
    except FrameReadError as err:
        raise UploadRejectedError(422, f"{what}: cannot decode image: {err}") from err
    if image.shape[0] * image.shape[1] > limits.max_pixels:
        raise UploadRejectedError(413, f"{what}: decoded image is larger than its header said")
    return image
