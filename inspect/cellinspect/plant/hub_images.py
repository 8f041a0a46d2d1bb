"""The hub's side of image forwarding: a station's image, stored by its sha256, linked to its row.

Files live under <image root>/cas/<first two hex>/<sha256><ext>, so the same bytes sent twice
(a resent batch after a crash) land on the same file, and the hash in the path is checked
against the body before anything is kept. The image row links the file to its result, so the
hub's review page and GET /results/{id}/image serve it like a station's own.

A station with an S3 target (plant/s3_images.py) puts the object itself and links the row
directly (`link_image`, path `s3://bucket/key`); the hub reads such an image back through
boto3 the first time it is asked for, checks its hash and keeps it in the same CAS folder, so
the API routes serve it from a file like any other (`read_s3_images`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cellinspect.errors import ConfigError
from cellinspect.plant.s3_images import SCHEME, S3Error, hub_client, parse_s3_path, read_object
from cellinspect.storage.db import write_engine
from cellinspect.storage.errors import ResultNotFoundError, StoreError
from cellinspect.storage.images import ImageStore
from cellinspect.storage.models import ImageRow, ResultRow
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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
    pk = _unlinked(store, result_id, kind, sha256)
    if pk is None:
        return False
    relpath = cas_relpath(sha256, media_type)
    _write_once(store.images.path_of(relpath), body)
    return _insert(store, pk, kind, relpath, len(body), sha256, media_type)


def link_image(
    store: SqlResultStore,
    result_id: str,
    kind: ImageKind,
    path: str,
    size_bytes: int,
    sha256: str,
    media_type: str,
) -> bool:
    """Record an image stored elsewhere (an `s3://` path) for a central result; True when new.

    The same checks as a hub upload: the result must be there, and a result keeps one image
    of each kind (the same sha256 again changes nothing).
    """
    pk = _unlinked(store, result_id, kind, sha256)
    if pk is None:
        return False
    return _insert(store, pk, kind, path, size_bytes, sha256, media_type)


def _unlinked(store: SqlResultStore, result_id: str, kind: ImageKind, sha256: str) -> int | None:
    """The result's key when it has no image of this kind yet; None when it has this one."""
    with Session(store.engine) as session:
        pk = session.scalar(select(ResultRow.id).where(ResultRow.result_id == result_id))
        if pk is None:
            raise ResultNotFoundError(f"no result with id {result_id!r} in the central store")
        have = session.scalar(
            select(ImageRow.sha256).where(ImageRow.result_pk == pk, ImageRow.kind == kind.value)
        )
    if have is None:
        return int(pk)
    if have != sha256:
        raise ImageRejectedError(
            f"result {result_id!r} already has a different {kind.value} ({have})"
        )
    return None


def _insert(
    store: SqlResultStore,
    pk: int,
    kind: ImageKind,
    relpath: str,
    size_bytes: int,
    sha256: str,
    media_type: str,
) -> bool:
    try:
        with Session(write_engine(store.engine)) as session, session.begin():
            session.add(
                ImageRow(
                    result_pk=pk,
                    kind=kind.value,
                    relpath=relpath,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    media_type=media_type,
                    created_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        return False  # the same image from a concurrent resend got in first
    return True


class S3ReadThroughImages(ImageStore):
    """The hub's image folder, where an `s3://` path is fetched once into its CAS file.

    The object's key ends in its sha256, and the bytes read back must hash to it; so the cached
    file is the same file a hub upload of those bytes would have written.
    """

    def __init__(self, base: ImageStore, client: S3Client | None = None) -> None:
        super().__init__(base.root, base.fmt, base.jpeg_quality)
        self._client = client

    def path_of(self, relpath: str) -> Path:
        if not relpath.startswith(SCHEME):
            return super().path_of(relpath)
        sha256, target = self._cached(relpath)
        if target.is_file():
            return target
        if self._client is None:
            try:
                self._client = hub_client()
            except ConfigError as err:
                raise StoreError(str(err)) from err
        try:
            body = read_object(self._client, relpath)
        except S3Error as err:
            raise StoreError(str(err)) from err
        actual = hashlib.sha256(body).hexdigest()
        if actual != sha256:
            raise StoreError(f"{relpath[:200]}: the object has sha256 {actual}, not its name's")
        _write_once(target, body)
        return target

    def delete(self, relpath: str) -> None:
        """Retention on the hub drops the cached copy only; the object stays in S3."""
        if relpath.startswith(SCHEME):
            self._cached(relpath)[1].unlink(missing_ok=True)
        else:
            super().delete(relpath)

    def _cached(self, relpath: str) -> tuple[str, Path]:
        """The sha256 in an object's key and the CAS file that caches it."""
        _, key = parse_s3_path(relpath)
        sha256, dot, ext = key.rsplit("/", 1)[-1].partition(".")
        media_type = {v: k for k, v in EXTENSIONS.items()}.get(f"{dot}{ext}")
        if not SHA256.match(sha256) or media_type is None:
            raise StoreError(f"{relpath[:200]!r}: not a content-addressed image key")
        return sha256, super().path_of(cas_relpath(sha256, media_type))


def read_s3_images(store: object, client: S3Client | None = None) -> None:
    """Let a hub store serve images that stations put to S3 (their rows say `s3://...`)."""
    if isinstance(store, SqlResultStore) and not isinstance(store.images, S3ReadThroughImages):
        store.images = S3ReadThroughImages(store.images, client)
