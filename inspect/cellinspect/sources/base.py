"""The one protocol every frame source follows, and the lifecycle states of live sources."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from cellinspect.entities import SourceItem


class SourceState(enum.StrEnum):
    """Lifecycle of a source; live sources (camera, stream) move through all of them."""

    CREATED = "created"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"


@runtime_checkable
class FrameSource(Protocol):
    """Yields frames, or a FrameFailure for each frame it could not deliver; never skips one.

    `frames()` may be called once. `close()` is idempotent and makes `frames()` stop soon.
    """

    name: str

    @property
    def state(self) -> SourceState: ...

    def frames(self) -> Iterator[SourceItem]: ...

    def close(self) -> None: ...
