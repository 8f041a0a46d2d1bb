"""The packaged Alembic migrations build the schema the ORM models describe."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, select
from sqlalchemy import inspect as sa_inspect

from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.db import make_engine, write_engine
from cellinspect.storage.factory import open_store
from cellinspect.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from cellinspect.storage.models import Base
from cellinspect.storage.records import ImageKind, ResultFilter, ReviewInput, ReviewLabel
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result

TABLES = ("results", "result_models", "images", "reviews", "review_events")


def test_upgrade_on_empty_file_reaches_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'r.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0004_shadow_results"
    tables = set(sa_inspect(engine).get_table_names())
    assert {"results", "result_models", "images", "reviews", "review_events"} <= tables
    engine.dispose()


def test_migrated_schema_matches_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == []


def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()
    # WAL is a property of the file, visible to any other client.
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_on_the_configured_backend(db_url: str) -> None:
    """Upgrade an empty database of every backend under test and compare with the models."""
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert current_revision(engine) == head_revision()
    engine.dispose()
    assert diff == []


def _counts(engine: Engine) -> dict[str, int]:
    meta = MetaData()
    meta.reflect(engine, only=TABLES)
    with engine.connect() as conn:
        return {
            t: conn.scalar(select(func.count()).select_from(meta.tables[t])) or 0 for t in TABLES
        }


def _fill_0001(engine: Engine) -> None:
    """Rows as the 0001 schema held them: result JSON without station keys, a review, images."""
    meta = MetaData()
    meta.reflect(engine, only=TABLES)
    t = meta.tables
    now = datetime(2026, 1, 6, 12, 0)  # naive UTC, as UtcDateTime keeps it in SQLite
    with engine.begin() as conn:
        for pk, verdict in ((1, Verdict.FAIL), (2, Verdict.PASS)):
            result = synthetic_result(pk, verdict, defect_class="dent")
            data = result.to_dict()
            for key in ("station_id", "line", "site"):
                del data[key]
            conn.execute(
                t["results"].insert(),
                {
                    "id": pk,
                    "result_id": result.result_id,
                    "captured_wall": result.captured_wall.astimezone(UTC).replace(tzinfo=None),
                    "stored_at": now,
                    "verdict": verdict.value,
                    "defect_class": result.defect_class,
                    "score": result.score,
                    "latency_ms": 12.0,
                    "part_id": result.part_id,
                    "source": result.source,
                    "recipe_name": result.recipe_name,
                    "reviewed": pk == 1,
                    "review_label": "defect" if pk == 1 else None,
                    "result_json": json.dumps(data),
                },
            )
            for m in result.models:
                conn.execute(
                    t["result_models"].insert(),
                    {"result_pk": pk, "name": m.name, "version": m.version},
                )
        conn.execute(
            t["images"].insert(),
            {
                "result_pk": 1,
                "kind": "image",
                "relpath": "2026/01/05/r000001_image.png",
                "size_bytes": 10,
                "sha256": "d" * 64,
                "media_type": "image/png",
                "created_at": now,
            },
        )
        review = {"label": "defect", "defect_class": "dent", "reviewer": "ann", "comment": ""}
        conn.execute(
            t["reviews"].insert(),
            {**review, "result_pk": 1, "revision": 1, "created_at": now, "updated_at": now},
        )
        conn.execute(
            t["review_events"].insert(),
            {**review, "result_pk": 1, "revision": 1, "previous_label": None, "at": now},
        )


def test_a_0001_database_with_rows_upgrades_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'results.db'}"
    engine = make_engine(url)
    upgrade(engine, "0001_initial")
    _fill_0001(engine)
    before = _counts(engine)
    assert before == {
        "results": 2,
        "result_models": 4,
        "images": 1,
        "reviews": 1,
        "review_events": 1,
    }
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0004_shadow_results"
    assert _counts(engine) == before
    indexes = {i["name"]: i["column_names"] for i in sa_inspect(engine).get_indexes("results")}
    assert indexes["ix_results_station_id"] == ["station_id"]
    engine.dispose()

    settings = StationSettings(
        data_dir=tmp_path / "data", db_url=url, pass_sample_rate=0.0, disk_budget_mb=None
    )
    store = open_store(settings)
    try:
        old = store.get("r000001")
        assert old.result == synthetic_result(1, Verdict.FAIL, defect_class="dent")
        assert old.result.station_id is None
        assert old.review is not None and old.review.label is ReviewLabel.DEFECT
        assert set(old.images) == {ImageKind.IMAGE}
        assert len(store.audit_trail("r000001")) == 1
        store.add_many([synthetic_frame(synthetic_result(3, station_id="st-1"))])
        store.set_review("r000002", ReviewInput(ReviewLabel.GOOD, "bob"))
        assert [s.result.result_id for s in store.query(ResultFilter(station_id="st-1")).items] == [
            "r000003"
        ]
        assert len(store.query(ResultFilter()).items) == 3
    finally:
        store.close()


def test_downgrade_to_0001_keeps_every_row(tmp_path: Path) -> None:
    """Dropping the station columns must not rebuild `results`: that would cascade-delete."""
    url = f"sqlite:///{tmp_path / 'data' / 'results.db'}"
    settings = StationSettings(
        data_dir=tmp_path / "data", db_url=url, pass_sample_rate=0.0, disk_budget_mb=None
    )
    store = open_store(settings)
    store.add_many(
        [
            synthetic_frame(synthetic_result(i, defect_class="dent", station_id="st-1"))
            for i in (1, 2)
        ]
    )
    store.set_review("r000001", ReviewInput(ReviewLabel.DEFECT, "ann", "dent"))
    store.close()
    engine = make_engine(url)
    before = _counts(engine)
    assert before["images"] == 4 and before["reviews"] == 1
    cfg = alembic_config()
    with write_engine(engine).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001_initial")
    assert current_revision(engine) == "0001_initial"
    assert _counts(engine) == before
    columns = {c["name"] for c in sa_inspect(engine).get_columns("results")}
    assert not columns & {"station_id", "line", "site"}
    upgrade(engine)
    assert _counts(engine) == before
    engine.dispose()
