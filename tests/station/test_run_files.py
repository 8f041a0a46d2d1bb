"""`cellinspect run` as a real subprocess on file inputs: a hot folder, a video, a long free run.

Nothing is mocked: the station loads the shipped recipe and models, reads real files, judges
them, stores them in its own SQLite store and is stopped with SIGTERM (or stops by itself at
the end of a video with --until-source-ends). Verdicts are compared with the same recipe run
in this process on the same pixels, so a part judged on a truncated or re-encoded image would
show up as a different verdict (or score). No assertion depends on how long anything takes:
waits have generous timeouts only so that a hang fails instead of blocking the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cellinspect.entities import Verdict
from cellinspect.runtime.inspector import Inspector
from cellinspect.sources.decode import decode_image_bytes
from cellinspect.storage.records import StoredResult
from tests.conftest import ROOT
from tests.station.runner import StationProcess, iter_statuses, stored_results, write_station

RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = ROOT / "sample_images"

# A mix the shipped detector sorts into all three verdicts (see test_shipped_station.py):
# good parts that pass, defects that fail, a missing hole and one good part sent to REVIEW.
HOT_FOLDER_PARTS = (
    "part_0000_stain.bmp",
    "part_0001_good.bmp",
    "part_0002_scratch.bmp",
    "part_0003_good.bmp",
    "part_0007_dent.bmp",
    "part_0024_missing_hole.bmp",
    "part_0026_good.bmp",
    "part_0038_crack.bmp",
)
VIDEO_PARTS = (
    "part_0001_good.bmp",
    "part_0000_stain.bmp",
    "part_0003_good.bmp",
    "part_0007_dent.bmp",
    "part_0031_missing_hole.bmp",
    "part_0038_crack.bmp",
)


@pytest.fixture(scope="module")
def reference() -> Iterator[Inspector]:
    """The shipped recipe, in this process: what the station must say about each image."""
    inspector = Inspector.from_recipe(RECIPE)
    try:
        yield inspector
    finally:
        inspector.close()


def _expected(
    inspector: Inspector, image: np.ndarray[Any, Any], name: str
) -> tuple[Verdict, float]:
    result = inspector.inspect_image(image, name=name).result
    assert result.error is None, result.error
    assert result.score is not None
    return result.verdict, result.score


def _sample(name: str) -> np.ndarray[Any, Any]:
    path = SAMPLES / name
    return decode_image_bytes(path.read_bytes(), str(path))


def _wait_logged(proc: StationProcess, fragment: str, timeout: float = 60.0) -> dict[str, Any]:
    """A log record whose msg holds `fragment`, without taking records from the test's queue."""
    end = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < end:
        records = proc.records[:]  # appended by the reader thread; a copy is a snapshot
        for record in records[seen:]:
            if fragment in str(record.get("msg", "")):
                return record
        seen = len(records)
        if proc.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise TimeoutError(f"no log record with {fragment!r}\n{proc.log_text()}")


def _check_statuses(proc: StationProcess) -> None:
    """Every status the station logged adds up, and its part count never goes back."""
    statuses = list(iter_statuses(proc))
    assert statuses, proc.log_text()
    parts = [s["parts"] for s in statuses]
    assert parts == sorted(parts), parts
    for status in statuses:
        assert set(status["verdicts"]) == {v.value for v in Verdict}
        assert sum(status["verdicts"].values()) == status["parts"], status
    periodic = [r for r in proc.records if r.get("event") == "status"]
    assert periodic, "no periodic status record\n" + proc.log_text()
    assert any(r["status"]["parts"] > 0 for r in periodic), proc.log_text()


def _stored_verdicts(results: list[StoredResult]) -> Counter[str]:
    return Counter(r.result.verdict.value for r in results)


# --------------------------------------------------------------------------- hot folder


def _write_slowly(path: Path, data: bytes, cuts: list[int], pause_s: float) -> None:
    """Write `data` into `path` in place, flushed in pieces split at `cuts`, pausing between."""
    with path.open("wb") as fh:
        start = 0
        for cut in [*cuts, len(data)]:
            fh.write(data[start:cut])
            fh.flush()
            os.fsync(fh.fileno())
            start = cut
            if cut < len(data):
                time.sleep(pause_s)


def test_hot_folder_slow_writer_each_file_judged_once(tmp_path: Path, reference: Inspector) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    # There before the start: include_existing is false, so it is never a part.
    shutil.copyfile(SAMPLES / "part_0005_good.bmp", incoming / "already_there.bmp")
    station = write_station(
        tmp_path / "station.yaml",
        station_id="hot-folder-cell",
        line="line-files",
        source={
            "type": "hot_folder",
            "path": str(incoming),
            "pattern": "*.bmp",
            "settle_ms": 300,
            # A file read while its writer stalls is not decodable: it waits for the rest.
            "give_up_ms": 30000,
            "poll_ms": 50,
            "include_existing": False,
        },
        trigger={"mode": "free_run"},
        modbus={"enabled": False},
        opcua={"enabled": False},
        robot={"enabled": False},
        api={"enabled": False},
    )
    written: list[str] = []
    stalled: list[str] = []
    failures: list[BaseException] = []

    with StationProcess(station) as proc:
        running = proc.wait_running()
        assert running["trigger"] == "free_run"
        assert running["links"]["camera"]["name"] == f"hot_folder:{incoming}"
        assert not {"modbus", "opcua", "robot", "api"} & set(running["links"])

        def writer() -> None:
            try:
                for i, name in enumerate(HOT_FOLDER_PARTS):
                    data = (SAMPLES / name).read_bytes()
                    target = incoming / name
                    if i == 3:
                        # Published the safe way: written under another name, renamed into place.
                        part = incoming / f"{name}.part"
                        _write_slowly(part, data, [len(data) // 2], 0.1)
                        part.replace(target)
                    elif i in (2, 6):
                        # The writer stalls mid-file for longer than settle_ms: the station
                        # reads the settled, truncated file, must find it undecodable and wait
                        # for the rest instead of judging the half image.
                        with target.open("wb") as fh:
                            fh.write(data[: len(data) // 2])
                            fh.flush()
                            os.fsync(fh.fileno())
                            _wait_logged(proc, f"{target} not decodable yet")
                            stalled.append(name)
                            fh.write(data[len(data) // 2 :])
                    else:
                        # Pauses shorter than settle_ms (two or three pieces).
                        cuts = [len(data) // 3, 2 * len(data) // 3] if i % 2 else [len(data) // 2]
                        _write_slowly(target, data, cuts, 0.15)
                    written.append(name)
            except BaseException as err:
                failures.append(err)

        thread = threading.Thread(target=writer, name="slow-writer")
        thread.start()
        thread.join(timeout=180)
        assert not thread.is_alive(), "the writer hung\n" + proc.log_text()
        assert not failures, failures
        assert written == list(HOT_FOLDER_PARTS)
        assert stalled == [HOT_FOLDER_PARTS[2], HOT_FOLDER_PARTS[6]]

        proc.wait_parts(len(HOT_FOLDER_PARTS))
        assert proc.stop(signal.SIGTERM) == 0, proc.log_text()

    stopped = proc.stopped()["status"]
    results = stored_results(tmp_path / "data")
    names = [Path(r.result.path or "").name for r in results]
    # Exactly one result per file: no truncated FAIL before the real verdict, no second
    # judgement of a file that changed, nothing for the file that was there before the start.
    assert sorted(names) == sorted(HOT_FOLDER_PARTS), names
    assert stopped["parts"] == len(results)
    assert stopped["verdicts"] == {v.value: _stored_verdicts(results)[v.value] for v in Verdict}
    for stored in results:
        r = stored.result
        assert r.error is None, (r.path, r.error)
        assert r.station_id == "hot-folder-cell" and r.line == "line-files"
        assert r.source == f"hot_folder:{incoming}"
        assert r.recipe_name == "flange-default"
        name = Path(r.path or "").name
        verdict, score = _expected(reference, _sample(name), name)
        assert (name, r.verdict) == (name, verdict)
        assert r.score == pytest.approx(score, rel=1e-4, abs=1e-5), name
    by_name = {Path(r.result.path or "").name: r.result.verdict for r in results}
    # Where the shipped detector is right, the station is right too.
    assert by_name["part_0001_good.bmp"] is Verdict.PASS
    assert by_name["part_0003_good.bmp"] is Verdict.PASS
    for defect in ("part_0000_stain.bmp", "part_0002_scratch.bmp", "part_0007_dent.bmp"):
        assert by_name[defect] is Verdict.FAIL, defect
    assert by_name["part_0024_missing_hole.bmp"] is not Verdict.PASS
    _check_statuses(proc)


# --------------------------------------------------------------------------- video file


def _make_video(folder: Path, names: tuple[str, ...]) -> Path:
    """A lossless FFV1 .mkv of the sample images (BGR kept bit for bit), one frame each."""
    frames = folder / "frames"
    frames.mkdir()
    for i, name in enumerate(names):
        shutil.copyfile(SAMPLES / name, frames / f"frame_{i:03d}.bmp")
    video = folder / "parts.mkv"
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    subprocess.run(
        [
            ffmpeg, "-nostdin", "-loglevel", "error", "-y",
            "-framerate", "5", "-i", str(frames / "frame_%03d.bmp"),
            "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return video


def _decode_video(video: Path) -> list[np.ndarray[Any, Any]]:
    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.isOpened(), f"OpenCV cannot open {video}"
        out: list[np.ndarray[Any, Any]] = []
        while True:
            ok, frame = cap.read()
            if not ok:
                return out
            out.append(frame)
    finally:
        cap.release()


def test_video_file_until_source_ends(tmp_path: Path, reference: Inspector) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg binary (Debian package ffmpeg) is needed to build the video")
    video = _make_video(tmp_path, VIDEO_PARTS)
    decoded = _decode_video(video)
    # The codec is lossless: the station sees exactly the sample pixels (the shipped detector
    # rejects good parts after lossy compression, docs/benchmarks/jpeg-quality.md).
    assert len(decoded) == len(VIDEO_PARTS)
    for frame, name in zip(decoded, VIDEO_PARTS, strict=True):
        assert np.array_equal(frame, _sample(name)), name

    station = write_station(
        tmp_path / "station.yaml",
        station_id="video-cell",
        source={"type": "video", "path": str(video)},
        trigger={"mode": "free_run"},
    )
    with StationProcess(station, "--until-source-ends") as proc:
        proc.wait_running()
        assert proc.wait_exit() == 0, proc.log_text()  # no signal: it stops by itself

    stopped = proc.stopped()["status"]
    assert stopped["source_ended"] is True
    assert "source ended" in " ".join(str(r.get("msg")) for r in proc.records)
    results = stored_results(tmp_path / "data")
    assert len(results) == stopped["parts"] == len(VIDEO_PARTS)
    assert [r.result.frame_id for r in results] == list(range(len(VIDEO_PARTS)))
    for stored, name in zip(results, VIDEO_PARTS, strict=True):
        r = stored.result
        assert r.error is None, r.error
        assert r.station_id == "video-cell" and r.line == "test-line"
        assert r.source == "video:parts.mkv"
        assert r.path is not None and Path(r.path).name == "parts.mkv"
        verdict, score = _expected(reference, _sample(name), name)
        assert (name, r.verdict) == (name, verdict)
        assert r.score == pytest.approx(score, rel=1e-4, abs=1e-5), name
    assert [r.result.verdict for r in results][:4] == [
        Verdict.PASS, Verdict.FAIL, Verdict.PASS, Verdict.FAIL,
    ]  # fmt: skip
    assert results[-1].result.verdict is Verdict.FAIL


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_free_run_loses_nothing_judged(tmp_path: Path) -> None:
    station = write_station(
        tmp_path / "station.yaml",
        station_id="long-run-cell",
        site="plant-t",
        # Far more parts than the test waits for: the run is cut by SIGTERM, not by the end.
        source={"type": "synthetic", "count": 5000, "seed": 0, "defect_rate": 0.3},
        trigger={"mode": "free_run"},
        status_every_s=0.2,
    )
    with StationProcess(station) as proc:
        proc.wait_running()
        seen = proc.wait_parts(6)
        assert sum(seen["verdicts"].values()) == seen["parts"]
        assert proc.stop(signal.SIGTERM) == 0, proc.log_text()

    stopped = proc.stopped()
    assert "SIGTERM" in " ".join(str(r.get("msg")) for r in proc.records)
    status = stopped["status"]
    results = stored_results(tmp_path / "data")
    # Every part the station judged and counted is in the store, and nothing else.
    assert status["parts"] == len(results) >= 6
    assert status["links"]["store"]["written"] == len(results)
    assert status["links"]["store"]["spilled"] == status["links"]["store"]["dropped"] == 0
    assert status["source_ended"] is False
    assert status["verdicts"] == {v.value: _stored_verdicts(results)[v.value] for v in Verdict}
    # Taken in order from the source: no part skipped in between, and every frame the
    # camera had already read when SIGTERM came (queued ahead) was judged too.
    assert [r.result.frame_id for r in results] == list(range(len(results)))
    camera = status["links"]["camera"]
    assert camera["frames_read"] + camera["failures_read"] == len(results)
    for stored in results:
        r = stored.result
        assert r.station_id == "long-run-cell" and r.site == "plant-t"
        assert r.error is None, r.error
        assert r.source == "synthetic:seed=0"
    _check_statuses(proc)
