"""Dimensions of a round part in millimetres, measured on the undistorted image.

The part is found by thresholding (Otsu, after smoothing away belt texture); its outline, bore
and bolt holes then get sub-pixel edges along radial profiles (the strongest step of the
expected sign, the outermost one for holes so a visible hole wall is not taken for the edge).
Edge points go through the plane calibration to millimetres first and circles are fitted
there, so a slightly tilted camera does not turn circles into ellipses. Features on the top
face are lifted to `part_height_mm` above the belt (see plane.pixel_to_mm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.board import to_gray
from cellinspect.calibration.measure_config import MeasurementSpec, Polarity
from cellinspect.calibration.plane import PlaneCalibration, mm_per_px, pixel_to_mm
from cellinspect.entities import ImageU8
from cellinspect.errors import MeasurementError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_STEP_PX = 0.2
_BORE_CENTRE_FRACTION = 0.2  # a hole this close to the centre (x outer radius) is the bore


@dataclass(frozen=True)
class CircleMm:
    """A fitted circle on the plane: centre and diameter in mm, fit residual, edge points used."""

    centre_mm: tuple[float, float]
    diameter_mm: float
    fit_rms_mm: float
    points: int


@dataclass(frozen=True)
class FlangeMeasurement:
    """Outer circle, bore, bolt holes (ordered by angle) and the bolt circle through them."""

    outer: CircleMm
    bore: CircleMm | None
    holes: tuple[CircleMm, ...]
    bolt_circle: CircleMm | None
    height_mm: float

    @property
    def centre_mm(self) -> tuple[float, float]:
        return self.outer.centre_mm

    @property
    def outer_diameter_mm(self) -> float:
        return self.outer.diameter_mm

    @property
    def bore_diameter_mm(self) -> float | None:
        return self.bore.diameter_mm if self.bore is not None else None

    @property
    def bolt_circle_diameter_mm(self) -> float | None:
        return self.bolt_circle.diameter_mm if self.bolt_circle is not None else None

    @property
    def hole_count(self) -> int:
        return len(self.holes)

    @property
    def bore_offset_mm(self) -> float | None:
        """Distance between the bore's and the outer circle's centres."""
        if self.bore is None:
            return None
        return math.dist(self.bore.centre_mm, self.outer.centre_mm)

    def to_dict(self) -> dict[str, float]:
        """Flat numbers for a result record (absent features are left out)."""
        out = {
            "centre_x_mm": self.outer.centre_mm[0],
            "centre_y_mm": self.outer.centre_mm[1],
            "outer_diameter_mm": self.outer.diameter_mm,
            "hole_count": float(self.hole_count),
        }
        if self.bore is not None:
            out["bore_diameter_mm"] = self.bore.diameter_mm
            out["bore_offset_mm"] = math.dist(self.bore.centre_mm, self.outer.centre_mm)
        if self.bolt_circle is not None:
            out["bolt_circle_diameter_mm"] = self.bolt_circle.diameter_mm
        for i, hole in enumerate(self.holes):
            out[f"hole{i}_diameter_mm"] = hole.diameter_mm
        return out


# --------------------------------------------------------------------------- circle fitting


def fit_circle(points: F64) -> tuple[float, float, float, F64]:
    """Least-squares circle (Kasa, then Gauss-Newton on the geometric distance).

    Returns centre x, y, radius and each point's signed distance to the circle.
    """
    if points.shape[0] < 3:
        raise MeasurementError(f"a circle needs 3 points, got {points.shape[0]}")
    x, y = points[:, 0], points[:, 1]
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    sol, *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    r = math.sqrt(max(sol[2] + cx * cx + cy * cy, 1e-12))
    for _ in range(10):
        dx, dy = x - cx, y - cy
        d = np.hypot(dx, dy)
        d = np.where(d < 1e-12, 1e-12, d)
        res = d - r
        jac = np.stack([-dx / d, -dy / d, -np.ones_like(d)], axis=1)
        step, *_ = np.linalg.lstsq(jac, -res, rcond=None)
        cx, cy, r = cx + step[0], cy + step[1], r + step[2]
        if np.abs(step).max() < 1e-9:
            break
    res = np.hypot(x - cx, y - cy) - r
    return float(cx), float(cy), float(r), res


def robust_fit_circle(points: F64, rounds: int = 3) -> tuple[float, float, float, F64]:
    """fit_circle, dropping points beyond 3 robust sigmas of the residual a few times."""
    keep = np.ones(points.shape[0], dtype=bool)
    cx, cy, r, res = fit_circle(points)
    for _ in range(rounds):
        full = np.hypot(points[:, 0] - cx, points[:, 1] - cy) - r
        sigma = 1.4826 * float(np.median(np.abs(full[keep] - np.median(full[keep])))) + 1e-9
        new_keep = np.abs(full) <= 3.0 * sigma + 1e-6
        if new_keep.sum() < max(6, points.shape[0] // 3) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        cx, cy, r, res = fit_circle(points[keep])
    return cx, cy, r, res


# --------------------------------------------------------------------------- edges


def _radial_edges(
    grey: F32, centre: tuple[float, float], radius: float, search: float, sign: float
) -> F64:
    """Sub-pixel edge points near a circle: per ray the outermost strong step of `sign`.

    sign +1: dark inside, bright outside (a hole in a bright part); -1: the opposite.
    """
    n_rays = int(np.clip(2 * math.pi * radius / 1.0, 48, 720))
    angles = np.linspace(0, 2 * math.pi, n_rays, endpoint=False)
    lo = max(1.0, radius - search)
    s = np.arange(lo, radius + search + _STEP_PX / 2, _STEP_PX)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    map_x = (centre[0] + cos * s[None, :]).astype(np.float32)
    map_y = (centre[1] + sin * s[None, :]).astype(np.float32)
    prof = cv2.remap(grey, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grad = sign * np.gradient(np.asarray(prof, dtype=np.float64), axis=1)
    peak = grad.max(axis=1)
    strong = grad >= 0.5 * peak[:, None]
    # outermost sample that is a local maximum among the strong ones
    local_max = np.zeros_like(strong)
    local_max[:, 1:-1] = (grad[:, 1:-1] >= grad[:, :-2]) & (grad[:, 1:-1] >= grad[:, 2:])
    cand = strong & local_max
    has = cand.any(axis=1) & (peak > 0.25 * np.median(peak))
    idx = cand.shape[1] - 1 - np.argmax(cand[:, ::-1], axis=1)
    idx = np.clip(idx, 1, len(s) - 2)
    rows = np.arange(n_rays)
    g0, g1, g2 = grad[rows, idx - 1], grad[rows, idx], grad[rows, idx + 1]
    denom = g0 - 2 * g1 + g2
    offset = np.divide(
        0.5 * (g0 - g2), denom, out=np.zeros_like(denom), where=np.abs(denom) > 1e-12
    )
    r_edge = s[idx] + np.clip(offset, -1, 1) * _STEP_PX
    pts = np.stack([centre[0] + np.cos(angles) * r_edge, centre[1] + np.sin(angles) * r_edge], 1)
    return np.asarray(pts[has], dtype=np.float64)


def _measure_circle(
    grey: F32,
    centre_px: tuple[float, float],
    radius_px: float,
    sign: float,
    plane: PlaneCalibration,
    height_mm: float,
    what: str,
) -> CircleMm:
    """Two passes of radial edges (wide, then narrow around the first fit), fitted in mm."""
    search = min(6.0, 0.45 * radius_px)
    cx, cy, r = centre_px[0], centre_px[1], radius_px
    edges = np.zeros((0, 2))
    for width in (search, min(2.5, search)):
        edges = _radial_edges(grey, (cx, cy), r, width, sign)
        if edges.shape[0] < 12:
            raise MeasurementError(f"{what}: only {edges.shape[0]} edge points found")
        cx, cy, r, _ = robust_fit_circle(edges)
    mm = pixel_to_mm(edges, plane, height_mm)
    x, y, rad, res = robust_fit_circle(mm)
    return CircleMm(
        centre_mm=(x, y),
        diameter_mm=2.0 * rad,
        fit_rms_mm=float(np.sqrt(np.mean(res**2))),
        points=int(res.size),
    )


# --------------------------------------------------------------------------- segmentation


def _segment(
    grey_u8: npt.NDArray[np.uint8], polarity: Polarity
) -> tuple[npt.NDArray[np.uint8], bool]:
    """Binary mask of 'part' pixels and whether the part is bright."""
    smooth = cv2.GaussianBlur(grey_u8, (0, 0), 2.0)
    _, mask = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = polarity is not Polarity.DARK
    if polarity is Polarity.AUTO:
        border = np.concatenate(
            [mask[:4].ravel(), mask[-4:].ravel(), mask[:, :4].ravel(), mask[:, -4:].ravel()]
        )
        bright = float(np.mean(border > 0)) < 0.5
    if not bright:
        mask = 255 - mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return np.asarray(mask, dtype=np.uint8), bright


def _blob_circle(contour: npt.NDArray[np.int32]) -> tuple[float, float, float, float]:
    """Centre, equivalent radius and circularity of a contour."""
    area = float(cv2.contourArea(contour))
    m = cv2.moments(contour)
    if m["m00"] <= 0:
        return 0.0, 0.0, 0.0, 0.0
    perimeter = float(cv2.arcLength(contour, True))
    circ = 4 * math.pi * area / (perimeter * perimeter) if perimeter > 0 else 0.0
    return m["m10"] / m["m00"], m["m01"] / m["m00"], math.sqrt(area / math.pi), circ


def measure_circle_features(
    image_undistorted: ImageU8,
    plane: PlaneCalibration,
    spec: MeasurementSpec | None = None,
) -> FlangeMeasurement:
    """Outer diameter, bore, bolt holes and bolt circle of the largest round part in the image.

    `image_undistorted` must be the undistorted frame whose pixels `plane` maps (see
    plane.py); raises MeasurementError when no part is found or it is cut by the image edge.
    """
    cfg = spec if spec is not None else MeasurementSpec()
    h, w = image_undistorted.shape[:2]
    if (w, h) != plane.image_size:
        raise MeasurementError(
            f"image is {w}x{h}, the plane calibration {plane.calibration_id} is for "
            f"{plane.image_size[0]}x{plane.image_size[1]}"
        )
    grey_u8 = to_gray(image_undistorted)
    grey = np.asarray(cv2.GaussianBlur(grey_u8.astype(np.float32), (0, 0), 0.8), np.float32)
    mask, bright = _segment(grey_u8, cfg.polarity)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    scale = mm_per_px(plane)
    outers = [i for i in range(len(contours)) if hierarchy[0][i][3] < 0]
    if not outers:
        raise MeasurementError("no part found (nothing stands out from the belt)")
    part = max(outers, key=lambda i: cv2.contourArea(contours[i]))
    px, py, pr, _ = _blob_circle(np.asarray(contours[part], dtype=np.int32))
    if 2 * pr * scale < cfg.min_part_diameter_mm:
        raise MeasurementError(
            f"no part found: the largest blob is {2 * pr * scale:.1f} mm across, "
            f"smaller than {cfg.min_part_diameter_mm:g} mm"
        )
    x, y, bw, bh = cv2.boundingRect(contours[part])
    if x <= 1 or y <= 1 or x + bw >= w - 1 or y + bh >= h - 1:
        raise MeasurementError("the part touches the image border; its outline cannot be measured")
    sign = 1.0 if bright else -1.0
    outer = _measure_circle(grey, (px, py), pr, -sign, plane, cfg.part_height_mm, "outer edge")
    holes_px = []
    child = hierarchy[0][part][2]
    while child >= 0:
        hx, hy, hr, circ = _blob_circle(np.asarray(contours[child], dtype=np.int32))
        if hr * scale * 2 >= 1.5 and circ >= 0.6:
            holes_px.append((hx, hy, hr))
        child = hierarchy[0][child][0]
    bore: CircleMm | None = None
    holes: list[CircleMm] = []
    for hx, hy, hr in holes_px:
        circle = _measure_circle(grey, (hx, hy), hr, sign, plane, cfg.part_height_mm, "hole")
        if (
            math.dist(circle.centre_mm, outer.centre_mm)
            < _BORE_CENTRE_FRACTION * outer.diameter_mm / 2
        ):
            if bore is None or circle.diameter_mm > bore.diameter_mm:
                bore = circle
            continue
        holes.append(circle)
    ox, oy = outer.centre_mm
    holes.sort(key=lambda c: math.atan2(c.centre_mm[1] - oy, c.centre_mm[0] - ox) % (2 * math.pi))
    return FlangeMeasurement(
        outer=outer,
        bore=bore,
        holes=tuple(holes),
        bolt_circle=_bolt_circle(holes, outer),
        height_mm=cfg.part_height_mm,
    )


def _bolt_circle(holes: list[CircleMm], outer: CircleMm) -> CircleMm | None:
    """Circle through the hole centres (3 or more holes), else around the outer centre."""
    if not holes:
        return None
    centres = np.array([h.centre_mm for h in holes], dtype=np.float64)
    if len(holes) >= 3:
        x, y, r, res = fit_circle(centres)
    else:
        x, y = outer.centre_mm
        dist = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
        r = float(dist.mean())
        res = dist - r
    return CircleMm((x, y), 2 * r, float(np.sqrt(np.mean(res**2))), len(holes))
