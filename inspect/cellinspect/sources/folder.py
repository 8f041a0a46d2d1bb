"""A folder of images, read once in natural name order.

The listing is taken when the source is created (so a caller can show how many files there
are); which files count is decided by `cellinspect.sources.listing` (hidden files skipped,
sidecars such as labels.csv ignored under the catch-all pattern, non-images kept so that they
come out as FrameFailures instead of vanishing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cellinspect.entities import SourceItem
from cellinspect.sources.base import SourceState
from cellinspect.sources.files import FileListSource
from cellinspect.sources.lifecycle import StateListener
from cellinspect.sources.listing import CATCH_ALL, list_folder


class FolderSource:
    """Every input file of `path` (and sub-folders when `recursive`), as a FileListSource."""

    def __init__(
        self,
        path: Path | str,
        pattern: str = CATCH_ALL,
        recursive: bool = False,
        name: str | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name or f"folder:{self.path}"
        self._files = FileListSource(
            list_folder(self.path, pattern, recursive), name=self.name, on_state=on_state
        )

    @property
    def paths(self) -> tuple[Path, ...]:
        """The files found when the source was created, in the order they will be read."""
        return self._files.paths

    @property
    def state(self) -> SourceState:
        return self._files.state

    @property
    def last_error(self) -> str | None:
        return self._files.last_error

    def frames(self) -> Iterator[SourceItem]:
        return self._files.frames()

    def close(self) -> None:
        self._files.close()
