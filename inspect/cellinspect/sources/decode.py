"""Turn image bytes into an HxWx3 uint8 BGR image, or a FrameReadError that says why not.

OpenCV's `imdecode` is the fast path for every format it knows (PNG, JPEG, BMP, TIFF, WebP...).
Around it sit cheap structural checks, because some OpenCV builds decode a truncated JPEG
partially with only a warning on stderr: a half-grey image must never reach the models as if
it were a part. Grey, 4-channel and 16-bit images are brought to 8-bit BGR here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8
from cellinspect.errors import FrameReadError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


# File name endings the decoder reads (case-insensitive); listing code shares this set.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def sniff_format(data: bytes) -> str | None:
    """The image format the leading bytes announce ("png", "jpeg", ...), or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


def _png_truncation(data: bytes) -> str | None:
    """Walk the PNG chunk list: every chunk must fit in the data and IEND must be reached."""
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("ascii", errors="replace")
        end = pos + 12 + length  # length, type, payload, CRC
        if end > size:
            return f"chunk {kind} needs {end} bytes, the data has {size}"
        if kind == "IEND":
            return None
        pos = end
    return f"no IEND chunk in {size} bytes"


def _jpeg_truncation(data: bytes) -> str | None:
    """The last scan (SOS) must be followed by an end-of-image marker (FFD9).

    Entropy-coded data stuffs every 0xFF byte, so FFD9 cannot occur inside a scan; looking
    after the last SOS also ignores the EOI of an embedded EXIF thumbnail.
    """
    sos = data.rfind(_JPEG_SOS)
    if sos < 0:
        return "no start-of-scan marker (FFDA)"
    if data.find(_JPEG_EOI, sos) < 0:
        return "no end-of-image marker (FFD9) after the last scan"
    return None


def _bmp_truncation(data: bytes) -> str | None:
    """The BMP header declares the file size; fewer bytes than that means a cut file."""
    declared = int.from_bytes(data[2:6], "little") if len(data) >= 6 else 0
    if declared > len(data):
        return f"header declares {declared} bytes, the data has {len(data)}"
    return None


_TRUNCATION_CHECKS = {"png": _png_truncation, "jpeg": _jpeg_truncation, "bmp": _bmp_truncation}


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_bgr8(image: npt.NDArray[Any] | None, what: str) -> ImageU8:
    """Bring what a decoder or capture gave to contiguous HxWx3 uint8 BGR.

    16-bit data keeps its full range (value >> 8: 65535 -> 255, never wrapped or clipped), which
    is within one level of what OpenCV's IMREAD_COLOR does for 16-bit PNG and TIFF files.
    """
    if image is None or not isinstance(image, np.ndarray):
        raise FrameReadError(f"{what}: no image data")
    if image.size == 0:
        raise FrameReadError(f"{what}: empty image {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise FrameReadError(f"{what}: expected 8- or 16-bit pixels, got dtype {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if channels == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif channels != 3:
        raise FrameReadError(f"{what}: expected 1, 3 or 4 channels, got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def decode_image_bytes(data: bytes, what: str) -> ImageU8:
    """Decode encoded image bytes; `what` names the origin (a path, an upload) in errors."""
    if not data:
        raise FrameReadError(f"{what}: empty data (0 bytes)")
    kind = sniff_format(data)
    check = _TRUNCATION_CHECKS.get(kind or "")
    problem = check(data) if check is not None else None
    if problem is not None:
        raise FrameReadError(f"{what}: truncated {kind} ({problem})")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
        raise FrameReadError(f"{what}: not a decodable image ({detail})") from err
    if decoded is None:
        if kind is not None:
            raise FrameReadError(f"{what}: not a decodable image (corrupt {kind} data)")
        if _looks_like_text(data):
            raise FrameReadError(f"{what}: not a decodable image (looks like text)")
        raise FrameReadError(
            f"{what}: not a decodable image (unknown format, starts with {data[:8].hex(' ')})"
        )
    return to_bgr8(decoded, what)


def decode_image_file(path: Path) -> ImageU8:
    """Read and decode one image file; every way it can fail is a FrameReadError naming it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise FrameReadError(f"{path}: file not found") from err
    except IsADirectoryError as err:
        raise FrameReadError(f"{path}: is a directory, not an image file") from err
    except PermissionError as err:
        raise FrameReadError(f"{path}: permission denied") from err
    except OSError as err:
        raise FrameReadError(f"{path}: cannot read ({err.strerror or err})") from err
    if not data:
        raise FrameReadError(f"{path}: zero-byte file")
    return decode_image_bytes(data, str(path))
