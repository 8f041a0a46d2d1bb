"""Helpers for source tests: real image and video files, and a scripted fake VideoCapture."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8


def make_image(height: int = 48, width: int = 64, seed: int = 0) -> ImageU8:
    """A smooth colour image (JPEG-friendly) that differs by seed."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 3 + seed * 7, ys * 4 + seed * 11, (xs + ys) * 2 + seed * 13], axis=2)
    return (base % 256).astype(np.uint8)


def encode(image: npt.NDArray[Any], ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok, f"OpenCV could not encode {ext}"
    return buf.tobytes()


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_image(path: Path, image: npt.NDArray[Any] | None = None) -> Path:
    """Encode by the file's suffix and write it."""
    return write_bytes(path, encode(make_image() if image is None else image, path.suffix))


def write_video(path: Path, count: int, size: tuple[int, int] = (64, 48)) -> Path:
    """An MJPG .avi whose frame i is filled with grey level 20 * i (so order can be checked)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened(), "VideoWriter could not open an MJPG .avi"
    for i in range(count):
        writer.write(np.full((size[1], size[0], 3), (20 * i) % 256, np.uint8))
    writer.release()
    return path


GOOD = True
FAIL = False
Step = bool | Exception | npt.NDArray[Any]
"""One read of a fake capture: GOOD frame, FAIL (read returns False), an exception to raise,
or the exact array to return."""


class FakeCapture:
    """A VideoCapture stand-in that plays a script of reads, then fails every read."""

    def __init__(self, steps: Sequence[Step], opened: bool = True) -> None:
        self.steps = list(steps)
        self.opened = opened
        self.reads = 0
        self.released = False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self) -> tuple[bool, npt.NDArray[Any] | None]:
        self.reads += 1
        step = self.steps.pop(0) if self.steps else FAIL
        if isinstance(step, Exception):
            raise step
        if isinstance(step, np.ndarray):
            return True, step
        return (True, make_image(seed=self.reads)) if step else (False, None)

    def grab(self) -> bool:
        ok, _ = self.read()
        return ok

    def set(self, propId: int, value: float) -> bool:  # noqa: N803
        self.props[propId] = value
        return True

    def release(self) -> None:
        self.released = True


class FakeFactory:
    """Opens one scripted session per call: a list of steps, or None for 'cannot open'.

    After the script runs out every open fails. Records the targets and captures it made.
    """

    def __init__(self, sessions: Sequence[Sequence[Step] | Exception | None]) -> None:
        self.sessions = list(sessions)
        self.targets: list[int | str] = []
        self.captures: list[FakeCapture] = []

    def __call__(self, target: int | str) -> FakeCapture:
        self.targets.append(target)
        session = self.sessions.pop(0) if self.sessions else None
        if isinstance(session, Exception):
            raise session
        cap = FakeCapture(session or [], opened=session is not None)
        self.captures.append(cap)
        return cap
