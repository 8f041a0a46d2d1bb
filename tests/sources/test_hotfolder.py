"""HotFolderSource with real writer threads: complete files only, once each, and clean stops."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.base import SourceState
from cellinspect.sources.hotfolder import HotFolderSource

from .helpers import encode, make_image, write_bytes, write_image


def hot(path: Path, **kwargs: Any) -> HotFolderSource:
    """A hot folder with fast settle (60 ms), poll (10 ms) and give-up (300 ms) unless told."""
    kwargs.setdefault("settle_ms", 60)
    kwargs.setdefault("poll_ms", 10)
    kwargs.setdefault("give_up_ms", 300)
    return HotFolderSource(path, **kwargs)


def _collect(source: HotFolderSource, join_s: float = 10.0) -> list[SourceItem]:
    """Iterate in a thread so a source that never stops fails the test instead of hanging it."""
    items: list[SourceItem] = []
    reader = threading.Thread(target=lambda: items.extend(source.frames()), daemon=True)
    reader.start()
    reader.join(join_s)
    if reader.is_alive():
        source.close()
        reader.join(2.0)
        pytest.fail(f"hot folder did not stop within {join_s} s (state {source.state})")
    return items


def _later(delay_s: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_slowly_written_file_is_read_only_when_complete(tmp_path: Path) -> None:
    image = make_image(120, 160, seed=3)
    data = encode(image, ".png")
    target = tmp_path / "slow.png"
    source = hot(tmp_path, settle_ms=250, idle_timeout_s=0.4)

    def write_in_chunks() -> None:
        chunk = len(data) // 6 + 1
        with target.open("wb") as fh:
            for start in range(0, len(data), chunk):
                fh.write(data[start : start + chunk])
                fh.flush()
                time.sleep(0.04)

    writer = _later(0.05, write_in_chunks)
    items = _collect(source)
    writer.join()

    assert len(items) == 1
    (item,) = items
    assert isinstance(item, Frame), getattr(item, "reason", "")
    np.testing.assert_array_equal(item.image, image)
    assert item.path == str(target)
    assert source.state is SourceState.CLOSED


@pytest.mark.parametrize("ext", [".bmp", ".png"])
def test_writer_pausing_longer_than_settle_gives_one_result(tmp_path: Path, ext: str) -> None:
    """A writer that stalls mid-file (longer than settle_ms) must not cause a truncated FAIL
    followed by a PASS: the part is judged once, when the file is complete."""
    image = make_image(120, 160, seed=5)
    data = encode(image, ext)
    target = tmp_path / f"stalled{ext}"
    source = hot(tmp_path, settle_ms=60, give_up_ms=3000, idle_timeout_s=0.5)  # the default

    def write_with_stalls() -> None:
        cuts = [0, 40, len(data) // 3, 2 * len(data) // 3, len(data)]
        with target.open("wb") as fh:
            for start, end in itertools.pairwise(cuts):
                fh.write(data[start:end])
                fh.flush()
                time.sleep(0.25)  # about four settle periods with a partial file on disk

    writer = _later(0.05, write_with_stalls)
    items = _collect(source)
    writer.join()

    assert [type(i).__name__ for i in items] == ["Frame"], [
        getattr(i, "reason", "frame") for i in items
    ]
    assert isinstance(items[0], Frame)
    np.testing.assert_array_equal(items[0].image, image)


def test_rename_into_place_and_temp_files_ignored(tmp_path: Path) -> None:
    source = hot(tmp_path, idle_timeout_s=0.3)
    temp, hidden = tmp_path / "part7.png.tmp", tmp_path / ".part8.png"

    def publish() -> None:
        write_bytes(temp, encode(make_image(seed=7), ".png"))
        write_bytes(hidden, encode(make_image(seed=8), ".png"))
        time.sleep(0.2)  # several settle periods: the source must leave temp names alone
        temp.replace(tmp_path / "part7.png")
        hidden.replace(tmp_path / "part8.png")

    writer = _later(0.02, publish)
    items = _collect(source)
    writer.join()
    assert sorted(i.path or "" for i in items) == [
        str(tmp_path / "part7.png"),
        str(tmp_path / "part8.png"),
    ]
    assert all(isinstance(i, Frame) for i in items)


def test_each_file_once_in_arrival_order(tmp_path: Path) -> None:
    source = hot(tmp_path, idle_timeout_s=0.3)
    names = ["b10.png", "b2.png", "a.jpg"]
    for i, name in enumerate(names):
        path = write_image(tmp_path / name, make_image(seed=i))
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
    items = _collect(source)
    assert [Path(i.path or "").name for i in items] == names  # by mtime, not by name
    assert [i.frame_id for i in items] == [0, 1, 2]


def test_file_changed_in_place_after_it_was_judged_is_not_judged_again(tmp_path: Path) -> None:
    """Appending to or rewriting a judged file in place is the same part, not a new one.

    (Before give_up_ms existed, a new (mtime, size) was a new version and yielded again.)
    """
    source = hot(tmp_path, idle_timeout_s=0.3)
    target = tmp_path / "x.png"
    write_image(target, make_image(seed=1))
    items: list[SourceItem] = []
    for item in source.frames():
        items.append(item)
        if len(items) == 1:  # the generator is paused: rewrite before it polls again
            write_image(target, make_image(64, 64, seed=2))
            with target.open("ab") as fh:
                fh.write(b"trailing bytes")
    assert [i.path for i in items] == [str(target)]
    assert isinstance(items[0], Frame)
    assert items[0].image.shape == (48, 64, 3)


def test_replaced_file_is_a_new_part(tmp_path: Path) -> None:
    """A new file renamed over a judged one (new inode) is judged again."""
    source = hot(tmp_path, idle_timeout_s=0.3)
    target = tmp_path / "x.png"
    write_image(target, make_image(seed=1))
    items: list[SourceItem] = []
    for item in source.frames():
        items.append(item)
        if len(items) == 1:
            staged = write_bytes(tmp_path / "x.png.tmp", encode(make_image(64, 64, seed=2), ".png"))
            staged.replace(target)
    assert [i.path for i in items] == [str(target)] * 2
    assert isinstance(items[1], Frame)
    assert items[1].image.shape == (64, 64, 3)


def test_undecodable_file_fails_once_after_give_up(tmp_path: Path) -> None:
    """A file that stays truncated is a failure, once, after give_up_ms (not after settle)."""
    data = encode(make_image(seed=4), ".png")
    source = hot(tmp_path, give_up_ms=400, idle_timeout_s=0.2)
    started = time.monotonic()
    write_bytes(tmp_path / "cut.png", data[: len(data) // 2])
    items = _collect(source)
    assert len(items) == 1 and isinstance(items[0], FrameFailure)
    assert "truncated png" in items[0].reason
    assert time.monotonic() - started >= 0.4


def test_writer_stalled_past_give_up_is_judged_once_as_failure(tmp_path: Path) -> None:
    """give_up_ms bounds the wait: a stall longer than that gives one failure and the file,
    completed later in place, is not judged a second time."""
    data = encode(make_image(seed=6), ".bmp")
    target = tmp_path / "late.bmp"
    source = hot(tmp_path, give_up_ms=150, idle_timeout_s=0.4)

    def write_with_long_stall() -> None:
        with target.open("wb") as fh:
            fh.write(data[:100])
            fh.flush()
            time.sleep(0.5)
            fh.write(data[100:])

    writer = _later(0.02, write_with_long_stall)
    items = _collect(source)
    writer.join()
    assert [type(i) for i in items] == [FrameFailure]


@pytest.mark.parametrize(("include_existing", "expected"), [(False, []), (True, ["old.png"])])
def test_existing_files(tmp_path: Path, include_existing: bool, expected: list[str]) -> None:
    write_image(tmp_path / "old.png")
    source = hot(tmp_path, include_existing=include_existing, idle_timeout_s=0.2)
    assert [Path(i.path or "").name for i in _collect(source)] == expected


def test_broken_file_is_a_failure_and_sidecars_are_ignored(tmp_path: Path) -> None:
    source = hot(tmp_path, idle_timeout_s=0.3)
    write_bytes(tmp_path / "noise.png", bytes(range(256)))
    write_bytes(tmp_path / "empty.png", b"")
    write_bytes(tmp_path / "meta.json", b"{}")
    write_bytes(tmp_path / "notes.txt", b"hello")
    items = sorted(_collect(source), key=lambda i: i.path or "")
    assert [type(i) for i in items] == [FrameFailure, FrameFailure]
    reasons = [i.reason for i in items if isinstance(i, FrameFailure)]
    assert "zero-byte file" in reasons[0]
    assert "not a decodable image" in reasons[1]


def test_pattern_filters(tmp_path: Path) -> None:
    source = hot(tmp_path, pattern="*.jpg", idle_timeout_s=0.2)
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.JPG")
    assert [Path(i.path or "").name for i in _collect(source)] == ["b.JPG"]


def test_close_from_another_thread_stops_it(tmp_path: Path) -> None:
    source = hot(tmp_path)  # no idle timeout: only close() ends it
    closer = _later(0.1, source.close)
    assert _collect(source) == []
    closer.join()
    assert source.state is SourceState.CLOSED
    assert source.last_error is None


def test_idle_timeout_ends_an_empty_watch(tmp_path: Path) -> None:
    source = hot(tmp_path, idle_timeout_s=0.1)
    assert _collect(source) == []
    assert source.state is SourceState.CLOSED


def test_folder_gone_fails_after_retries(tmp_path: Path) -> None:
    watched = tmp_path / "share"
    watched.mkdir()
    seen: list[SourceState] = []
    source = hot(watched, max_scan_failures=3, on_state=lambda _o, new, _w: seen.append(new))
    _later(0.05, lambda: shutil.rmtree(watched))
    assert _collect(source) == []
    assert seen == [SourceState.OPEN, SourceState.RECONNECTING, SourceState.FAILED]
    assert source.state is SourceState.FAILED
    assert "cannot list" in (source.last_error or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "missing"}, "folder not found"),
        ({"poll_ms": 0}, "poll_ms > 0"),
        ({"settle_ms": -1}, "settle_ms >= 0"),
        ({"give_up_ms": -1}, "give_up_ms >= 0"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
        ({"pattern": "a/*.png"}, "file-name glob"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"path": tmp_path, **kwargs}
    if args["path"] == "missing":
        args["path"] = tmp_path / "missing"
    with pytest.raises(SourceError, match=message):
        HotFolderSource(**args)  # type: ignore[arg-type]
