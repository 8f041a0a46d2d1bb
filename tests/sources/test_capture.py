"""Camera and stream sources: failure counting, reconnect with backoff, states, prompt close."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.backoff import backoff_delay
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.capture import CameraSource, StreamSource, redact_url
from cellinspect.sources.lifecycle import Lifecycle

from .helpers import FAIL, GOOD, FakeFactory, write_video

CREATED, OPEN, RECON, CLOSED, FAILED = (
    SourceState.CREATED,
    SourceState.OPEN,
    SourceState.RECONNECTING,
    SourceState.CLOSED,
    SourceState.FAILED,
)


class Recorder:
    """Collects (old, new) state changes; `reached` fires on a chosen state."""

    def __init__(self, wait_for: SourceState | None = None) -> None:
        self.changes: list[tuple[SourceState, SourceState]] = []
        self.wait_for = wait_for
        self.reached = threading.Event()

    def __call__(self, old: SourceState, new: SourceState, why: str) -> None:
        self.changes.append((old, new))
        if new is self.wait_for:
            self.reached.set()


def kinds(items: list[SourceItem]) -> str:
    """'F' for a frame, 'x' for a failure: compact to compare against a script."""
    return "".join("F" if isinstance(i, Frame) else "x" for i in items)


def fast_stream(factory: FakeFactory, **kwargs: object) -> StreamSource:
    args: dict[str, object] = {
        "reconnect_initial_s": 0.001,
        "reconnect_max_s": 0.004,
        "jitter": 0.0,
        **kwargs,
    }
    return StreamSource("rtsp://cell/stream", capture_factory=factory, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (7, 10.0), (5000, 10.0)],
)
def test_backoff_doubles_and_caps(attempt: int, expected: float) -> None:
    assert backoff_delay(attempt, 0.5, 10.0) == expected


def test_backoff_jitter_stays_in_band() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(3, 0.5, 10.0, jitter=0.2, rng=rng) for _ in range(200)]
    assert min(delays) >= 2.0 * 0.8
    assert max(delays) <= 2.0 * 1.2
    assert len(set(delays)) > 100
    assert all(backoff_delay(9, 0.5, 10.0, 0.5, rng) <= 10.0 for _ in range(100))


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 0.5, 10.0), "attempt"), ((1, 0.0, 10.0), "> 0"), ((1, 0.5, -1.0), "> 0")],
)
def test_backoff_rejects_bad_input(args: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff_delay(*args)


def test_backoff_rejects_bad_jitter() -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(1, 0.5, 1.0, jitter=1.5)


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_rules() -> None:
    life = Lifecycle("t")
    assert life.move(OPEN)
    with pytest.raises(SourceError, match="illegal state change open -> created"):
        life.move(CREATED)
    assert life.move(RECON, "link down")
    assert life.last_error == "link down"
    assert life.move(OPEN)
    assert life.fail("dead")
    assert not life.move(OPEN)  # terminal: nothing reopens a failed source
    life.close()
    assert life.state is FAILED
    assert life.last_error == "dead"


def test_listener_errors_do_not_escape() -> None:
    def broken(old: SourceState, new: SourceState, why: str) -> None:
        raise RuntimeError("listener bug")

    life = Lifecycle("t", on_state=broken)
    assert life.move(OPEN)
    life.close()
    assert life.state is CLOSED


# --------------------------------------------------------------------------- stream


def test_stream_reconnects_then_gives_up() -> None:
    factory = FakeFactory([[GOOD, GOOD, FAIL], None, None, [GOOD, FAIL]])
    rec = Recorder()
    source = fast_stream(factory, max_reconnects=3, on_state=rec)
    items = list(source.frames())

    # grab failure, two failed reconnects (each one a failure item: the gap is recorded),
    # the third reconnect delivers a frame, its next grab fails, and the limit is reached
    assert kinds(items) == "FFxxxFx"
    assert [i.frame_id for i in items] == list(range(7))
    assert all(i.source == "stream:rtsp://cell/stream" for i in items)
    reasons = [i.reason for i in items if isinstance(i, FrameFailure)]
    assert "grab failed" in reasons[0]
    assert reasons[1:3] == [
        "stream rtsp://cell/stream: reconnect attempt 1/3 failed: cannot open",
        "stream rtsp://cell/stream: reconnect attempt 2/3 failed: cannot open",
    ]
    assert rec.changes == [(CREATED, OPEN), (OPEN, RECON), (RECON, OPEN), (OPEN, FAILED)]
    assert source.state is FAILED
    assert "gave up after 3 reconnects" in (source.last_error or "")
    assert source.reconnects == 3
    assert len(factory.targets) == 4
    assert all(cap.released for cap in factory.captures)


def test_stream_without_reconnects_fails_on_first_bad_grab() -> None:
    rec = Recorder()
    source = fast_stream(FakeFactory([[GOOD, FAIL, GOOD]]), max_reconnects=0, on_state=rec)
    assert kinds(list(source.frames())) == "Fx"
    assert rec.changes == [(CREATED, OPEN), (OPEN, FAILED)]


def test_stream_that_is_down_at_start_keeps_trying() -> None:
    rec = Recorder()
    factory = FakeFactory([None, OSError("no route to host"), [GOOD, GOOD]])
    source = fast_stream(factory, max_reconnects=2, on_state=rec)
    items = list(source.frames())
    assert kinds(items) == "xxFFx"
    assert [i.reason for i in items[:2] if isinstance(i, FrameFailure)] == [
        "stream rtsp://cell/stream: connect failed: cannot open",
        "stream rtsp://cell/stream: reconnect attempt 1/2 failed: "
        "cannot open (OSError: no route to host)",
    ]
    assert rec.changes == [(CREATED, RECON), (RECON, OPEN), (OPEN, FAILED)]


@pytest.mark.parametrize(("stable_s", "frames"), [(0.0, 4), (60.0, 2)])
def test_stable_connection_resets_the_reconnect_count(stable_s: float, frames: int) -> None:
    factory = FakeFactory([[GOOD, FAIL]] * 4)
    source = fast_stream(factory, max_reconnects=1, stable_s=stable_s)
    items = list(source.frames())
    assert kinds(items).count("F") == frames
    assert source.state is FAILED


def test_stream_read_errors_and_bad_frames_are_failures() -> None:
    bad = np.zeros((4, 4, 3), np.float64)
    factory = FakeFactory([[GOOD, RuntimeError("decoder crashed")], [bad]])
    source = fast_stream(factory, max_reconnects=1)
    items = list(source.frames())
    assert kinds(items) == "Fxx"
    reasons = [i.reason for i in items if isinstance(i, FrameFailure)]
    assert "RuntimeError: decoder crashed" in reasons[0]
    assert "float64" in reasons[1]


def test_close_interrupts_backoff_promptly() -> None:
    rec = Recorder(wait_for=RECON)
    source = StreamSource(
        "rtsp://cell/stream",
        reconnect_initial_s=60.0,
        reconnect_max_s=60.0,
        capture_factory=FakeFactory([[GOOD, FAIL]]),
        on_state=rec,
    )
    items: list[SourceItem] = []
    reader = threading.Thread(target=lambda: items.extend(source.frames()), daemon=True)
    reader.start()
    assert rec.reached.wait(5.0), "stream never started reconnecting"
    source.close()
    reader.join(5.0)  # the backoff wait is 60 s: ending here means close() woke it
    assert not reader.is_alive()
    assert kinds(items) == "Fx"
    assert source.state is CLOSED
    assert rec.changes[-1] == (RECON, CLOSED)


def test_close_while_open_stops_and_releases() -> None:
    factory = FakeFactory([[GOOD] * 100])
    source = fast_stream(factory)
    it = source.frames()
    assert isinstance(next(it), Frame)
    source.close()
    assert list(it) == []
    assert source.state is CLOSED
    assert factory.captures[0].released


def test_real_file_stream_ends_reconnects_and_fails(tmp_path: Path) -> None:
    """A finite video opened as a 'stream': each EOF is a failed grab and a reconnect."""
    count = 4
    video = write_video(tmp_path / "cam.avi", count)
    rec = Recorder()
    source = StreamSource(
        str(video),
        reconnect_initial_s=0.001,
        reconnect_max_s=0.004,
        max_reconnects=2,
        stable_s=60.0,
        on_state=rec,
    )
    assert isinstance(source, FrameSource)
    items = list(source.frames())
    assert kinds(items) == ("F" * count + "x") * 3
    assert [i.frame_id for i in items] == list(range(len(items)))
    first = [i for i in items if isinstance(i, Frame)][:count]
    assert [round(float(f.image.mean()) / 20) for f in first] == list(range(count))
    assert rec.changes == [
        (CREATED, OPEN),
        (OPEN, RECON),
        (RECON, OPEN),
        (OPEN, RECON),
        (RECON, OPEN),
        (OPEN, FAILED),
    ]
    assert source.state is FAILED
    assert "gave up after 2 reconnects" in (source.last_error or "")


def test_unopenable_stream_url_fails_after_retries(tmp_path: Path) -> None:
    source = StreamSource(
        str(tmp_path / "nothing.avi"),
        reconnect_initial_s=0.001,
        reconnect_max_s=0.002,
        max_reconnects=1,
    )
    items = list(source.frames())
    assert kinds(items) == "xx"  # the first connect and the one reconnect
    assert source.state is FAILED
    assert "cannot open" in (source.last_error or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reconnect_initial_s": 0}, "waits must be > 0"),
        ({"reconnect_max_s": -1}, "waits must be > 0"),
        ({"max_reconnects": -1}, "max_reconnects"),
        ({"jitter": 2.0}, "jitter"),
    ],
)
def test_stream_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        StreamSource("rtsp://user:secret@cam/1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
        ("http://user@cam/mjpg", "http://user@cam/mjpg"),
        ("/data/line.avi", "/data/line.avi"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_every_failed_reconnect_is_a_failure_with_the_password_hidden() -> None:
    url = "rtsp://admin:hunter2@cam:554/s1"
    factory = FakeFactory(
        [[GOOD, FAIL], None, RuntimeError(f"could not open {url}"), None, [GOOD, FAIL]]
    )
    source = StreamSource(
        url,
        reconnect_initial_s=0.001,
        reconnect_max_s=0.002,
        jitter=0.0,
        max_reconnects=None,
        capture_factory=factory,
    )
    items: list[SourceItem] = []
    for item in source.frames():
        items.append(item)
        if len(items) == 7:
            source.close()
    assert kinds(items) == "FxxxxFx"
    gaps = [i.reason for i in items[2:5] if isinstance(i, FrameFailure)]
    shown = "stream rtsp://admin:***@cam:554/s1"
    assert gaps == [
        f"{shown}: reconnect attempt 1 failed: cannot open",
        f"{shown}: reconnect attempt 2 failed: cannot open (RuntimeError: could not open "
        "rtsp://admin:***@cam:554/s1)",
        f"{shown}: reconnect attempt 3 failed: cannot open",
    ]
    assert all("hunter2" not in i.reason for i in items if isinstance(i, FrameFailure))
    assert "hunter2" not in (source.last_error or "")
    assert source.state is CLOSED


def test_gap_during_a_long_backoff_yields_one_failure_per_attempt() -> None:
    """Failures come per attempt, not per poll: a 60 s wait is one item, not thousands."""
    rec = Recorder(wait_for=RECON)
    source = StreamSource(
        "rtsp://cell/stream",
        reconnect_initial_s=60.0,
        capture_factory=FakeFactory([None]),
        on_state=rec,
    )
    items: list[SourceItem] = []
    reader = threading.Thread(target=lambda: items.extend(source.frames()), daemon=True)
    reader.start()
    assert rec.reached.wait(5.0)
    source.close()
    reader.join(5.0)
    assert not reader.is_alive()
    assert kinds(items) == "x"
    assert isinstance(items[0], FrameFailure) and "connect failed" in items[0].reason


def test_stream_name_hides_password() -> None:
    source = StreamSource("rtsp://admin:hunter2@cam/s1", capture_factory=FakeFactory([]))
    assert "hunter2" not in source.name


# --------------------------------------------------------------------------- camera


def test_camera_fails_after_consecutive_failures() -> None:
    factory = FakeFactory([[GOOD, FAIL, GOOD, FAIL, FAIL, FAIL, GOOD]])
    rec = Recorder()
    source = CameraSource(
        "0",
        width=640,
        height=480,
        max_failures=3,
        capture_factory=factory,
        retry_s=0.0,
        on_state=rec,
    )
    items = list(source.frames())
    assert kinds(items) == "FxFxxx"
    assert [i.frame_id for i in items] == list(range(6))
    assert factory.targets == [0]  # "0" means device index 0
    cap = factory.captures[0]
    assert sorted(cap.props.values()) == [480.0, 640.0]
    assert cap.released
    assert rec.changes == [(CREATED, OPEN), (OPEN, FAILED)]
    assert "3 failed grabs in a row" in (source.last_error or "")
    failures = [i for i in items if isinstance(i, FrameFailure)]
    assert "grab failed (1 in a row, limit 3)" in failures[0].reason


def test_camera_that_cannot_open_fails_without_items() -> None:
    source = CameraSource("/dev/video9", capture_factory=FakeFactory([None]))
    assert list(source.frames()) == []
    assert source.state is FAILED
    assert "camera /dev/video9: cannot open" in (source.last_error or "")


def test_camera_close_from_another_thread() -> None:
    factory = FakeFactory([[GOOD] * 10_000])
    source = CameraSource(1, capture_factory=factory)
    got = threading.Event()
    count = 0

    def consume() -> None:
        nonlocal count
        for _ in source.frames():
            count += 1
            got.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert got.wait(5.0)
    source.close()
    reader.join(5.0)
    assert not reader.is_alive()
    assert 0 < count < 10_000
    assert source.state is CLOSED
    assert factory.captures[0].released


def test_camera_rejects_zero_failures() -> None:
    with pytest.raises(SourceError, match="max_failures"):
        CameraSource(0, max_failures=0)
