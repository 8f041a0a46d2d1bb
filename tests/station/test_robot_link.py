"""The station's robot link against the simulated robot over TCP: ack, refuse, retry, time out."""

from __future__ import annotations

import socket
import threading
import time

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.line.command import run_line
from cellinspect.plc.robot import PickTarget, SimRobot
from cellinspect.station.robot_link import LinkState, RobotLink


def _target(part_id: int, x_mm: float = 100.0) -> PickTarget:
    return PickTarget(part_id=part_id, x_mm=x_mm, y_mm=20.0, angle_deg=15.0, encoder=part_id * 100)


def test_every_target_is_acknowledged_and_close_sends_what_is_queued() -> None:
    with SimRobot() as robot:
        link = RobotLink(robot.host, robot.port, timeout_s=2.0).start()
        for pid in range(1, 21):
            link.send(_target(pid))
        link.close()
        assert [t.part_id for t in robot.targets] == list(range(1, 21))
    c = link.counters
    assert (c.sent, c.acknowledged, c.refused, c.timed_out, c.dropped) == (20, 20, 0, 0, 0)
    assert link.state is LinkState.CLOSED


def test_a_target_out_of_reach_is_refused_once_not_retried() -> None:
    with SimRobot(reach_mm=500.0) as robot:
        link = RobotLink(robot.host, robot.port, retries=3).start()
        link.send(_target(1, x_mm=2000.0))
        link.send(_target(2))
        link.close()
        assert [t.part_id for t in robot.targets] == [2]
    c = link.counters
    assert (c.sent, c.acknowledged, c.refused, c.retries, c.timed_out) == (2, 1, 1, 0, 0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_absent_robot_counts_retries_and_a_timeout_per_target() -> None:
    link = RobotLink("127.0.0.1", _closed_port(), timeout_s=0.2, retries=2).start()
    link.send(_target(7))
    link.send(_target(8))
    link.close()
    c = link.counters
    assert (c.sent, c.acknowledged, c.retries, c.timed_out) == (2, 0, 4, 2)


def test_a_robot_that_comes_back_gets_the_next_targets() -> None:
    port = _closed_port()
    link = RobotLink("127.0.0.1", port, timeout_s=0.2, retries=0).start()
    link.send(_target(1))  # nobody listens: times out
    end = time.monotonic() + 30.0
    while link.counters.timed_out < 1 and time.monotonic() < end:
        time.sleep(0.01)
    with SimRobot(port=port) as robot:
        link.send(_target(2))
        link.close()
        assert [t.part_id for t in robot.targets] == [2]
    c = link.counters
    assert (c.sent, c.acknowledged, c.timed_out) == (2, 1, 1)


def test_line_sends_every_rejected_parts_pick_to_the_robot_and_counts_acks() -> None:
    targets: list[PickTarget] = []
    results: list[InspectedFrame] = []
    lock = threading.Lock()

    def on_result(inspected: InspectedFrame) -> None:
        with lock:
            results.append(inspected)

    report = run_line(
        parts=12,
        rate_per_min=200.0,
        seed=1,
        defect_rate=0.5,
        sim_robot=True,
        on_result=on_result,
        on_target=targets.append,
    )
    assert report.gated == 12 and report.audit_ok, report.mismatches
    rejected = {r.result.part_id for r in results if r.result.verdict is not Verdict.PASS}
    assert rejected, "the seed should give at least one rejected part"
    assert {t.part_id for t in targets} == rejected
    assert report.robot_sent == report.robot_acknowledged == len(targets)
    assert report.robot_timed_out == 0
