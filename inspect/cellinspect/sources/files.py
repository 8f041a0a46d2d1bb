"""Image files in a given order: the simplest source, and the one the others build on.

Each path gives exactly one item: a Frame, or a FrameFailure whose reason names the file and
what was wrong with it. `frames()` never raises for a bad file and never skips one, so the
count of items out always equals the count of paths in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import FrameReadError
from cellinspect.sources.base import SourceState
from cellinspect.sources.decode import decode_image_file
from cellinspect.sources.lifecycle import Lifecycle, LifecycleSource, StateListener

log = logging.getLogger(__name__)


def read_file_item(path: Path, frame_id: int, source: str) -> SourceItem:
    """Read one file into a Frame, or a FrameFailure saying why it could not be."""
    captured_mono, captured_wall = time.monotonic(), datetime.now(UTC)
    try:
        image = decode_image_file(path)
        return Frame(
            image=image,
            frame_id=frame_id,
            source=source,
            captured_mono=captured_mono,
            captured_wall=captured_wall,
            path=str(path),
        )
    except FrameReadError as err:
        reason = str(err)
    except Exception as err:  # a decoder bug must not end the source: it is one bad frame
        log.exception("source %s: unexpected error reading %s", source, path)
        reason = f"{path}: unexpected {type(err).__name__} while reading: {err}"
    log.warning("source %s: frame %d failed: %s", source, frame_id, reason)
    return FrameFailure(
        frame_id=frame_id,
        source=source,
        reason=reason,
        captured_mono=captured_mono,
        captured_wall=captured_wall,
        path=str(path),
    )


class FileListSource(LifecycleSource):
    """Yields one item per path, in the order given; frame ids count from 0."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        name: str = "files",
        on_state: StateListener | None = None,
    ) -> None:
        self.name = name
        self._paths = tuple(Path(p) for p in paths)
        self._life = Lifecycle(name, on_state)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The files this source will read, in order."""
        return self._paths

    def _run(self) -> Iterator[SourceItem]:
        if not self._life.move(SourceState.OPEN):
            return
        try:
            for frame_id, path in enumerate(self._paths):
                if self._life.stopping:
                    return
                yield read_file_item(path, frame_id, self.name)
        finally:
            self._life.move(SourceState.CLOSED, "end of file list")
