"""Render calibration boards as the virtual camera would see them, with known ground truth.

Every output pixel is traced back through the lens (undistortPoints) to a ray, the ray is cut
with the board plane, and the board's colour there is averaged over a few sub-pixel samples.
That is exact perspective plus the camera's real distortion model, so a calibration made from
these images can be checked against the camera's true intrinsics.

The conveyor camera looks straight down at the belt, as in the sample-part renders: the parts'
top face (THICKNESS_MM thick) lies WORKING_DISTANCE_MM from the camera, where it is imaged at
PX_PER_MM (4 px/mm), so the belt itself lies ``BELT_DISTANCE_MM`` (113 mm) away.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.board import BoardKind, BoardSpec
from cellinspect.datagen.camera import DEFAULT_CAMERA, VirtualCamera
from cellinspect.datagen.part import THICKNESS_MM, WORKING_DISTANCE_MM
from cellinspect.entities import ImageU8

F64 = npt.NDArray[np.float64]

BELT_DISTANCE_MM = WORKING_DISTANCE_MM + THICKNESS_MM
"""Distance from the conveyor camera to the belt surface (the sample parts' underside)."""

CAMERA_BOARD = BoardSpec(BoardKind.CHESSBOARD, 10, 7, 8.0)
"""Board used for the shipped intrinsics: 9x6 inner corners, 80 x 56 mm."""

PLANE_BOARD = BoardSpec(BoardKind.CHESSBOARD, 11, 8, 6.0)
"""Board laid on the belt for the shipped plane calibration: 10x7 inner corners, 66 x 48 mm."""

HANDEYE_BOARD = BoardSpec(BoardKind.CHESSBOARD, 7, 6, 6.0)
"""Board held by the robot for the shipped hand-eye example: 6x5 inner corners."""


@dataclass(frozen=True)
class BoardPose:
    """Board frame -> camera frame: x_cam = R(rvec) @ x_board + tvec (mm)."""

    rvec: F64
    tvec: F64

    @property
    def rotation(self) -> F64:
        rot, _ = cv2.Rodrigues(np.asarray(self.rvec, dtype=np.float64).reshape(3, 1))
        return np.asarray(rot, dtype=np.float64)

    @classmethod
    def from_matrix(cls, rotation: F64, tvec: F64) -> BoardPose:
        rvec, _ = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))
        return cls(np.asarray(rvec, dtype=np.float64).ravel(), np.asarray(tvec, float).ravel())


@dataclass(frozen=True)
class Look:
    """Image conditions: lighting, optics and sensor; defaults are a decent industrial shot."""

    gain: float = 1.0
    gradient: float = 0.15  # brightness change across the image (fraction)
    gradient_angle_deg: float = 0.0
    vignetting: float = 0.15  # brightness loss at the image corners (fraction)
    blur_sigma_px: float = 0.5
    noise_sigma: float = 2.0  # grey levels
    black: float = 30.0  # grey level of black print
    white: float = 215.0  # grey level of white print
    background: float = 95.0  # mean grey level of the table or belt
    background_texture: float = 12.0  # amplitude of the belt texture (grey levels)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Look:
        return cls(
            gain=float(rng.uniform(0.85, 1.1)),
            gradient=float(rng.uniform(0.0, 0.25)),
            gradient_angle_deg=float(rng.uniform(0, 360)),
            blur_sigma_px=float(rng.uniform(0.35, 0.7)),
            noise_sigma=float(rng.uniform(1.0, 2.5)),
            background=float(rng.uniform(70, 120)),
        )


@functools.lru_cache(maxsize=4)
def _rays(camera: VirtualCamera, supersample: int) -> F64:
    """Normalised ideal coordinates (N x 2) of sub-pixel samples, row-major, S*S per pixel.

    The same for every view of one camera, so kept (read-only) for the next view.
    """
    s = supersample
    offsets = (np.arange(s) + 0.5) / s - 0.5
    ys = np.arange(camera.height)[:, None] + offsets[None, :]
    xs = np.arange(camera.width)[:, None] + offsets[None, :]
    gy = np.repeat(ys.reshape(camera.height, 1, s, 1), camera.width, axis=1)
    gx = np.repeat(xs.reshape(1, camera.width, 1, s), camera.height, axis=0)
    gy = np.broadcast_to(gy, (camera.height, camera.width, s, s))
    gx = np.broadcast_to(gx, (camera.height, camera.width, s, s))
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(pts, camera.camera_matrix, camera.dist_coeffs)
    rays = np.asarray(ideal, dtype=np.float64).reshape(-1, 2)
    rays.setflags(write=False)
    return rays


def _board_coordinates(rays: F64, pose: BoardPose) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """Cut each ray with the board plane: board (x, y) in mm and whether it hits in front."""
    rot = pose.rotation
    centre = -rot.T @ pose.tvec  # camera centre in the board frame
    rx, ry = rays[:, 0], rays[:, 1]
    # R^T (x, y, 1) per ray, written out: a BLAS matmul here stalls on a busy machine
    dx = rot[0, 0] * rx + rot[1, 0] * ry + rot[2, 0]
    dy = rot[0, 1] * rx + rot[1, 1] * ry + rot[2, 1]
    dz = rot[0, 2] * rx + rot[1, 2] * ry + rot[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -centre[2] / dz
    valid = np.isfinite(lam) & (lam > 0)
    lam = np.where(valid, lam, 0.0)
    x = centre[0] + lam * dx
    y = centre[1] + lam * dy
    return x, y, valid


def _charuco_texture(board: BoardSpec, px_per_mm: float) -> npt.NDArray[np.float32]:
    w = round(board.cols * board.square_mm * px_per_mm)
    h = round(board.rows * board.square_mm * px_per_mm)
    img = board.charuco_board.generateImage((w, h), marginSize=0, borderBits=1)
    return np.asarray(img, dtype=np.float32) / 255.0


def _board_reflectance(
    board: BoardSpec, x: F64, y: F64, margin_mm: float
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Print reflectance (0 black .. 1 white) and whether the point lies on the board card."""
    x0, y0, x1, y1 = board.outline_mm()
    on_card = (x >= x0 - margin_mm) & (x <= x1 + margin_mm)
    on_card &= (y >= y0 - margin_mm) & (y <= y1 + margin_mm)
    in_squares = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    refl = np.ones_like(x)
    if board.kind is BoardKind.CHESSBOARD:
        refl[in_squares & board.is_black(x, y)] = 0.0
    else:
        tex_scale = max(8.0, 12.0 / board.square_mm * 4)
        tex = _charuco_texture(board, tex_scale)
        n = x.size
        cols = 4096  # remap wants both map sides below 32767
        rows = -(-n // cols)
        mx = np.zeros(rows * cols, dtype=np.float32)
        my = np.zeros(rows * cols, dtype=np.float32)
        mx[:n] = (x - x0) * tex_scale - 0.5
        my[:n] = (y - y0) * tex_scale - 0.5
        sampled = cv2.remap(
            tex,
            mx.reshape(rows, cols),
            my.reshape(rows, cols),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).ravel()[:n]
        refl = np.where(in_squares, sampled.astype(np.float64), refl)
    return refl, on_card


def _background(camera: VirtualCamera, look: Look, rng: np.random.Generator) -> F64:
    """A belt or table: mean grey level plus smooth and fine texture."""
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (camera.height, camera.width)), (0, 0), 6.0)
    coarse = coarse / (np.std(coarse) + 1e-9)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (camera.height, camera.width)), (0, 0), 0.8)
    fine = fine / (np.std(fine) + 1e-9)
    tex = look.background + look.background_texture * (0.7 * coarse + 0.5 * fine)
    return np.asarray(tex, dtype=np.float64)


def _lighting(camera: VirtualCamera, look: Look) -> F64:
    ys, xs = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    u = (xs - camera.width / 2) / camera.width
    v = (ys - camera.height / 2) / camera.height
    ang = np.deg2rad(look.gradient_angle_deg)
    light = 1.0 + look.gradient * (u * np.cos(ang) + v * np.sin(ang))
    light *= 1.0 - look.vignetting * (u * u + v * v) * 2.0
    return np.asarray(look.gain * light, dtype=np.float64)


def render_board(
    board: BoardSpec,
    pose: BoardPose,
    camera: VirtualCamera = DEFAULT_CAMERA,
    look: Look | None = None,
    rng: np.random.Generator | None = None,
    margin_mm: float | None = None,
    supersample: int = 5,
) -> ImageU8:
    """One BGR view of the board at `pose`, through the camera's lens, with light and noise."""
    gen = rng if rng is not None else np.random.default_rng(0)
    cond = look if look is not None else Look()
    margin = board.square_mm if margin_mm is None else margin_mm
    rays = _rays(camera, supersample)
    x, y, valid = _board_coordinates(rays, pose)
    refl, on_card = _board_reflectance(board, x, y, margin)
    on_card &= valid
    s2 = supersample * supersample
    shape = (camera.height, camera.width, s2)
    card = cond.black + (cond.white - cond.black) * refl
    background = _background(camera, cond, gen)
    grey = np.where(on_card.reshape(shape), card.reshape(shape), background[:, :, None])
    img = grey.mean(axis=2) * _lighting(camera, cond)
    if cond.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), cond.blur_sigma_px)
    img = img + gen.normal(0, cond.noise_sigma, img.shape)
    grey_u8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey_u8[:, :, None], 3, axis=2))


def project_board(board: BoardSpec, pose: BoardPose, camera: VirtualCamera = DEFAULT_CAMERA) -> F64:
    """True raw-pixel positions of the board's inner corners (N x 2) at `pose`."""
    pts, _ = cv2.projectPoints(
        board.object_points().astype(np.float64),
        pose.rvec,
        pose.tvec,
        camera.camera_matrix,
        camera.dist_coeffs,
    )
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _card_corners(board: BoardSpec, margin_mm: float) -> F64:
    x0, y0, x1, y1 = board.outline_mm()
    m = margin_mm
    return np.array(
        [[x0 - m, y0 - m, 0], [x1 + m, y0 - m, 0], [x1 + m, y1 + m, 0], [x0 - m, y1 + m, 0]],
        dtype=np.float64,
    )


def board_fits(
    board: BoardSpec,
    pose: BoardPose,
    camera: VirtualCamera = DEFAULT_CAMERA,
    border_px: float = 3.0,
) -> bool:
    """Whole board (squares plus a half-square margin) inside the image, seen from the front."""
    corners = _card_corners(board, 0.5 * board.square_mm)
    cam_pts = corners @ pose.rotation.T + pose.tvec
    if np.any(cam_pts[:, 2] <= 10.0):
        return False
    normal_cam = pose.rotation[:, 2]
    if normal_cam @ (pose.tvec / np.linalg.norm(pose.tvec)) < 0.3:  # too oblique or backwards
        return False
    px, _ = cv2.projectPoints(
        corners, pose.rvec, pose.tvec, camera.camera_matrix, camera.dist_coeffs
    )
    px = px.reshape(-1, 2)
    return bool(
        np.all(px[:, 0] >= border_px)
        and np.all(px[:, 0] <= camera.width - 1 - border_px)
        and np.all(px[:, 1] >= border_px)
        and np.all(px[:, 1] <= camera.height - 1 - border_px)
    )


def rot_axis(axis: int, deg: float) -> F64:
    """Rotation matrix about x (0), y (1) or z (2) by `deg` degrees."""
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    m = np.eye(3)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _closest_fit(board: BoardSpec, rot: F64, aim: F64, camera: VirtualCamera) -> BoardPose | None:
    """The nearest distance along `aim` at which the whole board is still in view."""
    x0, y0, x1, y1 = board.outline_mm()
    centre_board = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    for dist in np.linspace(80.0, 450.0, 75):
        pose = BoardPose.from_matrix(rot, aim * dist - rot @ centre_board)
        if board_fits(board, pose, camera, border_px=3.0):
            return pose
    return None


def _place(
    board: BoardSpec,
    rot: F64,
    target: tuple[int, int],
    camera: VirtualCamera,
    min_square_px: float = 12.0,
) -> BoardPose | None:
    """Board pose with rotation `rot` pushed towards an image edge or corner (or centred).

    Among the poses that fit with squares at least `min_square_px` wide, the one whose
    corners reach farthest from the principal point wins: the periphery is where the
    distortion terms are told apart, and small squares give poor corners.
    """
    best: BoardPose | None = None
    best_reach = -1.0
    fractions = [0.0] if target == (0, 0) else [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
    for frac in fractions:
        aim = np.array(
            [
                (camera.width / 2 + target[0] * camera.width * frac - camera.cx) / camera.fx,
                (camera.height / 2 + target[1] * camera.height * frac - camera.cy) / camera.fy,
                1.0,
            ]
        )
        pose = _closest_fit(board, rot, aim, camera)
        if pose is None:
            continue
        px = project_board(board, pose, camera)
        w, h = board.inner
        grid = px.reshape(h, w, 2)
        spacing = min(
            float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
            float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()),
        )
        if spacing < min_square_px and best is not None:
            continue
        reach = float(np.max(np.hypot(px[:, 0] - camera.cx, px[:, 1] - camera.cy)))
        if reach > best_reach:
            best, best_reach = pose, reach
    return best


def calibration_poses(
    board: BoardSpec,
    count: int,
    camera: VirtualCamera = DEFAULT_CAMERA,
    seed: int = 0,
    max_tilt_deg: float = 40.0,
) -> list[BoardPose]:
    """Varied board poses that fill the image and reach its corners, as a careful user takes.

    Targets cycle over the image centre, edges and corners; each pose is tilted up to
    `max_tilt_deg` and pushed as close as the image allows (big boards constrain distortion).
    """
    rng = np.random.default_rng(seed)
    targets = [(0, 0), (-1, -1), (1, 1), (1, -1), (-1, 1), (0, -1), (0, 1), (-1, 0), (1, 0)]
    poses: list[BoardPose] = []
    attempt = 0
    while len(poses) < count:
        attempt += 1
        if attempt > 400 * count:
            raise RuntimeError(f"could not place {count} views of {board.describe()}")
        tx, ty = targets[len(poses) % len(targets)]
        rot = (
            rot_axis(2, float(rng.uniform(-25, 25)))
            @ rot_axis(1, float(rng.uniform(-max_tilt_deg, max_tilt_deg)))
            @ rot_axis(0, float(rng.uniform(-max_tilt_deg, max_tilt_deg)))
        )
        best = _place(board, rot, (tx, ty), camera)
        if best is not None:
            poses.append(best)
    return poses


def conveyor_pose(
    board: BoardSpec,
    camera: VirtualCamera = DEFAULT_CAMERA,
    distance_mm: float = BELT_DISTANCE_MM,
    rotation_deg: float = 0.0,
    centre_offset_px: tuple[float, float] = (0.0, 0.0),
) -> BoardPose:
    """The board lying flat on the belt, seen by the fixed top-down conveyor camera.

    The camera hangs `distance_mm` above the belt, optical axis vertical, image x along the
    belt; the board's centre sits `centre_offset_px` from the principal point and is turned
    `rotation_deg` about the vertical.
    """
    x0, y0, x1, y1 = board.outline_mm()
    centre_board = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    rot = rot_axis(2, rotation_deg)
    target = np.array(
        [
            centre_offset_px[0] / camera.fx * distance_mm,
            centre_offset_px[1] / camera.fy * distance_mm,
            distance_mm,
        ]
    )
    return BoardPose.from_matrix(rot, target - rot @ centre_board)
