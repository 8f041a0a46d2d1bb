"""Robot pick targets for rejected parts, and a simulated robot that acknowledges them.

A target is the part id, its pose in the robot base frame (mm, degrees) and the encoder count
at capture, so the robot can track the part on the belt. The pose comes from the inspection
result when it carries one (fields `pick_x_mm`, `pick_y_mm`, `pick_angle_deg`), otherwise from a
:class:`PoseEstimator` on the inspected image mapped to the belt plane by a
:class:`PlaneMapping`. Targets travel over TCP as JSON lines (one object per line, one answer
line per target) or in the Modbus result block (HR111-115).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cellinspect.calibration.pick import largest_blob_moments
from cellinspect.entities import ImageU8, InspectedFrame
from cellinspect.plc.errors import RobotError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PixelPose:
    """A part's centre and orientation in image pixels (angle counter-clockwise on screen)."""

    x_px: float
    y_px: float
    angle_deg: float


@dataclass(frozen=True, slots=True)
class PickTarget:
    """Where the robot should pick a part, in the robot base frame."""

    part_id: int
    x_mm: float
    y_mm: float
    angle_deg: float
    encoder: int

    def to_json(self) -> str:
        return json.dumps({"type": "pick", **asdict(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PickTarget:
        try:
            return cls(
                part_id=int(data["part_id"]),
                x_mm=float(data["x_mm"]),
                y_mm=float(data["y_mm"]),
                angle_deg=float(data["angle_deg"]),
                encoder=int(data["encoder"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RobotError(
                f"pick target: expected part_id, x_mm, y_mm, angle_deg, encoder; got {data!r}"
            ) from err


class PoseEstimator(Protocol):
    def __call__(self, image: ImageU8) -> PixelPose | None: ...


class PlaneMapping(Protocol):
    """Image pixels of the belt plane to robot base mm (and image angles to base angles)."""

    def to_base(self, pose: PixelPose) -> tuple[float, float, float]: ...


def largest_contour_pose(image: ImageU8) -> PixelPose | None:
    """Centre and angle of the largest bright blob (Otsu threshold); None if there is none.

    Good enough for a round flange on a darker belt: the centre is the blob's centroid; the
    angle is the blob's principal axis from its second moments, 0 for a round part.
    """
    m = largest_blob_moments(image)
    if m is None:
        return None
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    spread = m["mu20"] + m["mu02"]
    if math.hypot(m["mu20"] - m["mu02"], 2 * m["mu11"]) <= 1e-3 * spread:
        return PixelPose(float(cx), float(cy), 0.0)  # round: no principal axis
    angle = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
    return PixelPose(float(cx), float(cy), -float(angle))  # image y is down: flip to CCW


@dataclass(frozen=True, slots=True)
class ScaledPlane:
    """A square-pixel plane: scale, image point of the base origin, rotation of the axes.

    Image y points down and base y points up, so y is flipped unless `flip_y` is False.
    """

    mm_per_px: float
    origin_x_px: float = 0.0
    origin_y_px: float = 0.0
    rotation_deg: float = 0.0
    flip_y: bool = True

    def to_base(self, pose: PixelPose) -> tuple[float, float, float]:
        dx = (pose.x_px - self.origin_x_px) * self.mm_per_px
        dy = (pose.y_px - self.origin_y_px) * self.mm_per_px
        if self.flip_y:
            dy = -dy
        r = math.radians(self.rotation_deg)
        x = dx * math.cos(r) - dy * math.sin(r)
        y = dx * math.sin(r) + dy * math.cos(r)
        return x, y, _wrap_deg(pose.angle_deg + self.rotation_deg)


@dataclass(frozen=True)
class HomographyPlane:
    """A plane calibration as a 3x3 homography from image pixels to base mm."""

    matrix: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.matrix.shape != (3, 3):
            raise ValueError(f"homography must be 3x3, got {self.matrix.shape}")

    def _map(self, x: float, y: float) -> tuple[float, float]:
        p = self.matrix @ np.array([x, y, 1.0])
        if abs(p[2]) < 1e-12:
            raise ValueError(f"homography maps pixel ({x}, {y}) to infinity")
        return float(p[0] / p[2]), float(p[1] / p[2])

    def to_base(self, pose: PixelPose) -> tuple[float, float, float]:
        x0, y0 = self._map(pose.x_px, pose.y_px)
        r = math.radians(pose.angle_deg)
        x1, y1 = self._map(pose.x_px + 10 * math.cos(r), pose.y_px - 10 * math.sin(r))
        return x0, y0, _wrap_deg(math.degrees(math.atan2(y1 - y0, x1 - x0)))


def _wrap_deg(angle: float) -> float:
    """Into (-180, 180]."""
    a = math.fmod(angle, 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return a


def _result_pose(inspected: InspectedFrame) -> tuple[float, float, float] | None:
    """The pose the inspector computed (recipe with plane and hand-eye calibration), if any."""
    r = inspected.result
    if r.pick_x_mm is None or r.pick_y_mm is None:
        return None
    return r.pick_x_mm, r.pick_y_mm, r.pick_angle_deg or 0.0


def pick_target(
    inspected: InspectedFrame,
    plane: PlaneMapping | None = None,
    estimator: PoseEstimator = largest_contour_pose,
) -> PickTarget | None:
    """The pick target of an inspected part, or None without part id, encoder or pose.

    The result's own pose comes first; `plane` (a mapping of the inspected image's pixels) is
    the fallback for recipes without a plane calibration.
    """
    result = inspected.result
    if result.part_id is None or result.encoder is None:
        return None
    pose = _result_pose(inspected)
    if pose is None:
        if inspected.image is None or plane is None:
            return None
        pixel_pose = estimator(inspected.image)
        if pixel_pose is None:
            return None
        pose = plane.to_base(pixel_pose)
    x, y, a = pose
    return PickTarget(result.part_id, round(x, 2), round(y, 2), round(a, 2), result.encoder)


# --------------------------------------------------------------------------- simulated robot


@dataclass(frozen=True, slots=True)
class RobotAck:
    part_id: int
    ok: bool
    reason: str = ""


class _Handler(socketserver.StreamRequestHandler):
    server: _RobotTcpServer

    def handle(self) -> None:
        for raw in self.rfile:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            answer = self.server.robot.answer(line)
            self.wfile.write((json.dumps(answer) + "\n").encode("utf-8"))
            self.wfile.flush()


class _RobotTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], robot: SimRobot) -> None:
        self.robot = robot
        super().__init__(address, _Handler)


class SimRobot:
    """A robot that accepts pick targets within its reach and acknowledges each one.

    Over TCP: one JSON object per line in, one answer per line out:
    ``{"type": "ack", "part_id": 7, "ok": true}`` or ``{"ok": false, "reason": "..."}``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, reach_mm: float = 1500.0) -> None:
        self.host = host
        self.port = port
        self.reach_mm = reach_mm
        self.targets: list[PickTarget] = []
        self._lock = threading.Lock()
        self._server: _RobotTcpServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, line: str) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            return {"type": "ack", "ok": False, "reason": f"not JSON: {err.msg}"}
        if not isinstance(data, dict) or data.get("type") != "pick":
            return {"type": "ack", "ok": False, "reason": "expected an object with type 'pick'"}
        try:
            target = PickTarget.from_dict(data)
        except RobotError as err:
            return {"type": "ack", "ok": False, "reason": str(err)}
        if math.hypot(target.x_mm, target.y_mm) > self.reach_mm:
            return {
                "type": "ack",
                "part_id": target.part_id,
                "ok": False,
                "reason": f"out of reach ({self.reach_mm} mm)",
            }
        with self._lock:
            self.targets.append(target)
        return {"type": "ack", "part_id": target.part_id, "ok": True}

    def start(self) -> int:
        server = _RobotTcpServer((self.host, self.port), self)
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sim-robot",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SimRobot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RobotClient:
    """Sends pick targets as JSON lines and waits for each acknowledgement."""

    def __init__(self, host: str, port: int, timeout_s: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self.connects = 0  # connections made (for metrics: the ones after the first reconnect)

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as err:
            raise RobotError(f"robot {self.host}:{self.port}: cannot connect: {err}") from err
        self.connects += 1
        self._reader = self._sock.makefile("rb")

    def send(self, target: PickTarget) -> RobotAck:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall((target.to_json() + "\n").encode("utf-8"))
            line = self._reader.readline()
        except OSError as err:
            self.close()
            raise RobotError(f"robot {self.host}:{self.port}: send failed: {err}") from err
        if not line:
            self.close()
            raise RobotError(f"robot {self.host}:{self.port}: connection closed before the ack")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as err:
            raise RobotError(f"robot {self.host}:{self.port}: bad ack line {line!r}") from err
        return RobotAck(
            part_id=int(answer.get("part_id", target.part_id)),
            ok=bool(answer.get("ok", False)),
            reason=str(answer.get("reason", "")),
        )

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RobotClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RobotSink = Callable[[PickTarget], None]
