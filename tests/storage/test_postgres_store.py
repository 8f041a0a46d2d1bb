"""The store on a real PostgreSQL server that the test stops and starts (a private cluster).

The generic store tests (round trip, idempotent add_many, migrations to head, reviews...) run
on PostgreSQL too through the `db_url` fixture (conftest.py). What only a server can show is
here: a station's settings URL with a password, the server going away under a running writer
(`pg_ctl stop -m immediate`, a crash) and coming back, and the journal replayed into it
exactly once however often the replay runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import StoreError
from cellinspect.storage.factory import open_store
from cellinspect.storage.journal import ResultJournal, replay_journal
from cellinspect.storage.migrate import current_revision, head_revision
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter, SubmitOutcome
from tests.servers.postgres import PostgresServer, postgres_fixture

pytestmark = pytest.mark.slow

postgres = postgres_fixture("function")


def results(n: int, start: int = 0) -> list[InspectedFrame]:
    return [
        synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="dent"), size=16)
        for i in range(start, start + n)
    ]


@pytest.fixture
def pg_store(postgres: PostgresServer, tmp_path: Path) -> Iterator[SqlResultStore]:
    url = postgres.url_string(postgres.create_database())
    store = open_store(StationSettings(data_dir=tmp_path / "data", db_url=url))
    yield store
    store.close()


def id_counts(engine: Engine) -> dict[str, int]:
    """result_id -> rows holding it, counted by the server (not through the store)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT result_id, count(*) FROM results GROUP BY result_id"))
        return {str(rid): int(n) for rid, n in rows}


def test_a_station_store_on_postgresql_is_migrated_and_refuses_a_wrong_password(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    name = postgres.create_database()
    store = open_store(StationSettings(data_dir=tmp_path / "a", db_url=postgres.url_string(name)))
    try:
        assert store.engine.dialect.name == "postgresql"
        assert current_revision(store.engine) == head_revision()
    finally:
        store.close()
    wrong = postgres.url(name).set(password="not-the-password")
    engine = create_engine(wrong)
    with pytest.raises(Exception, match="password authentication failed"):
        engine.connect().close()
    engine.dispose()


def test_journal_replay_into_postgresql_stores_each_result_once(
    pg_store: SqlResultStore, tmp_path: Path
) -> None:
    """Half the results committed by the writer, the process 'dies'; replay twice, reopen."""
    folder = tmp_path / "journal"
    journal = ResultJournal(folder)
    journal.open()
    frames = results(30)
    for f in frames:
        journal.append(f.result)
    assert len(pg_store.add_many(frames[:15])) == 15  # the writer got half of them in
    # No journal.committed(): the crash came before the writer could report back.
    again = ResultJournal(folder)
    again.open()
    assert again.pending == 30
    assert replay_journal(pg_store, again) == 15
    third = ResultJournal(folder)
    third.open()
    assert replay_journal(pg_store, third) == 0
    counts = id_counts(pg_store.engine)
    assert counts == {f.result.result_id: 1 for f in frames}
    for j in (journal, again, third):
        j.close()


def test_the_writer_waits_out_a_postgresql_crash_in_the_journal(
    postgres: PostgresServer,
    pg_store: SqlResultStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server killed (immediate stop) while results arrive: none dropped or spilled, the
    outage logged once and shown in the stats; after the restart every result once."""
    journal = ResultJournal(tmp_path / "journal")
    journal.open()
    spill = tmp_path / "spill.jsonl"
    writer = AsyncResultWriter(
        pg_store, batch_size=4, spill_path=spill, retry_wait_s=0.05, max_backoff_s=0.5
    )
    writer.attach_journal(journal)
    writer.start()
    frames = results(60)
    outcomes: list[SubmitOutcome] = []

    def feed(part: list[InspectedFrame]) -> None:
        for f in part:
            journal.append(f.result)  # the station's order: journal first, then the writer
            outcomes.append(writer.submit(f))

    with caplog.at_level(logging.DEBUG, logger="cellinspect.storage.writer"):
        try:
            feed(frames[:20])
            assert writer.flush(60.0)
            assert len(id_counts(pg_store.engine)) == 20
            postgres.stop("immediate")
            feed(frames[20:45])
            assert writer.flush(60.0)
            down = writer.stats
            postgres.restart()
            feed(frames[45:])
            assert writer.flush(60.0)
        finally:
            writer.close()
            journal.close()
    assert down.store_failing and down.last_error and down.deferred >= 1
    assert SubmitOutcome.DROPPED not in outcomes and SubmitOutcome.SPILLED not in outcomes
    stats = writer.stats
    assert (stats.dropped, stats.spilled, stats.journal_pending) == (0, 0, 0)
    assert not stats.store_failing and stats.last_error is None
    assert not spill.exists()
    assert id_counts(pg_store.engine) == {f.result.result_id: 1 for f in frames}
    outage = [r for r in caplog.records if "result store unreachable" in r.getMessage()]
    assert len(outage) == 1 and outage[0].levelno == logging.ERROR
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert all(postgres.password not in r.getMessage() for r in caplog.records)


def test_a_dead_server_fails_a_write_with_a_store_error(
    postgres: PostgresServer, pg_store: SqlResultStore
) -> None:
    postgres.stop("immediate")
    with pytest.raises(StoreError, match="cannot store 1 results") as err:
        pg_store.add_many(results(1))
    assert postgres.password not in str(err.value)
