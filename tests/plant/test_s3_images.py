"""Kept images to a real S3 protocol server (moto's, over HTTP on 127.0.0.1) instead of the hub.

The forwarder puts each kept image content-addressed (`<prefix>/<ab>/<sha256>.png`), skips
objects already there (HEAD), links `s3://bucket/key` in the central PostgreSQL, and a real
`cellinspect hub` process serves the image by reading the object back through boto3. The
credentials come from a file or the environment and appear in no log line or error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from cellinspect.entities import Verdict
from cellinspect.errors import ConfigError
from cellinspect.plant.forwarder import (
    CURSOR_FILE,
    CursorFile,
    Forwarder,
    ForwardError,
    forwarder_from,
)
from cellinspect.plant.hub_images import S3ReadThroughImages
from cellinspect.plant.s3_images import (
    Credentials,
    S3Config,
    S3ImageTarget,
    credentials_from,
    make_client,
    object_key,
)
from cellinspect.settings import StationSettings
from cellinspect.station.config import ForwardConfig, StationInvalidError, parse_station
from cellinspect.storage.factory import open_store
from cellinspect.storage.models import ImageRow, ResultRow
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from tests.conftest import ROOT
from tests.plant.forward_rig import HubProcess, wait_for
from tests.servers.postgres import PostgresServer, free_port, postgres_fixture

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) is missing")

postgres = postgres_fixture("module")
BUCKET = "plant-images"
KEY_ID, SECRET = "AKIDSTATIONA", "s3-secret-never-logged-9f2c"
REGION = "us-east-1"


class S3Server:
    """moto's S3 server in a thread on a free 127.0.0.1 port; stop and start keep its data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        self._server = moto_server.ThreadedMotoServer(
            ip_address="127.0.0.1", port=self.port, verbose=False
        )
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> S3Client:
        return make_client(self.url, REGION, Credentials(KEY_ID, SECRET))


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def central_url(postgres: PostgresServer, tmp_path: Path) -> str:
    """A fresh central database, migrated (as the hub would at its start)."""
    url = postgres.url(postgres.create_database()).render_as_string(hide_password=False)
    open_store(StationSettings(data_dir=tmp_path / "migrate", db_url=url)).close()
    return url


def _station(tmp_path: Path, station: str, count: int) -> SqlResultStore:
    """`count` results, every other one a FAIL (kept image and overlay)."""
    store = open_store(
        StationSettings(data_dir=tmp_path / station, pass_sample_rate=0.0, disk_budget_mb=None)
    )
    store.add_many(
        [
            synthetic_frame(
                synthetic_result(
                    i,
                    Verdict.FAIL if i % 2 == 0 else Verdict.PASS,
                    defect_class="scratch" if i % 2 == 0 else None,
                    prefix=f"{station}-",
                    station_id=station,
                )
            )
            for i in range(count)
        ]
    )
    return store


def _kept(store: SqlResultStore) -> list[tuple[str, str, str]]:
    """(result id, kind, sha256) of every kept image, in the station's order."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(ResultRow.result_id, ImageRow.kind, ImageRow.sha256)
            .join(ImageRow, ImageRow.result_pk == ResultRow.id)
            .order_by(ResultRow.id, ImageRow.kind)
        )
        return [(r[0], r[1], r[2]) for r in rows]


def _central_paths(url: str, tmp_path: Path) -> dict[tuple[str, str], str]:
    central = open_store(StationSettings(data_dir=tmp_path / "central-reader", db_url=url))
    try:
        with central.engine.connect() as conn:
            rows = conn.execute(
                select(ResultRow.result_id, ImageRow.kind, ImageRow.relpath).join(
                    ImageRow, ImageRow.result_pk == ResultRow.id
                )
            )
            return {(r[0], r[1]): r[2] for r in rows}
    finally:
        central.close()


def _objects(client: S3Client, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


@pytest.mark.slow
def test_images_go_to_s3_and_the_hub_serves_them_from_there(
    tmp_path: Path,
    s3: S3Server,
    central_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    creds = tmp_path / "s3-credentials"
    creds.write_text(f"{KEY_ID}\n{SECRET}\n", encoding="utf-8")
    monkeypatch.setenv("CELLINSPECT_CENTRAL_DB_URL", central_url)
    for var in ("CELLINSPECT_S3_ACCESS_KEY_ID", "CELLINSPECT_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    config = ForwardConfig(
        enabled=True,
        interval_s=0.2,
        s3=S3Config(
            bucket=BUCKET,
            prefix="line-4",
            endpoint_url=s3.url,
            region=REGION,
            credentials_file=creds,
        ),
    )
    store = _station(tmp_path, "st-a", 6)
    # The hub reads objects back with its own environment: endpoint and keys.
    monkeypatch.setenv("CELLINSPECT_S3_ENDPOINT_URL", s3.url)
    monkeypatch.setenv("CELLINSPECT_S3_REGION", REGION)
    monkeypatch.setenv("CELLINSPECT_S3_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("CELLINSPECT_S3_SECRET_ACCESS_KEY", SECRET)
    hub = HubProcess(tmp_path / "hub", central_url)
    fw = forwarder_from(config, store, tmp_path / "st-a", "st-a").start()
    try:
        wait_for("no backlog", lambda: fw.stats.backlog == 0 and fw.stats.forwarded == 6)
        kept = _kept(store)
        assert len(kept) == 3 * 2  # three FAILs, image and overlay each
        objects = _objects(s3.client(), "line-4/")
        paths = _central_paths(central_url, tmp_path)
        for rid, kind, sha in kept:
            key = f"line-4/{sha[:2]}/{sha}.png"
            assert hashlib.sha256(objects[key]).hexdigest() == sha
            assert paths[(rid, kind)] == f"s3://{BUCKET}/{key}"
        assert len(objects) == len(kept) == fw.stats.images_sent
        assert len(paths) == len(kept)  # passes kept no image

        # The hub has no copy until asked; then it reads the object, same bytes.
        cached = tmp_path / "hub" / "images" / "cas"
        assert not cached.exists() or not any(cached.rglob("*.png"))
        for rid, kind, sha in kept:
            body = hub.get(f"/results/{rid}/{kind}")
            assert hashlib.sha256(body).hexdigest() == sha
        assert len(list(cached.rglob("*.png"))) == len(kept)

        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if SECRET in m]
        assert SECRET not in hub.log()
        assert fw.stats.state == "ok"
    finally:
        fw.close()
        store.close()
        hub.close()


@pytest.mark.slow
def test_a_resent_batch_puts_nothing_twice_and_an_s3_outage_waits(
    tmp_path: Path, s3: S3Server, central_url: str
) -> None:
    puts: list[str] = []
    client = s3.client()
    client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: puts.append(params["url_path"])
    )
    target = S3ImageTarget(S3Config(bucket=BUCKET, prefix="resend", endpoint_url=s3.url), client)
    store = _station(tmp_path, "st-b", 4)
    fw = Forwarder(store, central_url, tmp_path / "st-b", s3=target)
    try:
        assert fw.forward_once() is False
        assert len(puts) == len(_kept(store)) == 4
        first = _central_paths(central_url, tmp_path)

        # A crash before the cursor moved: the batch goes again; HEAD finds every object.
        CursorFile(tmp_path / "st-b" / CURSOR_FILE).write(0)
        fw.forward_once()
        assert len(puts) == 4
        assert _central_paths(central_url, tmp_path) == first
        assert fw.stats.images_sent == 4

        # The object store goes away: the batch fails, the cursor stays, no secret in the error.
        store.add_many([synthetic_frame(synthetic_result(10, Verdict.FAIL, prefix="st-b-"))])
        after = CursorFile(tmp_path / "st-b" / CURSOR_FILE).read()
        s3.stop()
        try:
            with pytest.raises(ForwardError, match=f"127.0.0.1:{s3.port}") as err:
                fw.forward_once()
            assert SECRET not in str(err.value)
            assert CursorFile(tmp_path / "st-b" / CURSOR_FILE).read() == after
        finally:
            s3.start()
        fw.forward_once()
        assert len(puts) == 6
        assert len(_central_paths(central_url, tmp_path)) == 6
    finally:
        fw.close(drain_s=0)
        store.close()


def test_s3_settings_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"station_id": "s1", "recipes": {1: str(ROOT / "recipes" / "flange.yaml")}}
    parsed = parse_station(
        {**base, "forward": {"enabled": True, "s3": {"bucket": "b-1", "credentials_file": "k"}}},
        tmp_path / "s.yaml",
    )
    assert parsed.forward.s3 is not None
    assert parsed.forward.s3.credentials_file == (tmp_path / "k").resolve()
    with pytest.raises(StationInvalidError, match="bucket"):
        parse_station({**base, "forward": {"s3": {"prefix": "x"}}}, tmp_path / "s.yaml")

    monkeypatch.delenv("A_KEY", raising=False)
    monkeypatch.delenv("A_SECRET", raising=False)
    assert credentials_from("A_KEY", "A_SECRET", None) is None  # boto3's own chain
    monkeypatch.setenv("A_KEY", KEY_ID)
    with pytest.raises(ConfigError, match="A_SECRET"):
        credentials_from("A_KEY", "A_SECRET", None)
    monkeypatch.delenv("A_KEY")
    bad = tmp_path / "one-line"
    bad.write_text("only-a-key\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="one-line"):
        credentials_from("A_KEY", "A_SECRET", bad)
    good = tmp_path / "two-lines"
    good.write_text(f"{KEY_ID}\n{SECRET}\n", encoding="utf-8")
    creds = credentials_from("A_KEY", "A_SECRET", good)
    assert creds == Credentials(KEY_ID, SECRET)
    assert SECRET not in repr(creds)

    assert object_key("line-4/", "ab" + "0" * 62, "image/png") == f"line-4/ab/ab{'0' * 62}.png"
    assert object_key("", "cd" + "0" * 62, "image/jpeg") == f"cd/cd{'0' * 62}.jpg"

    store = open_store(StationSettings(data_dir=tmp_path / "data"))
    monkeypatch.setenv("CELLINSPECT_CENTRAL_DB_URL", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with pytest.raises(ConfigError, match="hub_url and s3"):
            forwarder_from(
                ForwardConfig(enabled=True, hub_url="http://hub", s3=S3Config(bucket="b-1")),
                store,
                tmp_path / "data",
                "s1",
            )
    finally:
        store.close()


def test_the_hub_refuses_an_object_whose_bytes_do_not_match_its_key(
    tmp_path: Path, s3: S3Server
) -> None:
    """A tampered object is an error, and nothing is cached on the hub's disk."""
    from cellinspect.storage.errors import StoreError
    from cellinspect.storage.images import ImageStore

    client = s3.client()
    sha = "ab" + "1" * 62
    client.put_object(Bucket=BUCKET, Key=f"tamper/ab/{sha}.png", Body=b"not those bytes")
    images = S3ReadThroughImages(ImageStore(tmp_path / "hub-images"), client)
    with pytest.raises(StoreError, match="sha256"):
        images.path_of(f"s3://{BUCKET}/tamper/ab/{sha}.png")
    assert not list((tmp_path / "hub-images").rglob("*.png"))
    with pytest.raises(StoreError, match=r"NoSuchKey|404"):
        images.path_of(f"s3://{BUCKET}/tamper/ab/{'ab' + '2' * 62}.png")
