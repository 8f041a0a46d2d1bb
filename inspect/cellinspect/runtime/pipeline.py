"""The station loop: a reader thread feeds a bounded queue, the inspector drains it.

Decoding (in OpenCV, outside the GIL) overlaps with inference. For finite sources (files,
folders, video) a full queue makes the reader wait: nothing is dropped. For live sources a
full queue drops the oldest frame, and every drop is counted and turned into a fail-safe result
so the part it belonged to is never silently lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cellinspect.entities import Frame, FrameFailure, InspectedFrame, SourceItem, Verdict
from cellinspect.runtime.inspector import Inspector
from cellinspect.sources.base import FrameSource

log = logging.getLogger(__name__)

_END = object()


@dataclass
class PipelineStats:
    """What the summary table and the bench print."""

    count: int = 0
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))
    errors: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, inspected: InspectedFrame) -> None:
        result = inspected.result
        self.count += 1
        self.verdicts[result.verdict] += 1
        if result.error is not None:
            self.errors += 1
        total = result.timings_ms.get("total")
        if total is not None:
            self.latencies_ms.append(total)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(np.asarray(self.latencies_ms), q))

    @property
    def throughput(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0


def run_pipeline(
    source: FrameSource,
    inspector: Inspector,
    on_result: Callable[[InspectedFrame], None],
    stop: threading.Event | None = None,
    queue_size: int = 8,
    drop_when_full: bool = False,
    batch_size: int | None = None,
) -> PipelineStats:
    """Inspect every item the source yields until it ends or `stop` is set.

    Up to `batch_size` frames that are already waiting are judged together (one session.run
    per model); the loop never waits to fill a batch, so latency does not grow when the line
    is slow. The default is the recipe's `runtime.batch_size`.
    """
    batch_size = batch_size or inspector.recipe.runtime.batch_size
    stop = stop or threading.Event()
    items: queue.Queue[object] = queue.Queue(maxsize=queue_size)
    stats = PipelineStats()
    dropped_items: list[FrameFailure] = []
    reader_error: list[BaseException] = []

    def put(item: SourceItem) -> None:
        while not stop.is_set():
            if not drop_when_full:
                try:
                    items.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            try:
                items.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = items.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(old, Frame | FrameFailure):
                    dropped_items.append(_as_drop(old))

    def read() -> None:
        try:
            for item in source.frames():
                if stop.is_set():
                    break
                put(item)
        except BaseException as err:  # the reason ends up in the summary, not lost
            log.exception("source %s failed", source.name)
            reader_error.append(err)
        finally:
            while True:
                try:
                    items.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    reader = threading.Thread(target=read, name=f"source:{source.name}", daemon=True)
    start = time.perf_counter()
    reader.start()
    try:
        ended = False
        while not ended:
            try:
                first = items.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set() and not reader.is_alive():
                    break
                continue
            if first is _END:
                break
            batch: list[SourceItem] = [first]  # type: ignore[list-item]
            while len(batch) < batch_size:  # take what is already waiting, never wait for more
                try:
                    extra = items.get_nowait()
                except queue.Empty:
                    break
                if extra is _END:
                    ended = True
                    break
                batch.append(extra)  # type: ignore[arg-type]
            for inspected in inspector.inspect_batch(batch):
                stats.add(inspected)
                on_result(inspected)
            while dropped_items:
                drop = inspector.inspect(dropped_items.pop(0))
                stats.dropped += 1
                stats.add(drop)
                on_result(drop)
    finally:
        stop.set()
        source.close()
        reader.join(timeout=5)
        stats.wall_s = time.perf_counter() - start
    if reader_error:
        log.error("source %s stopped early: %s", source.name, reader_error[0])
    return stats


def _as_drop(item: Frame | FrameFailure) -> FrameFailure:
    """A dropped frame becomes a FrameFailure so it still yields a (fail-safe) result."""
    return FrameFailure.instead_of(item, "dropped: station queue full")
