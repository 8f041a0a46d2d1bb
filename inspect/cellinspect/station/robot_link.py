"""Pick targets of rejected parts to the robot, off the inspection path, with retries counted.

One thread owns the TCP connection (the JSON-lines protocol of :mod:`cellinspect.plc.robot`).
Each target is sent and its acknowledgement awaited up to `timeout_s`; a timeout or a lost
connection reconnects and resends up to `retries` times, then the target counts as timed
out (logged with its part id). A robot that refuses a target (out of reach, bad data)
answers at once: that is counted as refused, not retried. A full queue refuses new targets,
counted as dropped: the verdict already reached the PLC, which still rejects the part.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
from dataclasses import dataclass

from cellinspect.plc.errors import RobotError
from cellinspect.plc.robot import PickTarget, RobotClient

log = logging.getLogger(__name__)


class LinkState(enum.StrEnum):
    IDLE = "idle"  # not connected yet (nothing to send)
    CONNECTED = "connected"
    DOWN = "down"  # the last attempt failed
    CLOSED = "closed"


@dataclass(slots=True)
class RobotCounters:
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    timed_out: int = 0
    retries: int = 0
    dropped: int = 0


class RobotLink:
    """Queue in, JSON lines out; `counters` and `state` for the status line and metrics."""

    def __init__(
        self, host: str, port: int, timeout_s: float = 1.0, retries: int = 2, queue_size: int = 256
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        self.counters = RobotCounters()
        self.state = LinkState.IDLE
        self._queue: queue.Queue[PickTarget | None] = queue.Queue(maxsize=queue_size)
        self._client = RobotClient(host, port, timeout_s=timeout_s)
        self._thread = threading.Thread(target=self._loop, name="robot-link", daemon=True)

    @property
    def reconnects(self) -> int:
        """Connections made after the first one (the robot or the network dropped one)."""
        return max(0, self._client.connects - 1)

    def start(self) -> RobotLink:
        self._thread.start()
        return self

    def send(self, target: PickTarget) -> None:
        """Queue a target (never blocks the caller)."""
        try:
            self._queue.put_nowait(target)
        except queue.Full:
            self.counters.dropped += 1
            log.error("robot: queue full, pick target of part %d dropped", target.part_id)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (bounded by `timeout`), then close the connection."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("robot: queue still full at close; %d targets unsent", self._queue.qsize())
        self._thread.join(timeout)
        self._client.close()
        self.state = LinkState.CLOSED

    def _loop(self) -> None:
        while True:
            target = self._queue.get()
            if target is None:
                return
            self._deliver(target)

    def _deliver(self, target: PickTarget) -> None:
        self.counters.sent += 1  # targets, not attempts: resends count as retries
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.retries += 1
            try:
                ack = self._client.send(target)
            except RobotError as err:
                self.state = LinkState.DOWN
                log.warning(
                    "robot: part %d attempt %d/%d: %s",
                    target.part_id,
                    attempt + 1,
                    self.retries + 1,
                    err,
                )
                continue
            self.state = LinkState.CONNECTED
            if ack.ok:
                self.counters.acknowledged += 1
            else:
                self.counters.refused += 1
                log.warning("robot: part %d refused: %s", target.part_id, ack.reason)
            return
        self.counters.timed_out += 1
        log.error("robot: part %d not acknowledged after %d attempts", target.part_id, attempt + 1)
