"""Store-and-forward: ship a station's stored results to the central store, images to the hub.

The station's own store stays the source of truth; this thread only copies. It reads local
rows in insertion order (the writer's order, which is the journal's) after a cursor kept in
data_dir, inserts them into the central database (`add_many` skips result ids it already
holds: an idempotent upsert), then PUTs each kept image to the hub content-addressed by its
sha256 (the hub checks the hash and skips what it holds). Only when both succeeded does the
cursor move on, fsynced. A crash between the two steps resends a batch the central side
already has, which changes nothing there: exactly once. A link down for hours is a backlog
(rows after the cursor), retried with back-off and logged once per outage. Labels set on the
station's review page follow their rows (plant/review_forward.py, a cursor of their own);
labels set on the hub can flow back (`reviews_from_hub`). With an S3 target (`forward.s3`)
images go to the bucket instead of the hub, and the central row records where each one is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cellinspect.entities import InspectedFrame
from cellinspect.errors import ConfigError
from cellinspect.plant.hub_images import ImageRejectedError, link_image
from cellinspect.plant.review_forward import ReviewForwardError, ReviewPusher, from_station
from cellinspect.plant.s3_images import S3Error, S3ImageTarget, target_from
from cellinspect.storage.codec import result_from_json
from cellinspect.storage.db import make_engine
from cellinspect.storage.errors import ResultNotFoundError, StoreError
from cellinspect.storage.images import ImageStore
from cellinspect.storage.models import ResultRow, ReviewEventRow
from cellinspect.storage.records import ImageKind, ReviewInput
from cellinspect.storage.sql_store import SqlResultStore

if TYPE_CHECKING:
    from cellinspect.station.config import ForwardConfig

log = logging.getLogger(__name__)

CURSOR_FILE = "forward.cursor"
REVIEW_CURSOR_FILE = "forward.reviews.cursor"  # last central review event copied back
STATION_REVIEW_CURSOR_FILE = "forward.station-reviews.cursor"  # last local event sent central
MAX_BACKOFF_S = 60.0
HTTP_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = "10"


class ForwardError(RuntimeError):
    """One forwarding attempt failed (central database or hub); retried later."""


@dataclass(frozen=True)
class ForwardStats:
    """What the forwarder has done and owes, for status, metrics and tests."""

    state: str  # "ok", "failing" or "stopped"
    forwarded: int  # rows shipped by this process (resends of a batch count again)
    images_sent: int  # images the hub accepted, or objects put to S3 (not those it held)
    reviews_sent: int  # station labels (and undos) applied centrally by this process
    reviews_received: int  # hub labels copied into the station's store by this process
    backlog: int  # local rows not yet forwarded
    lag_s: float | None  # age of the oldest unforwarded row (capture time), None: no backlog
    last_error: str | None


@dataclass(frozen=True)
class _Image:
    kind: str
    path: Path
    sha256: str
    media_type: str


def central_engine_url(url: str) -> str:
    """The central URL with a bounded connect timeout for PostgreSQL (a dead link must not hang)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": PG_CONNECT_TIMEOUT_S})
    return parsed.render_as_string(hide_password=False)


class CursorFile:
    """The local primary key of the last forwarded row, replaced atomically and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError as err:
            raise ConfigError(f"{self.path}: not a forwarding cursor ({text[:40]!r})") from err

    def write(self, value: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-cursor-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{value}\n")
                fh.flush()
                os.fsync(fh.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Forwarder:
    """A background thread copying local results to a central store and images to a hub."""

    def __init__(
        self,
        local: SqlResultStore,
        central_url: str,
        state_dir: Path,
        *,
        hub_url: str | None = None,
        token: str | None = None,
        batch_size: int = 200,
        interval_s: float = 2.0,
        reviews_from_hub: str | None = None,
        reviews_to_hub: str | None = None,
        s3: S3ImageTarget | None = None,
    ) -> None:
        """`reviews_from_hub`: this station's id, to copy labels set centrally back to it;
        `reviews_to_hub`: this station's id, to send labels set here to the central store;
        `s3`: put images there (and link them in the central store) instead of to the hub."""
        self.local = local
        self.central_display = make_url(central_url).render_as_string(hide_password=True)
        engine = make_engine(central_engine_url(central_url))
        # No image is written through this store: images go to the hub over HTTP.
        self.central = SqlResultStore(engine, ImageStore(state_dir / "central-unused"))
        self.cursor = CursorFile(state_dir / CURSOR_FILE)
        self.review_cursor = CursorFile(state_dir / REVIEW_CURSOR_FILE)
        self.reviews_from_hub = reviews_from_hub
        self.review_pusher = (
            None
            if reviews_to_hub is None
            else ReviewPusher(
                local,
                self.central,
                CursorFile(state_dir / STATION_REVIEW_CURSOR_FILE),
                reviews_to_hub,
                batch_size,
            )
        )
        self.hub_url = hub_url.rstrip("/") if hub_url else None
        self.s3 = s3
        self._token = token
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._forwarded = 0
        self._images = 0
        self._reviews_received = 0
        self._error: str | None = None
        self._backlog = 0
        self._lag: float | None = None
        self._passes = 0  # forwarding passes finished, with or without an error

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Forwarder:
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0, drain_s: float = 5.0) -> None:
        """Stop; with the link up, first give it `drain_s` to ship what the writer just stored."""
        if self._thread is not None and self._thread.is_alive() and drain_s > 0:
            self._drain(drain_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.central.close()

    def _drain(self, drain_s: float) -> None:
        deadline = time.monotonic() + drain_s
        with self._lock:
            start = self._passes
        self.poke()
        while time.monotonic() < deadline:
            with self._lock:
                done = self._passes > start and self._error is None and self._backlog == 0
                failing = self._passes > start and self._error is not None
            if done or failing:
                return
            time.sleep(0.05)

    def poke(self) -> None:
        """Forward now instead of after the interval (new rows, a test)."""
        self._wake.set()

    @property
    def stats(self) -> ForwardStats:
        with self._lock:
            stopped = self._stop.is_set()
            return ForwardStats(
                state="stopped" if stopped else ("failing" if self._error else "ok"),
                forwarded=self._forwarded,
                images_sent=self._images,
                reviews_sent=0 if self.review_pusher is None else self.review_pusher.sent,
                reviews_received=self._reviews_received,
                backlog=self._backlog,
                lag_s=self._lag,
                last_error=self._error,
            )

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.is_set():
            try:
                while self.forward_once() and not self._stop.is_set():
                    pass  # a full batch: more may wait
                while self.push_reviews() and not self._stop.is_set():
                    pass
                while self.reviews_from_hub and self.pull_reviews() and not self._stop.is_set():
                    pass
                self._recovered()
                with self._lock:
                    self._passes += 1
                delay = self.interval_s
            except (ForwardError, ReviewForwardError, StoreError) as err:
                self._failed(str(err))
                with self._lock:
                    self._passes += 1
                delay = min(max(delay * 2, self.interval_s), MAX_BACKOFF_S)
            except Exception as err:  # a bug must not end forwarding for the station's life
                log.exception("forwarder: unexpected error")
                self._failed(f"unexpected error: {type(err).__name__}")
                delay = MAX_BACKOFF_S
            self._wake.wait(delay)
            self._wake.clear()

    def _failed(self, why: str) -> None:
        with self._lock:
            first = self._error is None
            self._error = why
        self._measure_backlog()
        if first:  # once per outage; the back-off keeps retrying quietly
            log.warning(
                "forwarder: cannot forward to %s (%s); results wait here, retrying",
                self.central_display,
                why,
            )

    def _recovered(self) -> None:
        with self._lock:
            was = self._error
            self._error = None
        if was is not None:
            log.warning("forwarder: forwarding to %s again", self.central_display)

    # ------------------------------------------------------------------ one step

    def forward_once(self) -> bool:
        """Forward one batch; True when it was full (call again). Raises on any failure."""
        after = self.cursor.read()
        rows = self._read_batch(after)
        if rows:
            frames = [InspectedFrame(result_from_json(row.result_json)) for row, _ in rows]
            try:
                self.central.add_many(frames)
            except StoreError as err:
                raise ForwardError(_short(err)) from None
            for row, images in rows:
                for image in images:
                    self._ship(row.result_id, image)
            self.cursor.write(rows[-1][0].id)
            with self._lock:
                self._forwarded += len(rows)
        self._measure_backlog()
        return len(rows) == self.batch_size

    def push_reviews(self) -> bool:
        """Send the station's own labels whose rows are central; True: a full batch went."""
        if self.review_pusher is None:
            return False
        return self.review_pusher.push_once(self.cursor.read())

    def pull_reviews(self) -> bool:
        """Copy labels set centrally on this station's results back to its store.

        Follows the central audit trail (review events) after a cursor; for each result
        touched, the central label in effect becomes the station's, unless it already is or
        was forwarded from this station (reviewer NAME@<station_id>: no ping-pong). An undo
        on the hub that leaves no label is not copied. True when the batch was full.
        """
        assert self.reviews_from_hub is not None
        after = self.review_cursor.read()
        stmt = (
            select(ReviewEventRow.id, ResultRow.result_id)
            .join(ResultRow, ResultRow.id == ReviewEventRow.result_pk)
            .where(ResultRow.station_id == self.reviews_from_hub, ReviewEventRow.id > after)
            .order_by(ReviewEventRow.id)
            .limit(self.batch_size)
        )
        try:
            with Session(self.central.engine) as session:
                events = [(int(e), str(r)) for e, r in session.execute(stmt)]
            for result_id in dict.fromkeys(r for _, r in events):
                central = self.central.get(result_id).review
                if central is None or from_station(central, self.reviews_from_hub):
                    continue
                try:
                    local = self.local.get(result_id).review
                except ResultNotFoundError:
                    continue
                same = local is not None and (local.label, local.defect_class) == (
                    central.label,
                    central.defect_class,
                )
                if not same:
                    self.local.set_review(
                        result_id,
                        ReviewInput(
                            label=central.label,
                            reviewer=f"{central.reviewer}@hub"[:128],
                            defect_class=central.defect_class,
                            comment=central.comment,
                        ),
                    )
                    with self._lock:
                        self._reviews_received += 1
        except SQLAlchemyError as err:
            raise ForwardError(_short(err)) from None
        if events:
            self.review_cursor.write(events[-1][0])
        return len(events) == self.batch_size

    def _read_batch(self, after: int) -> list[tuple[ResultRow, list[_Image]]]:
        stmt = (select(ResultRow).where(ResultRow.id > after).order_by(ResultRow.id)).limit(
            self.batch_size
        )
        out: list[tuple[ResultRow, list[_Image]]] = []
        with Session(self.local.engine) as session:
            for row in session.scalars(stmt):
                images = [
                    _Image(i.kind, self.local.images.path_of(i.relpath), i.sha256, i.media_type)
                    for i in row.images
                ]
                session.expunge(row)
                out.append((row, images))
        return out

    def _measure_backlog(self) -> None:
        after = self.cursor.read()
        with Session(self.local.engine) as session:
            count = session.scalar(select(func.count()).where(ResultRow.id > after)) or 0
            oldest = (
                session.scalar(
                    select(func.min(ResultRow.captured_wall)).where(ResultRow.id > after)
                )
                if count
                else None
            )
        lag = None
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            lag = max((datetime.now(UTC) - oldest).total_seconds(), 0.0)
        with self._lock:
            self._backlog = int(count)
            self._lag = lag

    def _ship(self, result_id: str, image: _Image) -> None:
        """Send one image to S3 or the hub; a file gone locally (retention) is skipped, logged."""
        if self.hub_url is None and self.s3 is None:
            return
        try:
            body = image.path.read_bytes()
        except FileNotFoundError:
            log.warning("forwarder: %s %s is gone locally, not shipped", result_id, image.kind)
            return
        except OSError as err:
            raise ForwardError(f"cannot read {image.path}: {err}") from None
        if self.s3 is not None:
            self._ship_s3(self.s3, result_id, image, body)
        else:
            self._ship_hub(result_id, image, body)

    def _ship_s3(self, s3: S3ImageTarget, result_id: str, image: _Image, body: bytes) -> None:
        """Put the object (unless its content is there), then link it to the central row."""
        try:
            path, uploaded = s3.put(image.sha256, image.media_type, body)
        except S3Error as err:
            raise ForwardError(str(err)) from None
        try:
            link_image(
                self.central,
                result_id,
                ImageKind(image.kind),
                path,
                len(body),
                image.sha256,
                image.media_type,
            )
        except ImageRejectedError as err:
            raise ForwardError(f"central store refused {result_id} {image.kind}: {err}") from None
        except SQLAlchemyError as err:
            raise ForwardError(_short(err)) from None
        if uploaded:
            with self._lock:
                self._images += 1

    def _ship_hub(self, result_id: str, image: _Image, body: bytes) -> None:
        """PUT one image to the hub, content-addressed; the hub skips what it holds."""
        assert self.hub_url is not None
        query = urllib.parse.urlencode({"result_id": result_id, "kind": image.kind})
        request = urllib.request.Request(
            f"{self.hub_url}/hub/images/{image.sha256}?{query}",
            data=body,
            method="PUT",
            headers={"Content-Type": image.media_type},
        )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as reply:
                reply.read()
        except urllib.error.HTTPError as err:
            raise ForwardError(f"hub refused {result_id} {image.kind}: HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ForwardError(f"hub {self.hub_url} unreachable: {reason}") from None
        with self._lock:
            self._images += 1


def _secret(env: str, file: Path | None, what: str) -> str | None:
    """A secret from the environment, else from its file (stripped), else None."""
    value = os.environ.get(env)
    if value:
        return value.strip()
    if file is None:
        return None
    try:
        return file.read_text(encoding="utf-8").strip() or None
    except OSError as err:
        raise ConfigError(f"forward: cannot read the {what} file {file}: {err}") from err


def forwarder_from(
    config: ForwardConfig, local: SqlResultStore, data_dir: Path, station_id: str
) -> Forwarder:
    """The station's forwarder from its `forward:` section; secrets from env or files."""
    url = _secret(config.central_url_env, config.central_url_file, "central URL")
    if url is None:
        raise ConfigError(
            f"forward.enabled: set {config.central_url_env} (or forward.central_url_file) to "
            "the central store's SQLAlchemy URL"
        )
    if config.hub_url is not None and config.s3 is not None:
        raise ConfigError(
            "forward: hub_url and s3 are two image targets; set one (images go to S3 and the "
            "hub reads them back from there)"
        )
    token = _secret(config.token_env, config.token_file, "hub token")
    if config.hub_url is not None and token is None:
        log.warning(
            "forwarder: no hub token (%s unset): the hub will refuse images", config.token_env
        )
    return Forwarder(
        local,
        url,
        data_dir,
        hub_url=config.hub_url,
        token=token,
        batch_size=config.batch_size,
        interval_s=config.interval_s,
        reviews_from_hub=station_id if config.reviews_from_hub else None,
        reviews_to_hub=station_id if config.reviews_to_hub else None,
        s3=None if config.s3 is None else target_from(config.s3),
    )


def _short(err: Exception) -> str:
    """The first line of a driver error (no SQL, no parameters, no URL)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
