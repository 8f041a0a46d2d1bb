"""Labels set on a station's own review page, copied to the central store (the hub shows them).

The station's audit trail (review events) is followed after its own cursor file, in order,
one event at a time: a label becomes the same label centrally, recorded as reviewer
`NAME@<station_id>`; an undo becomes a central undo when the label it took back is still the
one in effect there (a later label set on the hub wins). Events whose result row has not been
forwarded yet wait for it. Labels that came from the hub (`NAME@hub`, written by
`reviews_from_hub`) are not sent back, and the hub-to-station copy skips labels whose reviewer
ends in `@<station_id>`: no ping-pong.

The cursor moves after every event, fsynced, so a crash can only leave the one event after it
in doubt; the first event of a process is therefore checked against the central trail (an
event by the same reviewer with the same label, written no earlier) before it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cellinspect.storage.errors import NothingToUndoError, ResultNotFoundError, StoreError
from cellinspect.storage.models import ResultRow, ReviewEventRow
from cellinspect.storage.records import Review, ReviewInput, ReviewLabel
from cellinspect.storage.review_undo import is_undo, label_of

if TYPE_CHECKING:
    from cellinspect.plant.forwarder import CursorFile
    from cellinspect.storage.sql_store import SqlResultStore

HUB_SUFFIX = "@hub"  # reviewer of a label copied back from the hub (Forwarder.pull_reviews)
REVIEWER_MAX = 128  # the reviewer column's length


class ReviewForwardError(RuntimeError):
    """The central store refused or could not take a station label; retried later."""


@dataclass(frozen=True)
class _Event:
    id: int
    result_pk: int
    result_id: str
    label: str  # as stored: a label, or undo[:<label>]
    defect_class: str | None
    reviewer: str
    comment: str
    previous_label: str | None
    previous_defect_class: str | None
    at: datetime


def central_reviewer(reviewer: str, station_id: str) -> str:
    """How a station's reviewer is recorded centrally: NAME@<station_id>."""
    return f"{reviewer}@{station_id}"[:REVIEWER_MAX]


def from_station(review: Review | None, station_id: str) -> bool:
    """True when the central label in effect was forwarded from this station."""
    return review is not None and review.reviewer.endswith(f"@{station_id}")


class ReviewPusher:
    """Copies one station's review events to the central store, after a cursor file."""

    def __init__(
        self,
        local: SqlResultStore,
        central: SqlResultStore,
        cursor: CursorFile,
        station_id: str,
        batch_size: int = 200,
    ) -> None:
        self.local = local
        self.central = central
        self.cursor = cursor
        self.station_id = station_id
        self.batch_size = batch_size
        self.sent = 0  # central label changes made by this process
        self._first = True  # the first event of a process may already be central (crash)

    def push_once(self, forwarded_upto: int) -> bool:
        """Forward events whose result row is central (local key <= `forwarded_upto`).

        True when a full batch went through (call again). Raises ReviewForwardError.
        """
        events = self._read(self.cursor.read())
        for event in events:
            if event.result_pk > forwarded_upto:
                return False  # its row goes first; keep the order
            if not event.reviewer.endswith(HUB_SUFFIX):
                try:
                    self._apply(event)
                except (StoreError, SQLAlchemyError) as err:
                    raise ReviewForwardError(_short(err)) from None
            self._first = False
            self.cursor.write(event.id)
        return len(events) == self.batch_size

    def backlog(self) -> int:
        """Local review events not yet forwarded (or passed over as the hub's)."""
        after = self.cursor.read()
        with Session(self.local.engine) as session:
            ids = session.scalars(select(ReviewEventRow.id).where(ReviewEventRow.id > after))
            return len(list(ids))

    def _read(self, after: int) -> list[_Event]:
        stmt = (
            select(ReviewEventRow, ResultRow.result_id)
            .join(ResultRow, ResultRow.id == ReviewEventRow.result_pk)
            .where(ReviewEventRow.id > after)
            .order_by(ReviewEventRow.id)
            .limit(self.batch_size)
        )
        with Session(self.local.engine) as session:
            return [
                _Event(
                    id=e.id,
                    result_pk=e.result_pk,
                    result_id=str(rid),
                    label=e.label,
                    defect_class=e.defect_class,
                    reviewer=e.reviewer,
                    comment=e.comment,
                    previous_label=e.previous_label,
                    previous_defect_class=e.previous_defect_class,
                    at=_aware(e.at),
                )
                for e, rid in session.execute(stmt)
            ]

    def _apply(self, event: _Event) -> None:
        reviewer = central_reviewer(event.reviewer, self.station_id)
        try:
            current = self.central.get(event.result_id).review
        except ResultNotFoundError:
            raise ReviewForwardError(
                f"result {event.result_id!r} is not in the central store yet"
            ) from None
        if self._first and self._already_central(event, reviewer):
            return
        if is_undo(event.label):
            taken_back = (event.previous_label, event.previous_defect_class)
            if current is None or not from_station(current, self.station_id):
                return  # the hub's label is in effect there: it wins over a station's undo
            if (current.label.value, current.defect_class) != taken_back:
                return
            try:
                self.central.undo_review(event.result_id, reviewer, any_reviewer=True)
            except NothingToUndoError:
                return
        else:
            self.central.set_review(
                event.result_id,
                ReviewInput(
                    label=_label(event.label),
                    reviewer=reviewer,
                    defect_class=event.defect_class,
                    comment=event.comment,
                ),
            )
        self.sent += 1

    def _already_central(self, event: _Event, reviewer: str) -> bool:
        """Whether a crash left this event applied centrally but the cursor not moved."""
        stmt = (
            select(ReviewEventRow)
            .join(ResultRow, ResultRow.id == ReviewEventRow.result_pk)
            .where(ResultRow.result_id == event.result_id, ReviewEventRow.reviewer == reviewer)
            .order_by(ReviewEventRow.id.desc())
            .limit(1)
        )
        with Session(self.central.engine) as session:
            last = session.scalar(stmt)
            if last is None or _aware(last.at) < event.at:
                return False
            if is_undo(event.label):
                return is_undo(last.label)
            return (last.label, last.defect_class) == (event.label, event.defect_class)


def _label(stored: str) -> ReviewLabel:
    label = label_of(stored)
    assert label is not None  # only undo rows leave no label
    return label


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
