"""Calibration boards: what they look like and where their corners are found in an image.

Sizes count SQUARES (a 10x7 board has 9x6 inner corners), as printed boards and ChArUco do.
The board frame has its origin at the first inner corner, x along the columns, y along the
rows, z into the board (away from a camera that sees its front), units millimetres.

Chessboard detections are put in that frame's order: the square diagonally outside corner 0
is black and x, y, z form a right-handed frame. A chessboard whose square counts add up to an
even number looks the same turned 180 degrees, so its origin is ambiguous; such a board is fine
for intrinsics but refused where the board's pose matters (plane, hand-eye).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.errors import CalibrationError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


class BoardKind(enum.StrEnum):
    """Kinds of calibration target this package can detect and render."""

    CHESSBOARD = "chessboard"
    CHARUCO = "charuco"


def parse_size(text: str) -> tuple[int, int]:
    """'10x7' -> (10, 7); anything else is a CalibrationError that shows the expected form."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise CalibrationError(f"board size {text!r}: expected COLSxROWS in squares, e.g. 10x7")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class BoardSpec:
    """A printed board: kind, squares across (cols) and down (rows), square side in mm."""

    kind: BoardKind
    cols: int
    rows: int
    square_mm: float
    marker_mm: float | None = None
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.cols < 3 or self.rows < 3:
            raise CalibrationError(
                f"board {self.cols}x{self.rows}: needs at least 3x3 squares (2x2 inner corners)"
            )
        if not self.square_mm > 0:
            raise CalibrationError(f"board square size must be > 0 mm, got {self.square_mm}")
        if self.kind is BoardKind.CHARUCO:
            if self.marker_mm is not None and not 0 < self.marker_mm < self.square_mm:
                raise CalibrationError(
                    f"charuco marker size {self.marker_mm} mm must be between 0 and the "
                    f"square size {self.square_mm} mm"
                )
            if not hasattr(cv2.aruco, self.dictionary):
                raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r}")

    @classmethod
    def parse(
        cls, kind: str, size: str, square_mm: float, marker_mm: float | None = None
    ) -> BoardSpec:
        """Build a spec from CLI-style text ('chessboard', '10x7', 8.0)."""
        try:
            board_kind = BoardKind(kind.lower())
        except ValueError as err:
            choices = ", ".join(k.value for k in BoardKind)
            raise CalibrationError(f"board kind {kind!r}: expected one of {choices}") from err
        cols, rows = parse_size(size)
        return cls(board_kind, cols, rows, float(square_mm), marker_mm)

    @property
    def inner(self) -> tuple[int, int]:
        """Inner corners (across, down): OpenCV's patternSize."""
        return self.cols - 1, self.rows - 1

    @property
    def corner_count(self) -> int:
        return (self.cols - 1) * (self.rows - 1)

    @property
    def orientation_is_unique(self) -> bool:
        """True when the board's origin can be told apart from the opposite corner."""
        return self.kind is BoardKind.CHARUCO or (self.cols + self.rows) % 2 == 1

    @property
    def marker_side_mm(self) -> float:
        return self.marker_mm if self.marker_mm is not None else 0.7 * self.square_mm

    def describe(self) -> str:
        """One line for files and reports, e.g. 'chessboard 10x7 squares, 8 mm'."""
        text = f"{self.kind.value} {self.cols}x{self.rows} squares, {self.square_mm:g} mm"
        if self.kind is BoardKind.CHARUCO:
            text += f", markers {self.marker_side_mm:g} mm {self.dictionary}"
        return text

    def object_points(self) -> F32:
        """All inner corners in the board frame (N x 3, mm), row by row.

        Corner id = row * (cols - 1) + col, as ChArUco numbers them.
        """
        w, h = self.inner
        xs, ys = np.meshgrid(np.arange(w), np.arange(h))
        pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(w * h)], axis=1) * self.square_mm
        return pts.astype(np.float32)

    def is_black(self, x_mm: F64, y_mm: F64) -> npt.NDArray[np.bool_]:
        """Chessboard colour at board-frame points: the square outside corner 0 is black."""
        i = np.floor(x_mm / self.square_mm).astype(np.int64) + 1
        j = np.floor(y_mm / self.square_mm).astype(np.int64) + 1
        return np.asarray((i + j) % 2 == 0)

    def outline_mm(self) -> tuple[float, float, float, float]:
        """Board squares' extent in the board frame: (x0, y0, x1, y1)."""
        s = self.square_mm
        return -s, -s, (self.cols - 1) * s, (self.rows - 1) * s

    @cached_property
    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        """OpenCV's board object (ChArUco only)."""
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(
            (self.cols, self.rows), self.square_mm, self.marker_side_mm, dictionary
        )


@dataclass(frozen=True)
class BoardDetection:
    """Corners found in one image: raw (distorted) pixels, their board points and ids."""

    image_points: F32  # N x 2
    object_points: F32  # N x 3
    ids: I32  # N
    image_size: tuple[int, int]  # (width, height)
    sharpness: float  # variance of the Laplacian inside the board's outline

    @property
    def count(self) -> int:
        return int(self.ids.size)


def to_gray(image: U8) -> U8:
    """Grey view of a BGR or grey uint8 image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.asarray(image[:, :, 0])
    raise CalibrationError(f"expected a grey or BGR image, got shape {image.shape}")


def laplacian_variance(gray: U8, mask: U8 | None = None) -> float:
    """Focus measure: variance of the Laplacian (over the mask when given)."""
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    values = lap[mask > 0] if mask is not None else lap.ravel()
    return float(values.var()) if values.size else 0.0


def _hull_sharpness(gray: U8, points: F32) -> float:
    mask = np.zeros(gray.shape, dtype=np.uint8)
    hull = cv2.convexHull(points.reshape(-1, 1, 2).astype(np.float32)).astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 255)
    return laplacian_variance(gray, mask)


def _sample(gray: F32, point: F64) -> float:
    x = int(np.clip(round(point[0]), 0, gray.shape[1] - 1))
    y = int(np.clip(round(point[1]), 0, gray.shape[0] - 1))
    return float(gray[y, x])


def _normalise_chessboard(gray: U8, corners: F32, board: BoardSpec) -> F32:
    """Order detected corners in the board frame: right-handed, black square at corner 0."""
    w, h = board.inner
    grid = corners.reshape(h, w, 2).astype(np.float64)
    dx = grid[0, 1] - grid[0, 0]
    dy = grid[1, 0] - grid[0, 0]
    if dx[0] * dy[1] - dx[1] * dy[0] < 0:  # image y points down: a front view has cross > 0
        grid = grid[::-1]
        dx = grid[0, 1] - grid[0, 0]
        dy = grid[1, 0] - grid[0, 0]
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
    outside = _sample(smooth, grid[0, 0] - 0.5 * dx - 0.5 * dy)  # should be black
    beside = _sample(smooth, grid[0, 0] + 0.5 * dx - 0.5 * dy)  # should be white
    if outside > beside:
        grid = grid[::-1, ::-1]
    return grid.reshape(-1, 2).astype(np.float32)


def _refine(gray: U8, corners: F32, board: BoardSpec) -> F32:
    """cornerSubPix with a window as large as the smallest square spacing allows."""
    w, h = board.inner
    grid = corners.reshape(h, w, 2)
    across = np.linalg.norm(np.diff(grid, axis=1), axis=2)
    down = np.linalg.norm(np.diff(grid, axis=0), axis=2)
    spacing = float(min(np.median(across), np.median(down)))
    half = max(2, min(6, int(spacing * 0.35)))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 0.001)
    refined = cv2.cornerSubPix(
        gray, corners.reshape(-1, 1, 2).copy(), (half, half), (-1, -1), criteria
    )
    return np.asarray(refined, dtype=np.float32).reshape(-1, 2)


def _detect_chessboard(gray: U8, board: BoardSpec) -> F32 | None:
    """Classic detector first (its cornerSubPix corners were the more accurate on our renders),
    the sector-based one when the classic one fails; both refined with cornerSubPix."""
    pattern = board.inner
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    if not found:
        flags_sb = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
        found, corners = cv2.findChessboardCornersSB(gray, pattern, flags=flags_sb)
    if not found:
        return None
    return _refine(gray, np.asarray(corners, dtype=np.float32).reshape(-1, 2), board)


def detect_board(image: U8, board: BoardSpec, min_corners: int = 6) -> BoardDetection | None:
    """Find the board's inner corners with sub-pixel accuracy; None when it is not there.

    Chessboards need every inner corner visible; ChArUco boards may be partly outside the
    image, as long as `min_corners` corners are found.
    """
    gray = to_gray(image)
    size = (int(gray.shape[1]), int(gray.shape[0]))
    if board.kind is BoardKind.CHESSBOARD:
        corners = _detect_chessboard(gray, board)
        if corners is None:
            return None
        corners = _normalise_chessboard(gray, corners, board)
        ids = np.arange(board.corner_count, dtype=np.int32)
        obj = board.object_points()
    else:
        detector = cv2.aruco.CharucoDetector(board.charuco_board)
        ch_corners, ch_ids, _, _ = detector.detectBoard(gray)
        if ch_ids is None or len(ch_ids) < min_corners:
            return None
        if board.charuco_board.checkCharucoCornersCollinear(ch_ids):
            return None  # a single row of corners fixes no plane
        corners = np.asarray(ch_corners, dtype=np.float32).reshape(-1, 2)
        ids = np.asarray(ch_ids, dtype=np.int32).ravel()
        obj = board.object_points()[ids]
    return BoardDetection(
        image_points=corners,
        object_points=obj,
        ids=ids,
        image_size=size,
        sharpness=_hull_sharpness(gray, corners),
    )
