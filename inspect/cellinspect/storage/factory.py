"""Build the store a station's settings describe: engine, migrations, image folder, retention."""

from __future__ import annotations

from cellinspect.settings import StationSettings
from cellinspect.storage.db import make_engine
from cellinspect.storage.images import ImageStore
from cellinspect.storage.migrate import upgrade
from cellinspect.storage.retention import RetentionPolicy
from cellinspect.storage.sql_store import SqlResultStore


def retention_from(settings: StationSettings) -> RetentionPolicy:
    return RetentionPolicy(
        pass_sample_rate=settings.pass_sample_rate,
        disk_budget_bytes=settings.disk_budget_bytes,
        disk_reserve_bytes=settings.disk_reserve_bytes,
    )


def open_store(settings: StationSettings, migrate: bool = True) -> SqlResultStore:
    """Open (and by default migrate to the newest schema) the station's result store."""
    engine = make_engine(settings.resolved_db_url, settings.sqlite_synchronous)
    if migrate:
        upgrade(engine)
    images = ImageStore(settings.resolved_image_dir, settings.image_format, settings.jpeg_quality)
    return SqlResultStore(engine, images, retention_from(settings))
