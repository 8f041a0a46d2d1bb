"""Build a frame source from its recipe config, or from paths given on the command line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from cellinspect import config as cfg_schema
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource
from cellinspect.sources.capture import CameraSource, StreamSource
from cellinspect.sources.chain import ChainSource, Segment
from cellinspect.sources.files import FileListSource
from cellinspect.sources.folder import FolderSource
from cellinspect.sources.hotfolder import HotFolderSource
from cellinspect.sources.listing import CATCH_ALL, list_folder
from cellinspect.sources.video import VideoFileSource, is_video_path


def _files(cfg: cfg_schema.FilesSource) -> FrameSource:
    return FileListSource(cfg.paths)


def _folder(cfg: cfg_schema.FolderSource) -> FrameSource:
    return FolderSource(cfg.path, pattern=cfg.pattern, recursive=cfg.recursive)


def _hot_folder(cfg: cfg_schema.HotFolderSource) -> FrameSource:
    return HotFolderSource(
        cfg.path,
        pattern=cfg.pattern,
        settle_ms=cfg.settle_ms,
        give_up_ms=cfg.give_up_ms,
        poll_ms=cfg.poll_ms,
        include_existing=cfg.include_existing,
        idle_timeout_s=cfg.idle_timeout_s,
    )


def _video(cfg: cfg_schema.VideoSource) -> FrameSource:
    return VideoFileSource(cfg.path, every_nth=cfg.every_nth)


def _camera(cfg: cfg_schema.CameraSource) -> FrameSource:
    return CameraSource(
        cfg.device, width=cfg.width, height=cfg.height, max_failures=cfg.max_failures
    )


def _stream(cfg: cfg_schema.StreamSource) -> FrameSource:
    return StreamSource(
        cfg.url,
        reconnect_initial_s=cfg.reconnect_initial_s,
        reconnect_max_s=cfg.reconnect_max_s,
        max_reconnects=cfg.max_reconnects,
    )


def _synthetic(cfg: cfg_schema.SyntheticSource) -> FrameSource:
    # Imported here: rendering parts pulls in the data generator, which other sources never need.
    from cellinspect.sources.synthetic import open_synthetic

    return open_synthetic(cfg)


OPENERS: dict[str, Callable[[Any], FrameSource]] = {
    "files": _files,
    "folder": _folder,
    "hot_folder": _hot_folder,
    "video": _video,
    "camera": _camera,
    "stream": _stream,
    "synthetic": _synthetic,
}
"""Source config `type` -> function that builds the source from that config."""


def open_source(cfg: cfg_schema.SourceConfig) -> FrameSource:
    """The source a recipe's `source:` section describes; SourceError if it cannot be made."""
    kind = getattr(cfg, "type", None)
    opener = OPENERS.get(str(kind))
    if opener is None:
        known = ", ".join(sorted(OPENERS))
        raise SourceError(f"unknown source type {kind!r}; known types: {known}")
    return opener(cfg)


def source_for_paths(
    paths: Sequence[Path | str], pattern: str = CATCH_ALL, recursive: bool = False
) -> FrameSource:
    """Files and folders from the command line, in the order given; folders expand sorted.

    `pattern` and `recursive` apply to folders only: a file named explicitly is always read
    (a non-image becomes a FrameFailure). A path that does not exist is a SourceError.
    A video file (by extension, see `video.VIDEO_SUFFIXES`; also one found in a folder) is read
    frame by frame; a video OpenCV cannot open becomes one FrameFailure. Without videos this is
    a FileListSource; with them a ChainSource of image runs and videos, in order.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(list_folder(path, pattern, recursive))
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise SourceError(f"path not found: {path}")
    single_folder = len(paths) == 1 and Path(paths[0]).is_dir()
    name = f"folder:{Path(paths[0])}" if single_folder else "files"
    if not any(is_video_path(p) for p in files):
        return FileListSource(files, name=name)
    return ChainSource(_segments(files, name), name=name)


def _segments(files: Sequence[Path], name: str) -> list[Segment]:
    """Runs of consecutive images as one FileListSource each, every video as its own source."""
    segments: list[Segment] = []
    images: list[Path] = []

    def flush() -> None:
        if images:
            run = tuple(images)
            segments.append(Segment(lambda: FileListSource(run, name=name), str(run[0])))
            images.clear()

    for path in files:
        if is_video_path(path):
            flush()
            segments.append(Segment(partial(VideoFileSource, path), str(path)))
        else:
            images.append(path)
    flush()
    return segments
