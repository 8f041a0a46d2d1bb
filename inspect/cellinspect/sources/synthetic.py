"""A frame source that renders sample flanges on the fly: a station demo without a camera.

The parts are planned up front (so `labels` gives the truth for every frame before any is
rendered) and rendered one at a time as `frames()` is consumed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from cellinspect import config
from cellinspect.datagen.part import DEFECT_CLASSES, DatagenError, PartSpec, plan_parts
from cellinspect.datagen.render import render_part
from cellinspect.entities import Frame, SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.base import SourceState


class SyntheticSource:
    """Yields `count` rendered parts in index order; frame_id is the part's index."""

    def __init__(
        self,
        count: int,
        seed: int = 0,
        defect_rate: float = 0.3,
        classes: Sequence[str] = DEFECT_CLASSES,
    ) -> None:
        try:
            self._specs = tuple(plan_parts(count, seed, defect_rate, classes))
        except DatagenError as err:
            raise SourceError(f"synthetic:seed={seed}: cannot plan parts: {err}") from err
        self.name = f"synthetic:seed={seed}"
        self._state = SourceState.CREATED
        self._stop = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def labels(self) -> list[str]:
        """Ground-truth label of every frame, in frame order ("good" or a defect class)."""
        return [spec.label for spec in self._specs]

    @property
    def specs(self) -> tuple[PartSpec, ...]:
        """Full ground truth (pose, dimensions) of every frame, in frame order."""
        return self._specs

    def frames(self) -> Iterator[SourceItem]:
        """Render and yield the parts; stops early once close() is called."""
        with self._lock:
            if self._started:
                raise SourceError(f"{self.name}: frames() may be called only once")
            self._started = True
            if self._state is SourceState.CREATED:
                self._state = SourceState.OPEN
        return self._generate()

    def _generate(self) -> Iterator[SourceItem]:
        try:
            for spec in self._specs:
                if self._stop.is_set():
                    return
                image = render_part(spec)
                yield Frame(image=image, frame_id=spec.index, source=self.name)
        finally:
            self._state = SourceState.CLOSED

    def close(self) -> None:
        """Stop the frame stream soon (before the next part); safe to call more than once."""
        self._stop.set()
        self._state = SourceState.CLOSED


def open_synthetic(cfg: config.SyntheticSource) -> SyntheticSource:
    """Build the source a recipe's `source: {type: synthetic, ...}` describes."""
    return SyntheticSource(count=cfg.count, seed=cfg.seed, defect_rate=cfg.defect_rate)
