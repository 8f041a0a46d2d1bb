"""open_source dispatch for every config type, and source_for_paths for the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from cellinspect.config import SourceConfig
from cellinspect.entities import Frame, FrameFailure
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.capture import CameraSource, StreamSource
from cellinspect.sources.chain import ChainSource
from cellinspect.sources.files import FileListSource
from cellinspect.sources.folder import FolderSource
from cellinspect.sources.hotfolder import HotFolderSource
from cellinspect.sources.registry import OPENERS, open_source, source_for_paths
from cellinspect.sources.video import VideoFileSource

from .helpers import write_bytes, write_image, write_video

ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)


def _config(data: dict[str, Any]) -> Any:
    """Validate like a recipe's `source:` section would be."""
    return ADAPTER.validate_python(data)


def test_every_config_type_has_an_opener() -> None:
    from cellinspect import config

    types = {
        cls.model_fields["type"].default
        for cls in (
            config.FilesSource,
            config.FolderSource,
            config.HotFolderSource,
            config.VideoSource,
            config.CameraSource,
            config.StreamSource,
            config.SyntheticSource,
        )
    }
    assert types == set(OPENERS)


def test_files(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / "b.png"), write_image(tmp_path / "a.png")]
    source = open_source(_config({"type": "files", "paths": [str(p) for p in paths]}))
    assert isinstance(source, FileListSource)
    assert [i.path for i in source.frames()] == [str(p) for p in paths]


def test_folder(tmp_path: Path) -> None:
    for name in ["x10.png", "x9.png", "sub/y.png"]:
        write_image(tmp_path / name)
    write_bytes(tmp_path / "notes.txt", b"")
    cfg = {"type": "folder", "path": str(tmp_path), "pattern": "*.png", "recursive": True}
    source = open_source(_config(cfg))
    assert isinstance(source, FolderSource)
    assert [Path(i.path or "").name for i in source.frames()] == ["y.png", "x9.png", "x10.png"]


def test_hot_folder(tmp_path: Path) -> None:
    cfg = {"type": "hot_folder", "path": str(tmp_path), "poll_ms": 10, "idle_timeout_s": 0.05}
    source = open_source(_config({**cfg, "give_up_ms": 1500}))
    assert isinstance(source, HotFolderSource)
    assert source._give_up_s == 1.5
    assert list(source.frames()) == []
    assert source.state is SourceState.CLOSED


def test_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 5)
    source = open_source(_config({"type": "video", "path": str(video), "every_nth": 2}))
    assert isinstance(source, VideoFileSource)
    assert [i.frame_id for i in source.frames()] == [0, 2, 4]


def test_camera_is_built_without_opening_the_device() -> None:
    source = open_source(_config({"type": "camera", "device": 7, "max_failures": 2}))
    assert isinstance(source, CameraSource)
    assert source.state is SourceState.CREATED
    assert source.name == "camera:7"


def test_stream(tmp_path: Path) -> None:
    cfg = {"type": "stream", "url": "rtsp://u:p@cam/1", "max_reconnects": 0}
    source = open_source(_config(cfg))
    assert isinstance(source, StreamSource)
    assert source.name == "stream:rtsp://u:***@cam/1"


def test_synthetic() -> None:
    source = open_source(_config({"type": "synthetic", "count": 2, "seed": 3}))
    assert isinstance(source, FrameSource)
    items = list(source.frames())
    assert len(items) == 2
    assert all(isinstance(i, Frame) for i in items)


def test_unknown_type_lists_known_ones() -> None:
    class Odd:
        type = "genicam"

    with pytest.raises(SourceError, match="unknown source type 'genicam'; known types: camera"):
        open_source(Odd())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"type": "folder", "path": "/no/such/folder"}, "folder not found: /no/such/folder"),
        ({"type": "hot_folder", "path": "/no/such/folder"}, "folder not found"),
        ({"type": "video", "path": "/no/such/v.avi"}, "video file not found: /no/such/v.avi"),
    ],
)
def test_missing_paths_are_source_errors(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(_config(cfg))


def test_files_config_with_missing_file_yields_a_failure(tmp_path: Path) -> None:
    source = open_source(_config({"type": "files", "paths": [str(tmp_path / "gone.png")]}))
    (item,) = list(source.frames())
    assert isinstance(item, FrameFailure)
    assert "file not found" in item.reason


# --------------------------------------------------------------------------- command line


def test_paths_mixed_files_and_folders_keep_order(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    write_image(folder / "p10.png")
    write_image(folder / "p2.png")
    write_bytes(folder / "labels.csv", b"name,label\n")
    first = write_image(tmp_path / "z_first.png")
    last = write_bytes(tmp_path / "last.csv", b"a,b")  # named explicitly: read, and fails
    source = source_for_paths([first, folder, last])
    items = list(source.frames())
    assert [Path(i.path or "").name for i in items] == [
        "z_first.png",
        "p2.png",
        "p10.png",
        "last.csv",
    ]
    assert [type(i) for i in items] == [Frame, Frame, Frame, FrameFailure]
    assert source.name == "files"


def test_paths_single_folder_pattern_and_recursion(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.jpg")
    write_image(tmp_path / "sub" / "c.png")
    flat = source_for_paths([tmp_path], pattern="*.png")
    deep = source_for_paths([str(tmp_path)], pattern="*.png", recursive=True)
    assert [Path(i.path or "").name for i in flat.frames()] == ["a.png"]
    assert [Path(i.path or "").name for i in deep.frames()] == ["a.png", "c.png"]
    assert flat.name == f"folder:{tmp_path}"


def test_paths_missing_path_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    with pytest.raises(SourceError, match=r"path not found: .*nope\.png"):
        source_for_paths([tmp_path / "a.png", tmp_path / "nope.png"])


@pytest.mark.parametrize("folders", [0, 1, 2])
def test_paths_that_hold_nothing(tmp_path: Path, folders: int) -> None:
    (tmp_path / "empty").mkdir()
    assert list(source_for_paths([tmp_path / "empty"] * folders).frames()) == []


def test_paths_videos_are_read_frame_by_frame_between_images(tmp_path: Path) -> None:
    first = write_image(tmp_path / "a.png")
    video = write_video(tmp_path / "parts.AVI", 3)  # the extension counts case-insensitively
    folder = tmp_path / "batch"
    write_image(folder / "b.png")
    write_video(folder / "clip.mp4", 2)  # a video found in a folder is a video too
    source = source_for_paths([first, video, folder])
    assert isinstance(source, ChainSource)
    items = list(source.frames())
    assert [(Path(i.path or "").name, i.frame_id) for i in items] == [
        ("a.png", 0),
        ("parts.AVI", 0),
        ("parts.AVI", 1),
        ("parts.AVI", 2),
        ("b.png", 0),
        ("clip.mp4", 0),
        ("clip.mp4", 1),
    ]
    assert all(isinstance(i, Frame) for i in items)
    assert [i.source for i in items][:2] == ["files", "video:parts.AVI"]
    assert source.state is SourceState.CLOSED


def test_paths_unreadable_video_is_one_failure_in_its_place(tmp_path: Path) -> None:
    bad = write_bytes(tmp_path / "broken.mkv", b"not a video at all")
    good = write_image(tmp_path / "z.png")
    items = list(source_for_paths([bad, good]).frames())
    assert [type(i) for i in items] == [FrameFailure, Frame]
    assert isinstance(items[0], FrameFailure)
    assert items[0].path == str(bad) and "cannot open" in items[0].reason


def test_paths_without_videos_stay_a_file_list(tmp_path: Path) -> None:
    assert isinstance(source_for_paths([write_image(tmp_path / "a.png")]), FileListSource)
