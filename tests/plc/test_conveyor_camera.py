"""Conveyor geometry, encoder wrap, part placement, and the simulated camera's catalogues."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cellinspect.entities import Frame, FrameFailure
from cellinspect.errors import ConfigError
from cellinspect.plc.conveyor import ConveyorConfig, encoder_diff, place_parts
from cellinspect.plc.sim_camera import FolderCatalog, RenderCatalog, SimCamera
from tests.fakes import part_image


def test_encoder_counts_from_offset_and_wraps_at_2_pow_32() -> None:
    conv = ConveyorConfig(speed_mm_s=100.0, counts_per_mm=10.0, encoder_offset=2**32 - 500)
    assert conv.encoder(0.0) == 2**32 - 500
    assert conv.encoder(1.0) == 500  # 1000 counts later, past the wrap
    assert encoder_diff(conv.encoder(1.0), conv.encoder(0.0)) == 1000
    assert encoder_diff(conv.encoder(0.0), conv.encoder(1.0)) == -1000
    assert conv.travel_at(conv.encoder_at(123.4)) == pytest.approx(123.4, abs=0.1)


@pytest.mark.parametrize(
    "kwargs", [{"speed_mm_s": 0}, {"counts_per_mm": -1}, {"gate_mm": 0}, {"encoder_offset": -1}]
)
def test_conveyor_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        ConveyorConfig(**kwargs)  # type: ignore[arg-type]


def test_parts_are_placed_upstream_in_id_order_with_minimum_gap() -> None:
    parts = place_parts(["good"] * 50, pitch_mm=100.0, seed=3, jitter=0.5, min_gap_mm=70.0)
    assert [p.part_id for p in parts] == list(range(1, 51))
    gaps = [a.start_mm - b.start_mm for a, b in itertools.pairwise(parts)]
    assert min(gaps) >= 70.0 - 1e-9
    assert 90.0 < sum(gaps) / len(gaps) < 115.0
    assert parts[0].start_mm < 0
    assert place_parts([], 100.0) == []
    assert place_parts(["good"] * 5, 100.0, seed=1) == place_parts(["good"] * 5, 100.0, seed=1)


@pytest.mark.parametrize(("pitch", "jitter"), [(50.0, 0.3), (100.0, 1.0), (100.0, -0.1)])
def test_placement_refuses_impossible_spacing(pitch: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        place_parts(["good"], pitch_mm=pitch, jitter=jitter, min_gap_mm=70.0)


def test_folder_catalog_reads_labels_and_cycles(samples: Path) -> None:
    cat = FolderCatalog(samples)
    assert [cat.label(i) for i in range(1, 4)] == ["good", "scratch", "good"]
    assert cat.label(9) == cat.label(1)  # round robin over 8 samples
    img = cat.image(2)
    assert img.shape == (96, 96, 3) and int(img.max()) > 200
    assert cat.image(2) is img  # decoded once
    shuffled = FolderCatalog(samples, seed=5)
    assert sorted(shuffled.label(i) for i in range(1, 9)) == sorted(
        cat.label(i) for i in range(1, 9)
    )
    with pytest.raises(ValueError, match="start at 1"):
        cat.label(0)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("", "expected columns"),
        ("name,label\na.png,good\n", "expected columns"),
        ("file,label\n", "no rows"),
    ],
)
def test_folder_catalog_refuses_bad_labels(tmp_path: Path, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / "labels.csv").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        FolderCatalog(tmp_path)


def test_camera_serves_the_triggered_part_and_drops_on_request(samples: Path) -> None:
    cam = SimCamera(FolderCatalog(samples), drop_parts=(3,))
    frame = cam.acquire(2, 1234, acquisition_id=1)
    assert isinstance(frame, Frame)
    assert frame.part_id == 2 and frame.encoder == 1234 and frame.path == "part_001_scratch.png"
    lost = cam.acquire(3, 99, acquisition_id=2)
    assert isinstance(lost, FrameFailure) and "dropped" in lost.reason and lost.part_id == 3
    assert cam.dropped == [3]


def test_camera_reports_unreadable_images_as_failures(samples: Path) -> None:
    (samples / "part_000_good.png").write_bytes(b"not a png")
    item = SimCamera(FolderCatalog(samples)).acquire(1, 0, 1)
    assert isinstance(item, FrameFailure) and "not a readable image" in item.reason


def test_camera_drop_probability_is_seeded(samples: Path) -> None:
    def drops(seed: int) -> list[int]:
        cam = SimCamera(FolderCatalog(samples), drop_probability=0.5, seed=seed)
        for pid in range(1, 41):
            cam.acquire(pid, 0, pid)
        return cam.dropped

    assert drops(1) == drops(1) and 5 < len(drops(1)) < 35
    with pytest.raises(ValueError):
        SimCamera(FolderCatalog(samples), drop_probability=1.5)


def test_render_catalog_caches_and_checks_ids() -> None:
    rendered: list[int] = []

    def render(pid: int) -> np.ndarray:
        rendered.append(pid)
        return part_image(pid % 2 == 0, pid)

    cat = RenderCatalog(["good", "dent", "good"], render, cache_size=2)
    cat.prefetch([1, 2])
    assert cat.image(1) is cat.image(1) and rendered == [1, 2]
    cat.image(3)  # evicts the least recently used (2)
    cat.image(2)
    assert rendered == [1, 2, 3, 2]
    assert cat.label(2) == "dent" and cat.name(3) == "part_000003"
    with pytest.raises(ValueError, match="outside"):
        cat.image(4)


def test_render_catalog_close_stops_the_read_ahead_thread() -> None:
    """close() drops waiting read-ahead parts, waits for the render in progress, and stops the
    thread (a station's stop: no thread may be inside OpenCV when the process exits)."""
    rendered: list[int] = []
    in_render = threading.Event()
    release = threading.Event()

    def render(pid: int) -> np.ndarray:
        if pid == 2:
            in_render.set()
            assert release.wait(30)
        rendered.append(pid)
        return part_image(False, pid)

    cat = RenderCatalog(["good"] * 10, render, read_ahead=3)
    cat.image(1)  # schedules 2, 3, 4 for the read-ahead thread
    assert in_render.wait(30)
    thread, waiting = cat._ahead_thread, cat._ahead
    assert thread is not None and thread.is_alive()
    closer = threading.Thread(target=cat.close)
    closer.start()
    while not (waiting.queue and waiting.queue[-1] is None):  # 3 and 4 dropped, stop queued
        assert closer.is_alive()
        time.sleep(0.001)
    release.set()
    closer.join(30)
    assert not closer.is_alive() and not thread.is_alive()
    assert rendered == [1, 2]
    cat.close()  # again: nothing to stop
    cat.prefetch([5])
    assert cat.image(5) is cat.image(5)  # still usable; read-ahead starts again on demand
    cat.close()
