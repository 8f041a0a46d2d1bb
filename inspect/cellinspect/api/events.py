"""Live events: the writer thread publishes, every server-sent-events client gets a copy.

Each subscriber has a bounded queue; a client too slow to keep up loses its oldest events
(counted in `lagged`) instead of slowing the writer or growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from cellinspect.entities import InspectionResult
from cellinspect.storage.records import Review

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def to_sse(self) -> str:
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n"


class _Closed:
    """Sentinel telling a subscriber the broker shut down."""


class _Subscriber:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Event | _Closed] = asyncio.Queue(maxsize=maxsize)
        self.lagged = 0

    def offer(self, item: Event | _Closed) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.lagged += 1


class EventBroker:
    """Thread-safe publish, asyncio-side fan-out; bind it to the server's loop at startup."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subs: set[_Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.published = 0
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Callable from any thread; a no-op while no loop is bound."""
        loop = self._loop
        if loop is None or self.closed or loop.is_closed():
            return
        with self._lock:
            event = Event(next(self._ids), kind, data)
            self.published += 1
        try:
            loop.call_soon_threadsafe(self._fanout, event)
        except RuntimeError:
            log.debug("event loop closed; event %d not delivered", event.id)

    def publish_results(self, results: list[InspectionResult]) -> None:
        for r in results:
            self.publish("result", result_event(r))

    def publish_review(self, review: Review) -> None:
        self.publish(
            "review",
            {
                "id": review.result_id,
                "label": review.label.value,
                "defect_class": review.defect_class,
                "reviewer": review.reviewer,
                "revision": review.revision,
            },
        )

    def _fanout(self, item: Event | _Closed) -> None:
        for sub in list(self._subs):
            sub.offer(item)

    def close(self) -> None:
        """End every open stream (called before the server shuts down)."""
        self.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fanout, _Closed())

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event | _Closed]]:
        sub = _Subscriber(self._queue_size)
        self._subs.add(sub)
        try:
            yield sub.queue
        finally:
            self._subs.discard(sub)
            if sub.lagged:
                log.info("event subscriber lagged and lost %d events", sub.lagged)


def result_event(r: InspectionResult) -> dict[str, Any]:
    """The short form of a result that live clients get (the full one is at /results/{id})."""
    return {
        "id": r.result_id,
        "verdict": r.verdict.value,
        "defect_class": r.defect_class,
        "score": r.score,
        "captured_wall": r.captured_wall.isoformat(),
        "part_id": r.part_id,
        "station_id": r.station_id,
        "reasons": list(r.reasons),
    }
