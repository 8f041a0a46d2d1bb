"""The result store on SQLAlchemy 2: SQLite by default, any SQLAlchemy URL for a central DB."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, and_, exists, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cellinspect.entities import InspectedFrame, ModelRef
from cellinspect.storage.codec import latency_ms, result_from_json, result_to_json
from cellinspect.storage.db import write_engine
from cellinspect.storage.errors import (
    NothingToUndoError,
    ResultNotFoundError,
    ReviewConflictError,
    ReviewInvalidError,
    ReviewOwnerError,
    StoreError,
)
from cellinspect.storage.images import ImageStore
from cellinspect.storage.models import (
    ImageRow,
    ResultModelRow,
    ResultRow,
    ReviewEventRow,
    ReviewRow,
)
from cellinspect.storage.records import (
    AuditEntry,
    ExportCandidate,
    ImageKind,
    Page,
    ResultFilter,
    Review,
    ReviewInput,
    ReviewLabel,
    ReviewUndo,
    Stats,
    StoredImage,
    StoredResult,
)
from cellinspect.storage.retention import RetentionPolicy, enforce_budget, total_image_bytes
from cellinspect.storage.review_undo import label_of, replay, undo_label
from cellinspect.storage.stats import StatRow, compute_stats

log = logging.getLogger(__name__)

MAX_PAGE = 500


def _now() -> datetime:
    return datetime.now(UTC)


def encode_cursor(captured: datetime, pk: int) -> str:
    raw = json.dumps({"t": captured.isoformat(), "i": pk}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Inverse of encode_cursor; ValueError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        captured = datetime.fromisoformat(data["t"])
        pk = int(data["i"])
    except (binascii.Error, UnicodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cursor {cursor[:40]!r} is not one this API handed out") from err
    if captured.tzinfo is None:
        raise ValueError(f"cursor {cursor[:40]!r} is not one this API handed out")
    return captured, pk


def _image_record(row: ImageRow) -> StoredImage:
    return StoredImage(
        kind=ImageKind(row.kind),
        relpath=row.relpath,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        media_type=row.media_type,
    )


def _review_record(result_id: str, row: ReviewRow) -> Review:
    return Review(
        result_id=result_id,
        label=ReviewLabel(row.label),
        defect_class=row.defect_class,
        reviewer=row.reviewer,
        comment=row.comment,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _stored(row: ResultRow) -> StoredResult:
    return StoredResult(
        result=result_from_json(row.result_json),
        stored_at=row.stored_at,
        review=None if row.review is None else _review_record(row.result_id, row.review),
        images={ImageKind(i.kind): _image_record(i) for i in row.images},
    )


def _last_revision(session: Session, result_pk: int) -> int:
    """The newest audit revision of a result (0: never labelled)."""
    last = session.scalar(
        select(func.max(ReviewEventRow.revision)).where(ReviewEventRow.result_pk == result_pk)
    )
    return int(last or 0)


def _check_review(review: ReviewInput) -> None:
    if not review.reviewer.strip():
        raise ReviewInvalidError("review: 'reviewer' must not be empty")
    if review.label is ReviewLabel.DEFECT and not review.defect_class:
        raise ReviewInvalidError("review: label 'defect' needs a 'defect_class'")
    if review.label is ReviewLabel.GOOD and review.defect_class:
        raise ReviewInvalidError(
            f"review: label 'good' takes no defect_class, got {review.defect_class!r}"
        )


class SqlResultStore:
    """ResultStore over a SQLAlchemy engine plus an ImageStore; thread-safe."""

    def __init__(
        self, engine: Engine, images: ImageStore, retention: RetentionPolicy | None = None
    ) -> None:
        self.engine = engine
        self.images = images
        self.retention = retention or RetentionPolicy()
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine(engine), expire_on_commit=False)
        self._budget_lock = threading.Lock()
        self._image_bytes: int | None = None
        self._short_of_room = False  # an image was refused for the reserve: free some room

    # ------------------------------------------------------------------ writing

    def add_many(self, frames: Sequence[InspectedFrame]) -> list[str]:
        if not frames:
            return []
        written: list[StoredImage] = []
        try:
            with self._write() as session, session.begin():
                ids = [f.result.result_id for f in frames]
                known = set(
                    session.scalars(select(ResultRow.result_id).where(ResultRow.result_id.in_(ids)))
                )
                new_ids: list[str] = []
                stored_at = _now()
                for frame in frames:
                    rid = frame.result.result_id
                    if rid in known:
                        continue
                    known.add(rid)
                    row = self._row_for(frame, stored_at, written)
                    session.add(row)
                    new_ids.append(rid)
        except SQLAlchemyError as err:
            self._discard(written)
            raise StoreError(f"cannot store {len(frames)} results: {err}") from err
        except BaseException:
            self._discard(written)
            raise
        if written or self._short_of_room:
            self._account_images(sum(i.size_bytes for i in written))
        return new_ids

    def _discard(self, written: list[StoredImage]) -> None:
        """Remove files of a batch that did not commit, so no file lacks its row."""
        for img in written:
            try:
                self.images.delete(img.relpath)
            except StoreError:
                log.exception("cannot remove image %s of a failed batch", img.relpath)

    def _row_for(
        self, frame: InspectedFrame, stored_at: datetime, written: list[StoredImage]
    ) -> ResultRow:
        result = frame.result
        row = ResultRow(
            result_id=result.result_id,
            captured_wall=result.captured_wall,
            stored_at=stored_at,
            verdict=result.verdict.value,
            defect_class=result.defect_class,
            score=result.score,
            latency_ms=latency_ms(result),
            part_id=result.part_id,
            source=result.source,
            station_id=result.station_id,
            line=result.line,
            site=result.site,
            recipe_name=result.recipe_name,
            reviewed=False,
            review_label=None,
            result_json=result_to_json(result),
        )
        row.models = [_model_row(m) for m in result.models]
        if self.retention.keeps_images(result):
            not_kept: list[str] = []
            for kind, picture in (
                (ImageKind.IMAGE, frame.image),
                (ImageKind.OVERLAY, frame.overlay),
            ):
                if picture is None:
                    continue
                why = self._no_room_for_images()
                if why is None:
                    try:
                        img = self.images.write(
                            result.result_id, result.captured_wall, kind, picture
                        )
                    except StoreError as err:
                        why = str(err)
                if why is not None:
                    # The result and its metadata always win over its pictures.
                    not_kept.append(f"{kind.value} not kept: {why}")
                    log.warning("result %s: %s not kept (%s)", result.result_id, kind.value, why)
                    continue
                written.append(img)
                row.images.append(
                    ImageRow(
                        kind=kind.value,
                        relpath=img.relpath,
                        size_bytes=img.size_bytes,
                        sha256=img.sha256,
                        media_type=img.media_type,
                        created_at=stored_at,
                    )
                )
            if not_kept:
                noted = dataclasses.replace(result, reasons=(*result.reasons, *not_kept))
                row.result_json = result_to_json(noted)
        return row

    def _no_room_for_images(self) -> str | None:
        """Why no image may be written now (free space under the reserve), or None."""
        reserve = self.retention.disk_reserve_bytes
        if not reserve:
            return None
        free = self._free_bytes()
        if free is None or free >= reserve:
            return None
        self._short_of_room = True
        return (
            f"{free / 1e6:.0f} MB free on the disk of {self.images.root}, under the "
            f"{reserve / 1e6:.0f} MB reserve kept for results"
        )

    def _free_bytes(self) -> int | None:
        """Free bytes on the image folder's disk (None: cannot tell, logged)."""
        where = self.images.root
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            return shutil.disk_usage(where).free
        except OSError as err:
            log.warning("cannot read the free space of %s (%s)", where, err)
            return None

    def _account_images(self, added: int) -> None:
        """Keep the images under the budget and, with a reserve, the disk's free space above it.

        When free space falls under the reserve, the effective budget shrinks by the shortfall,
        so old images go (PASS first) and the room is left to results and the journal.
        """
        with self._budget_lock:
            if self._image_bytes is None:
                with self._read() as session:
                    self._image_bytes = total_image_bytes(session)
            else:
                self._image_bytes += added
            policy = self.retention
            reserve = policy.disk_reserve_bytes
            free = self._free_bytes() if reserve else None
            if reserve and free is not None and free < reserve:
                room = max(self._image_bytes - (reserve - free), 1)
                budget = min(policy.disk_budget_bytes or room, room)
                policy = dataclasses.replace(policy, disk_budget_bytes=budget)
            self._image_bytes = enforce_budget(self._write, self.images, policy, self._image_bytes)
            self._short_of_room = False

    def image_bytes(self) -> int:
        """Bytes of kept image files as recorded in the database."""
        with self._read() as session:
            return total_image_bytes(session)

    # ------------------------------------------------------------------ reading

    def get(self, result_id: str) -> StoredResult:
        with self._read() as session:
            row = session.scalar(select(ResultRow).where(ResultRow.result_id == result_id))
            if row is None:
                raise ResultNotFoundError(f"no result with id {result_id!r}")
            return _stored(row)

    def query(self, filters: ResultFilter, limit: int = 50, cursor: str | None = None) -> Page:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be in [1, {MAX_PAGE}], got {limit}")
        stmt = select(ResultRow).where(*_conditions(filters))
        if cursor is not None:
            at, pk = decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    ResultRow.captured_wall < at,
                    and_(ResultRow.captured_wall == at, ResultRow.id < pk),
                )
            )
        stmt = stmt.order_by(ResultRow.captured_wall.desc(), ResultRow.id.desc()).limit(limit + 1)
        with self._read() as session:
            rows = list(session.scalars(stmt))
            more = len(rows) > limit
            rows = rows[:limit]
            items = [_stored(r) for r in rows]
        next_cursor = encode_cursor(rows[-1].captured_wall, rows[-1].id) if more else None
        return Page(items=items, next_cursor=next_cursor)

    def image_file(self, result_id: str, kind: ImageKind) -> tuple[Path, StoredImage]:
        with self._read() as session:
            row = session.scalar(
                select(ImageRow)
                .join(ResultRow, ImageRow.result_pk == ResultRow.id)
                .where(ResultRow.result_id == result_id, ImageRow.kind == kind.value)
            )
            if row is None:
                if session.scalar(select(ResultRow.id).where(ResultRow.result_id == result_id)):
                    raise ResultNotFoundError(f"result {result_id!r} has no {kind.value} kept")
                raise ResultNotFoundError(f"no result with id {result_id!r}")
            record = _image_record(row)
        path = self.images.path_of(record.relpath)
        if not path.is_file():
            raise ResultNotFoundError(
                f"result {result_id!r}: the {kind.value} file is gone ({path})"
            )
        return path, record

    def defect_classes(self) -> list[str]:
        with self._read() as session:
            a = session.scalars(select(ResultRow.defect_class).distinct())
            b = session.scalars(select(ReviewRow.defect_class).distinct())
            return sorted({c for c in [*a, *b] if c})

    def stats(
        self,
        since: datetime | None,
        until: datetime | None,
        bucket_s: int = 3600,
        station_id: str | None = None,
    ) -> Stats:
        stmt = select(
            ResultRow.captured_wall,
            ResultRow.verdict,
            ResultRow.defect_class,
            ResultRow.latency_ms,
            ReviewRow.label,
            ReviewRow.defect_class,
        ).outerjoin(ReviewRow, ReviewRow.result_pk == ResultRow.id)
        stmt = stmt.where(
            *_conditions(ResultFilter(since=since, until=until, station_id=station_id))
        )
        with self._read() as session:
            rows = session.execute(stmt.execution_options(yield_per=2000))
            return compute_stats((StatRow(*r) for r in rows), since, until, bucket_s)

    def export_candidates(self, include_unreviewed: bool) -> Iterator[ExportCandidate]:
        stmt = select(ResultRow).order_by(ResultRow.captured_wall, ResultRow.id)
        if not include_unreviewed:
            stmt = stmt.where(ResultRow.reviewed.is_(True))
        with self._read() as session:
            for row in session.scalars(stmt.execution_options(yield_per=200)):
                stored = _stored(row)
                yield ExportCandidate(
                    result=stored.result,
                    review=stored.review,
                    image=stored.images.get(ImageKind.IMAGE),
                )

    # ------------------------------------------------------------------ reviews

    def set_review(self, result_id: str, review: ReviewInput) -> Review:
        _check_review(review)
        now = _now()
        with self._write() as session, session.begin():
            row = session.scalar(select(ResultRow).where(ResultRow.result_id == result_id))
            if row is None:
                raise ResultNotFoundError(f"no result with id {result_id!r}")
            current = row.review
            revision = _last_revision(session, row.id) + 1  # an undo may have left no label
            if review.expected_revision is not None and review.expected_revision != revision - 1:
                raise ReviewConflictError(
                    f"result {result_id!r}: review is at revision {revision - 1}, "
                    f"the change was based on revision {review.expected_revision}"
                )
            session.add(
                ReviewEventRow(
                    result_pk=row.id,
                    revision=revision,
                    label=review.label.value,
                    defect_class=review.defect_class,
                    reviewer=review.reviewer,
                    comment=review.comment,
                    previous_label=None if current is None else current.label,
                    previous_defect_class=None if current is None else current.defect_class,
                    at=now,
                )
            )
            if current is None:
                current = ReviewRow(result_pk=row.id, created_at=now)
                row.review = current
            current.label = review.label.value
            current.defect_class = review.defect_class
            current.reviewer = review.reviewer
            current.comment = review.comment
            current.revision = revision
            current.updated_at = now
            row.reviewed = True
            row.review_label = review.label.value
            session.flush()
            return _review_record(result_id, current)

    def undo_review(
        self,
        result_id: str,
        by: str,
        *,
        any_reviewer: bool = False,
        expected_revision: int | None = None,
    ) -> ReviewUndo:
        now = _now()
        with self._write() as session, session.begin():
            row = session.scalar(select(ResultRow).where(ResultRow.result_id == result_id))
            if row is None:
                raise ResultNotFoundError(f"no result with id {result_id!r}")
            events = list(
                session.scalars(select(ReviewEventRow).where(ReviewEventRow.result_pk == row.id))
            )
            last = max((e.revision for e in events), default=0)
            if expected_revision is not None and expected_revision != last:
                raise ReviewConflictError(
                    f"result {result_id!r}: review is at revision {last}, "
                    f"the undo was based on revision {expected_revision}"
                )
            stack = replay(events).stack
            if not stack:
                raise NothingToUndoError(f"result {result_id!r} has no label to undo")
            undone = stack[-1]
            if undone.reviewer != by and not any_reviewer:
                raise ReviewOwnerError(
                    f"result {result_id!r}: the label in effect (revision {undone.revision}) "
                    f"is {undone.reviewer!r}'s; only they or an admin may undo it"
                )
            restored = stack[-2] if len(stack) > 1 else None
            session.add(
                ReviewEventRow(
                    result_pk=row.id,
                    revision=last + 1,
                    label=undo_label(None if restored is None else label_of(restored.label)),
                    defect_class=None if restored is None else restored.defect_class,
                    reviewer=by,
                    comment=f"undo of revision {undone.revision}",
                    previous_label=undone.label,
                    previous_defect_class=undone.defect_class,
                    at=now,
                )
            )
            current = row.review
            if restored is None:
                if current is not None:
                    session.delete(current)
                row.review = None
                row.reviewed = False
                row.review_label = None
                session.flush()
                return ReviewUndo(result_id, undone.revision, last + 1, None)
            if current is None:  # not reachable while reviews and the trail agree
                current = ReviewRow(result_pk=row.id, created_at=restored.at)
                row.review = current
            current.label = restored.label
            current.defect_class = restored.defect_class
            current.reviewer = restored.reviewer
            current.comment = restored.comment
            current.revision = last + 1
            current.updated_at = now
            row.reviewed = True
            row.review_label = restored.label
            session.flush()
            review = _review_record(result_id, current)
            return ReviewUndo(result_id, undone.revision, last + 1, review)

    def audit_trail(self, result_id: str) -> list[AuditEntry]:
        with self._read() as session:
            pk = session.scalar(select(ResultRow.id).where(ResultRow.result_id == result_id))
            if pk is None:
                raise ResultNotFoundError(f"no result with id {result_id!r}")
            events = list(
                session.scalars(
                    select(ReviewEventRow)
                    .where(ReviewEventRow.result_pk == pk)
                    .order_by(ReviewEventRow.revision)
                )
            )
            undone_by = replay(events).undone_by
            return [
                AuditEntry(
                    result_id=result_id,
                    revision=e.revision,
                    label=label_of(e.label),
                    defect_class=e.defect_class,
                    reviewer=e.reviewer,
                    comment=e.comment,
                    at=e.at,
                    previous_label=None
                    if e.previous_label is None
                    else ReviewLabel(e.previous_label),
                    previous_defect_class=e.previous_defect_class,
                    undoes=undone_by.get(e.revision),
                )
                for e in events
            ]

    # ------------------------------------------------------------------ lifecycle

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as err:
            raise StoreError(f"database unreachable: {err}") from err

    def close(self) -> None:
        self.engine.dispose()


def _model_row(model: ModelRef) -> ResultModelRow:
    return ResultModelRow(name=model.name, version=model.version)


def _conditions(f: ResultFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.verdicts:
        conds.append(ResultRow.verdict.in_([v.value for v in f.verdicts]))
    if f.since is not None:
        conds.append(ResultRow.captured_wall >= f.since)
    if f.until is not None:
        conds.append(ResultRow.captured_wall < f.until)
    if f.defect_classes:
        conds.append(ResultRow.defect_class.in_(list(f.defect_classes)))
    if f.reviewed is not None:
        conds.append(ResultRow.reviewed.is_(f.reviewed))
    if f.label is not None:
        conds.append(ResultRow.review_label == f.label.value)
    if f.part_id is not None:
        conds.append(ResultRow.part_id == f.part_id)
    if f.source is not None:
        conds.append(ResultRow.source == f.source)
    if f.station_id is not None:
        conds.append(ResultRow.station_id == f.station_id)
    if f.model_version is not None:
        name, sep, version = f.model_version.rpartition("@")
        match = ResultModelRow.version == version
        if sep:
            match = and_(match, ResultModelRow.name == name)
        conds.append(exists().where(ResultModelRow.result_pk == ResultRow.id, match))
    return conds
