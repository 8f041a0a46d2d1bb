"""Image files of results: one folder per capture day, written atomically, never outside root.

File names come from the result id (sanitised) and the image kind, never from a request, and
every path read back is checked to lie inside the root.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

import cv2

from cellinspect.entities import ImageU8, check_image
from cellinspect.settings import ImageFormat
from cellinspect.storage.errors import StoreError
from cellinspect.storage.records import ImageKind, StoredImage

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_EXT = {ImageFormat.PNG: ".png", ImageFormat.JPEG: ".jpg"}
_MEDIA = {ImageFormat.PNG: "image/png", ImageFormat.JPEG: "image/jpeg"}


def safe_name(result_id: str) -> str:
    """A file-name-safe form of a result id (no separators, no leading dots)."""
    cleaned = _SAFE.sub("_", result_id).strip("._")
    return cleaned[:120] or "result"


class ImageStore:
    """Writes and deletes the image files of results under one root folder."""

    def __init__(
        self, root: Path, fmt: ImageFormat = ImageFormat.PNG, jpeg_quality: int = 90
    ) -> None:
        self.root = root.resolve()
        self.fmt = fmt
        self.jpeg_quality = jpeg_quality

    def write(
        self, result_id: str, captured: datetime, kind: ImageKind, image: ImageU8
    ) -> StoredImage:
        """Encode and write one image; the file appears whole or not at all."""
        check_image(image, f"{kind.value} of result {result_id}")
        params = (
            [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if self.fmt is ImageFormat.JPEG else []
        )
        ok, encoded = cv2.imencode(_EXT[self.fmt], image, params)
        if not ok:
            raise StoreError(f"result {result_id}: OpenCV could not encode the {kind.value}")
        data = encoded.tobytes()
        relpath = (
            f"{captured.strftime('%Y-%m-%d')}/{safe_name(result_id)}_{kind.value}{_EXT[self.fmt]}"
        )
        target = self.root / relpath
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=_EXT[self.fmt])
        except OSError as err:
            raise StoreError(f"{target}: cannot write image: {err}") from err
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            Path(tmp).replace(target)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"{target}: cannot write image: {err}") from err
        return StoredImage(
            kind=kind,
            relpath=relpath,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            media_type=_MEDIA[self.fmt],
        )

    def path_of(self, relpath: str) -> Path:
        """Absolute path of a stored file; refuses anything that would leave the root."""
        candidate = (self.root / relpath).resolve()
        if not candidate.is_relative_to(self.root):
            raise StoreError(f"image path {relpath!r} lies outside the image folder {self.root}")
        return candidate

    def delete(self, relpath: str) -> None:
        """Remove a file if it is still there (retention and rollback)."""
        try:
            self.path_of(relpath).unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(f"{relpath}: cannot delete image: {err}") from err
