"""Pick targets from real images, plane mappings, and the simulated robot over TCP JSON lines."""

from __future__ import annotations

import dataclasses
import json
import socket
import uuid
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from cellinspect.entities import InspectedFrame, InspectionResult, Verdict
from cellinspect.plc.errors import RobotError
from cellinspect.plc.robot import (
    HomographyPlane,
    PickTarget,
    PixelPose,
    RobotClient,
    ScaledPlane,
    SimRobot,
    largest_contour_pose,
    pick_target,
)


def _inspected(image: np.ndarray | None, part_id: int | None = 5, encoder: int | None = 77):
    result = InspectionResult(
        result_id=uuid.uuid4().hex,
        frame_id=0,
        source="t",
        verdict=Verdict.FAIL,
        reasons=(),
        captured_wall=datetime.now(UTC),
        recipe_name="r",
        recipe_sha256="0",
        part_id=part_id,
        encoder=encoder,
    )
    return InspectedFrame(result=result, image=image)


def _disc(cx: int, cy: int) -> np.ndarray:
    img = np.full((200, 300, 3), 30, np.uint8)
    cv2.circle(img, (cx, cy), 40, (200, 200, 200), -1)
    return img


def test_contour_pose_finds_the_part_centre() -> None:
    pose = largest_contour_pose(_disc(180, 90))
    assert pose is not None
    assert pose.x_px == pytest.approx(180, abs=0.5) and pose.y_px == pytest.approx(90, abs=0.5)
    assert pose.angle_deg == 0.0


@pytest.mark.parametrize("angle", [0.0, 30.0, -45.0, 80.0])
def test_contour_pose_angle_of_an_elongated_part(angle: float) -> None:
    img = np.full((240, 240, 3), 20, np.uint8)
    box = cv2.boxPoints(((120, 120), (140, 40), -angle))  # OpenCV angles are clockwise
    cv2.fillPoly(img, [box.astype(np.int32)], (220, 220, 220))
    pose = largest_contour_pose(img)
    assert pose is not None
    assert pose.angle_deg == pytest.approx(angle, abs=1.5)


def test_contour_pose_of_an_empty_frame_is_none() -> None:
    assert largest_contour_pose(np.zeros((50, 50, 3), np.uint8)) is None


def test_scaled_plane_maps_pixels_to_base_mm() -> None:
    plane = ScaledPlane(mm_per_px=0.25, origin_x_px=100, origin_y_px=100, rotation_deg=90.0)
    x, y, a = plane.to_base(PixelPose(140, 100, 10.0))  # 10 mm right in the image
    assert (x, y, a) == pytest.approx((0.0, 10.0, 100.0), abs=1e-9)
    x, y, _ = ScaledPlane(0.5).to_base(PixelPose(0, 20, 0))  # image down is base -y
    assert (x, y) == pytest.approx((0.0, -10.0))


def test_homography_plane_matches_an_equivalent_scale() -> None:
    h = np.array([[0.25, 0, -25.0], [0, -0.25, 25.0], [0, 0, 1.0]])
    hp = HomographyPlane(h).to_base(PixelPose(140, 60, 30.0))
    sp = ScaledPlane(0.25, 100, 100).to_base(PixelPose(140, 60, 30.0))
    assert hp == pytest.approx(sp, abs=1e-6)
    with pytest.raises(ValueError, match="3x3"):
        HomographyPlane(np.eye(2))


def test_pick_target_from_the_inspected_image() -> None:
    plane = ScaledPlane(mm_per_px=0.5, origin_x_px=150, origin_y_px=100)
    target = pick_target(_inspected(_disc(170, 80)), plane)
    assert target == PickTarget(
        5, pytest.approx(10.0, abs=0.3), pytest.approx(10.0, abs=0.3), 0.0, 77
    )


def test_pick_target_prefers_a_pose_carried_by_the_result() -> None:
    @dataclasses.dataclass(frozen=True)
    class Measured:
        part_id: int = 9
        encoder: int = 3
        pick_x_mm: float = 1.5
        pick_y_mm: float = -2.0
        pick_angle_deg: float = 45.0

    inspected = InspectedFrame(result=Measured(), image=None)  # type: ignore[arg-type]
    assert pick_target(inspected, ScaledPlane(1.0)) == PickTarget(9, 1.5, -2.0, 45.0, 3)


@pytest.mark.parametrize(
    ("image", "part_id", "encoder"),
    [
        (None, 5, 7),
        (np.zeros((40, 40, 3), np.uint8), 5, 7),
        (_disc(100, 100), None, 7),
        (_disc(100, 100), 5, None),
    ],
)
def test_no_target_without_pose_part_or_encoder(
    image: np.ndarray | None, part_id: int | None, encoder: int | None
) -> None:
    assert pick_target(_inspected(image, part_id, encoder), ScaledPlane(1.0)) is None


def test_sim_robot_acknowledges_targets_over_json_lines() -> None:
    with (
        SimRobot(host="127.0.0.1", port=0, reach_mm=500.0) as robot,
        RobotClient("127.0.0.1", robot.port) as client,
    ):
        ack = client.send(PickTarget(11, 120.5, -40.0, 15.0, 123456))
        assert ack.ok and ack.part_id == 11
        far = client.send(PickTarget(12, 900.0, 0.0, 0.0, 1))
        assert not far.ok and "reach" in far.reason
        assert robot.targets == [PickTarget(11, 120.5, -40.0, 15.0, 123456)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "type 'pick'"),
        ('{"type": "place"}', "type 'pick'"),
        ('{"type": "pick", "part_id": 1}', "expected part_id"),
        (
            '{"type": "pick", "part_id": "x", "x_mm": 0, "y_mm": 0, "angle_deg": 0, "encoder": 0}',
            "expected part_id",
        ),
    ],
)
def test_sim_robot_refuses_bad_lines(line: str, reason: str) -> None:
    with SimRobot(port=0) as robot, socket.create_connection(("127.0.0.1", robot.port), 2) as s:
        s.sendall(line.encode() + b"\n\n")
        answer = json.loads(s.makefile("rb").readline())
        assert answer["ok"] is False and reason in answer["reason"]
        assert robot.targets == []


def test_robot_client_without_robot_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RobotClient("127.0.0.1", port, timeout_s=0.5)
    with pytest.raises(RobotError, match="cannot connect"):
        client.send(PickTarget(1, 0, 0, 0, 0))
