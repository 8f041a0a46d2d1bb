"""Image files: safe names, atomic writes, and no path ever leaves the image folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.settings import ImageFormat
from cellinspect.storage.errors import StoreError
from cellinspect.storage.images import ImageStore, safe_name
from cellinspect.storage.records import ImageKind
from cellinspect.storage.synthetic import EPOCH, synthetic_image


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("r000001", "r000001"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..", "result"),
        ("", "result"),
        ("x" * 300, "x" * 120),
        ("part 7:éß", "part_7"),
    ],
)
def test_safe_name(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe


@pytest.mark.parametrize(("fmt", "ext"), [(ImageFormat.PNG, ".png"), (ImageFormat.JPEG, ".jpg")])
def test_write_puts_a_decodable_file_in_a_day_folder(
    tmp_path: Path, fmt: ImageFormat, ext: str
) -> None:
    images = ImageStore(tmp_path, fmt)
    picture = synthetic_image("a")
    stored = images.write("../evil", EPOCH, ImageKind.OVERLAY, picture)
    assert stored.relpath == f"2026-01-05/evil_overlay{ext}"
    path = images.path_of(stored.relpath)
    data = path.read_bytes()
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == picture.shape
    if fmt is ImageFormat.PNG:
        assert np.array_equal(decoded, picture)
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("relpath", ["../outside.png", "/etc/passwd", "a/../../b.png"])
def test_paths_outside_the_root_are_refused(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(StoreError, match="outside the image folder"):
        ImageStore(tmp_path / "images").path_of(relpath)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_non_images_are_refused(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises((TypeError, ValueError)):
        ImageStore(tmp_path).write("r1", EPOCH, ImageKind.IMAGE, bad)


def test_delete_is_idempotent(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    stored = images.write("r1", EPOCH, ImageKind.IMAGE, synthetic_image("b"))
    images.delete(stored.relpath)
    images.delete(stored.relpath)
    assert not images.path_of(stored.relpath).exists()
