"""The MQTT outbox: messages wait on disk, in order, until the broker acknowledged them.

Why: the station judges and records parts with the plant network down, and the plant must
still see every result and alarm. A message is written here in the result path (after the
journal append, before any publish), so a broker outage, a station restart or a kill -9
loses nothing; the publisher deletes a row only after its PUBACK. Rows leave in `seq` order.

SQLite in WAL mode with synchronous=NORMAL: a commit is in the OS's page cache when `add`
returns (it survives kill -9), without an fsync on the job path; the journal, which is
fsynced, remains the record of the verdict itself.

Acknowledged rows are kept (marked sent) for the last KEEP_SENT messages: at a start the
station offers again every result its journal still holds (a kill -9 can fall between the
journal and the outbox), and an id already here, sent or not, is not queued twice.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (sent, seq);
"""
KEEP_SENT = 20000  # acknowledged ids remembered, so a journal recovery does not send twice


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    topic: str
    payload: str
    message_id: str


class MqttOutbox:
    """A thread-safe durable FIFO of messages keyed by a unique message id."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.added = 0
        self.sent = 0
        self._left: int | None = None  # the backlog at close (the final status reads it)

    def add(self, topic: str, payload: str, message_id: str) -> bool:
        """Queue a message; False when that id is already queued (a replayed result)."""
        with self._lock:
            # Looked up first: an ignored INSERT would still use up a sequence number.
            seen = "SELECT 1 FROM outbox WHERE message_id = ?"
            if self._db.execute(seen, (message_id,)).fetchone() is not None:
                return False
            self._db.execute(
                "INSERT INTO outbox (topic, payload, message_id) VALUES (?, ?, ?)",
                (topic, payload, message_id),
            )
            self.added += 1
            return True

    def peek(self, limit: int) -> list[OutboxMessage]:
        """The oldest `limit` messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, message_id FROM outbox WHERE sent = 0 "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def done(self, seqs: list[int]) -> None:
        """These messages were acknowledged by the broker: they are not sent again."""
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE outbox SET sent = 1 WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute(
                "DELETE FROM outbox WHERE sent = 1 AND seq <= ?", (max(seqs) - KEEP_SENT,)
            )
            self._db.execute("COMMIT")
            self.sent += len(seqs)

    @property
    def backlog(self) -> int:
        """Messages waiting for the broker."""
        with self._lock:
            if self._left is not None:
                return self._left
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent = 0").fetchone()
        return int(count)

    def close(self) -> None:
        left = self.backlog
        with self._lock:
            self._left = left
            self._db.close()
