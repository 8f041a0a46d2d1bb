"""The hub's side of image forwarding: a station's image, stored by its sha256, linked to its row.

Files live under <image root>/cas/<first two hex>/<sha256><ext>, so the same bytes sent twice
(a resent batch after a crash) land on the same file, and the hash in the path is checked
against the body before anything is kept. The image row links the file to its result, so the
hub's review page and GET /results/{id}/image serve it like a station's own.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cellinspect.storage.db import write_engine
from cellinspect.storage.errors import ResultNotFoundError, StoreError
from cellinspect.storage.models import ImageRow, ResultRow
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore

SHA256 = re.compile(r"^[0-9a-f]{64}$")
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg"}


class ImageRejectedError(ValueError):
    """The body does not match its hash, or is not a kind of image the hub keeps."""


def cas_relpath(sha256: str, media_type: str) -> str:
    return f"cas/{sha256[:2]}/{sha256}{EXTENSIONS[media_type]}"


def _write_once(target: Path, body: bytes) -> None:
    """Write a content-addressed file unless it is there (same name: same bytes)."""
    if target.is_file():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    except OSError as err:
        raise StoreError(f"{target}: cannot write image: {err}") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"{target}: cannot write image: {err}") from err


def ingest_image(
    store: SqlResultStore,
    sha256: str,
    result_id: str,
    kind: ImageKind,
    media_type: str,
    body: bytes,
) -> bool:
    """Keep one forwarded image; True when new, False when the result already had it.

    Raises ImageRejectedError for a bad hash or media type, ResultNotFoundError when the
    result row has not reached the central store (the forwarder sends rows first).
    """
    if not SHA256.match(sha256):
        raise ImageRejectedError(f"{sha256[:80]!r} is not a lowercase hex sha256")
    if media_type not in EXTENSIONS:
        raise ImageRejectedError(
            f"media type {media_type[:60]!r}: expected one of {sorted(EXTENSIONS)}"
        )
    actual = hashlib.sha256(body).hexdigest()
    if actual != sha256:
        raise ImageRejectedError(f"body has sha256 {actual}, not the {sha256} in the path")
    with Session(store.engine) as session:
        pk = session.scalar(select(ResultRow.id).where(ResultRow.result_id == result_id))
        if pk is None:
            raise ResultNotFoundError(f"no result with id {result_id!r} in the central store")
        have = session.scalar(
            select(ImageRow.sha256).where(ImageRow.result_pk == pk, ImageRow.kind == kind.value)
        )
    if have is not None:
        if have != sha256:
            raise ImageRejectedError(
                f"result {result_id!r} already has a different {kind.value} ({have})"
            )
        return False
    relpath = cas_relpath(sha256, media_type)
    _write_once(store.images.path_of(relpath), body)
    try:
        with Session(write_engine(store.engine)) as session, session.begin():
            session.add(
                ImageRow(
                    result_pk=pk,
                    kind=kind.value,
                    relpath=relpath,
                    size_bytes=len(body),
                    sha256=sha256,
                    media_type=media_type,
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        return False  # the same image from a concurrent resend got in first
    return True
