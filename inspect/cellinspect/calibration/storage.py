"""Opening OpenCV FileStorage YAML for reading, with errors that name the file.

cv2.FileStorage raises cv2.error for some broken files and SystemError (wrapping it) for
others, e.g. unbalanced brackets; both become one CalibrationError here.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from cellinspect.errors import CalibrationError


def open_for_reading(file: Path, what: str) -> cv2.FileStorage:
    """An opened FileStorage; CalibrationError when the file is missing or not OpenCV YAML."""
    if not file.is_file():
        raise CalibrationError(f"{file}: {what} file not found")
    try:
        fs = cv2.FileStorage(str(file), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as err:
        raise CalibrationError(f"{file}: not an OpenCV {what} file: {err}") from err
    if not fs.isOpened():
        raise CalibrationError(f"{file}: cannot open as OpenCV FileStorage")
    return fs
