"""Who may do what: every route per role, tokens only in headers, users file, nothing leaked."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cellinspect.api import create_app
from cellinspect.api.server import ApiServerThread
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import StoreError
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.users import Role, add_user, remove_user

from .helpers import AUTH, NO_AUTH, USERS, V, auth_as, flush, grey, png_bytes

ANON = "(no token)"
LEGACY = "(api_token)"
WHO = [ANON, "vic", "otto", "ann", "ada", LEGACY]
ROLE_OF = {ANON: None, LEGACY: "admin", **{n: r for n, (r, _) in USERS.items()}}
MAY = {
    "read": {"viewer", "operator", "qa", "admin"},
    "operate": {"operator", "admin"},
    "review": {"qa", "admin"},
    "export": {"qa", "admin"},
}


def headers_of(who: str) -> dict[str, str]:
    if who == ANON:
        return NO_AUTH
    if who == LEGACY:
        return AUTH
    return auth_as(who)


def _upload() -> dict[str, Any]:
    return {"files": {"file": ("part.png", png_bytes(grey(200)), "image/png")}}


# method, path, request keywords, permission
ROUTES: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/results", {}, "read"),
    ("GET", "/results/r000001", {}, "read"),
    ("GET", "/results/r000001/image", {}, "read"),
    ("GET", "/results/r000001/overlay", {}, "read"),
    ("GET", "/results/r000001/audit", {}, "read"),
    ("GET", "/defect-classes", {}, "read"),
    ("GET", "/stats", {}, "read"),
    ("GET", "/spc/measurements", {}, "read"),
    ("GET", "/spc/reject-rate", {}, "read"),
    ("GET", "/station", {}, "read"),
    ("POST", "/station/trigger", {"json": {}}, "operate"),
    ("POST", "/station/recipe", {"json": {"number": 1}}, "operate"),
    ("POST", "/inspections", {}, "operate"),
    ("PUT", "/results/r000005/review", {"json": {"label": "good"}}, "review"),
    ("POST", "/exports", {"json": {}}, "export"),
]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize(("method", "path", "kwargs", "permission"), ROUTES)
def test_each_route_allows_exactly_its_roles(
    client: TestClient,
    who: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    permission: str,
) -> None:
    if path == "/inspections":
        kwargs = _upload()
    response = client.request(method, path, headers=headers_of(who), **kwargs)
    role = ROLE_OF[who]
    if role is None:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
    elif role in MAY[permission]:
        # Allowed: whatever the route answers next (200, 201, or 404 without a station).
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
        message = response.json()["message"]
        assert f"has role {role}" in message and permission in message


@pytest.mark.parametrize("who", WHO)
def test_me_names_the_user_and_what_the_role_may(client: TestClient, who: str) -> None:
    response = client.get("/me", headers=headers_of(who))
    role = ROLE_OF[who]
    if role is None:
        assert response.status_code == 401
        return
    body = response.json()
    assert body["name"] == ("api-token" if who == LEGACY else who)
    assert body["role"] == role and body["read_only_station"] is False
    assert set(body["permissions"]) == {p for p, roles in MAY.items() if role in roles}


def test_me_on_a_station_without_credentials(tmp_path: Path, store: SqlResultStore) -> None:
    with TestClient(create_app(StationSettings(data_dir=tmp_path / "x"), store)) as c:
        body = c.get("/me").json()
    assert body == {
        "name": "anonymous",
        "role": "viewer",
        "permissions": ["read"],
        "read_only_station": True,
    }


@pytest.mark.parametrize("path", ["/health", "/metrics", "/review", "/openapi.json", "/docs"])
def test_probes_pages_and_the_schema_need_no_token(client: TestClient, path: str) -> None:
    assert client.get(path, headers=NO_AUTH).status_code == 200


def test_live_events_need_a_reading_token(client: TestClient) -> None:
    response = client.get("/events", params={"max_events": 1}, headers=NO_AUTH)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "token=abc",
        "api_token=abc",
        "access_token=abc",
        "API_TOKEN=abc",
        "verdict=fail&token=abc",
    ],
)
def test_a_token_in_the_query_string_is_refused(client: TestClient, query: str) -> None:
    response = client.get(f"/results?{query}")  # the header token is valid: still refused
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request" and "header" in body["message"]
    assert "abc" not in response.text


def test_a_query_token_never_reaches_the_access_log(
    settings: StationSettings, store: SqlResultStore
) -> None:
    app = create_app(settings, store)
    server = ApiServerThread(app, port=0).start()
    access = logging.getLogger("uvicorn.access")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    secret = "ci_000000000003_leakedsecretvalue"
    try:
        r = httpx.get(f"{server.url}/results", params={"token": secret, "limit": 5}, timeout=5)
        assert r.status_code == 400
        ok = httpx.get(f"{server.url}/health", timeout=5)
        assert ok.status_code == 200
    finally:
        server.stop()
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert any("/results?" in line for line in lines), lines  # the request was logged...
    assert not any(secret in line for line in lines), lines  # ...without the token
    assert any("token=REDACTED" in line for line in lines), lines


def test_a_new_user_works_at_once_and_a_removed_one_stops(
    client: TestClient, settings: StationSettings
) -> None:
    users_file = settings.resolved_users_file
    token = add_user(users_file, "carla", Role.QA)
    assert token not in users_file.read_text(encoding="utf-8")  # only its hash is stored
    carla = {"Authorization": f"Bearer {token}"}
    response = client.put("/results/r000005/review", json={"label": "good"}, headers=carla)
    assert response.status_code == 200, response.text
    assert response.json()["reviewer"] == "carla"
    remove_user(users_file, "carla")
    gone = client.put("/results/r000005/review", json={"label": "good"}, headers=carla)
    assert gone.status_code == 401


def test_a_broken_users_file_closes_user_tokens_but_not_the_admin_token(
    client: TestClient, settings: StationSettings
) -> None:
    settings.resolved_users_file.write_text("users: [oops", encoding="utf-8")
    assert client.get("/results", headers=auth_as("vic")).status_code == 401
    assert client.get("/results", headers=NO_AUTH).status_code == 401  # still not open
    assert client.get("/results", headers=AUTH).status_code == 200


def test_a_token_for_another_station_does_not_pass(client: TestClient) -> None:
    """Same token id, other secret: the hash check decides, not the id."""
    forged = auth_as("ada")["Authorization"][:-5] + "XXXXX"
    assert client.get("/results", headers={"Authorization": forged}).status_code == 401


# --------------------------------------------------------------------------- nothing leaked


def test_replies_carry_file_names_not_server_paths(
    client: TestClient, store: SqlResultStore
) -> None:
    stored = synthetic_frame(synthetic_result(77, V.FAIL, defect_class="dent"))
    result = dataclasses.replace(
        stored.result,
        path="/srv/line-3/incoming/2026/part-77.png",
        source="folder:/srv/line-3/incoming",
    )
    store.add_many([dataclasses.replace(stored, result=result)])
    listed = client.get("/results", params={"part_id": result.part_id}).json()["items"]
    one = client.get(f"/results/{result.result_id}").json()
    for item in [*listed, one]:
        assert item["path"] == "part-77.png"
        assert item["source"] == "folder:incoming"
    assert "/srv/" not in client.get("/results", params={"limit": 200}).text

    upload = client.post(
        "/inspections",
        files={"file": ("C:\\Users\\qa\\Desktop\\part.png", png_bytes(grey(50)), "image/png")},
    )
    assert upload.status_code == 201
    assert upload.json()["result"]["path"] == "part.png"
    flush(client)


def test_errors_name_no_server_folder(client: TestClient, settings: StationSettings) -> None:
    # An export into a folder that cannot be made: the message names no absolute path.
    export_dir = settings.resolved_export_dir
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    export_dir.write_text("not a folder", encoding="utf-8")
    response = client.post("/exports", json={})
    assert response.status_code == 409, response.text
    assert "<export dir>" in response.json()["message"]
    assert str(settings.data_dir) not in response.text
    assert str(settings.data_dir.resolve()) not in response.text


def test_health_masks_a_database_password(
    settings: StationSettings, store: SqlResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> None:
        raise StoreError(
            "cannot connect to postgresql+psycopg://station:hunter2@db.example/results"
        )

    monkeypatch.setattr(store, "ping", down)
    with TestClient(create_app(settings, store)) as c:
        response = c.get("/health")
    assert response.status_code == 503
    assert "hunter2" not in response.text
    assert "station:***@db.example" in response.json()["database"]


# --------------------------------------------------------------------------- the CLI


def test_users_add_prints_the_token_once_and_stores_its_hash(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cellinspect.cli.root import app

    users_file = tmp_path / "users.yaml"
    runner = CliRunner()
    added = runner.invoke(
        app, ["users", "add", "ann", "--role", "qa", "--users-file", str(users_file)]
    )
    assert added.exit_code == 0, added.output
    token = added.output.strip().splitlines()[-1]
    assert token.startswith("ci_") and added.output.count(token) == 1
    text = users_file.read_text(encoding="utf-8")
    assert token not in text and token.split("_", 2)[2] not in text and "scrypt$" in text
    assert users_file.stat().st_mode & 0o077 == 0  # owner only
    listed = runner.invoke(app, ["users", "list", "--users-file", str(users_file)])
    assert "ann" in listed.output and "qa" in listed.output and "ci_" not in listed.output
    again = runner.invoke(
        app, ["users", "add", "ann", "--role", "qa", "--users-file", str(users_file)]
    )
    assert again.exit_code == 1 and "--replace" in again.output
    bad = runner.invoke(
        app, ["users", "add", "x", "--role", "boss", "--users-file", str(users_file)]
    )
    assert bad.exit_code == 1 and "viewer, operator, qa, admin" in bad.output
    gone = runner.invoke(app, ["users", "remove", "ann", "--users-file", str(users_file)])
    assert gone.exit_code == 0
    assert (
        "ann" not in runner.invoke(app, ["users", "list", "--users-file", str(users_file)]).output
    )


def test_cli_errors_mask_a_database_password(tmp_path: Path) -> None:
    from cellinspect.cli.support import mask_url_passwords

    text = "db_url 'postgresql://u:p%40ss@host/db' and mysql://root:hunter2@10.0.0.1:3306/x"
    masked = mask_url_passwords(text)
    assert "p%40ss" not in masked and "hunter2" not in masked
    assert "postgresql://u:***@host/db" in masked and "mysql://root:***@10.0.0.1" in masked


def test_line_and_run_announce_access_and_a_masked_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from cellinspect.cli.cell import _announce_line

    url = "postgresql+psycopg://station:hunter2@db.example/results"
    settings = StationSettings(data_dir=tmp_path, db_url=url)
    runtime = SimpleNamespace(api=SimpleNamespace(url="http://127.0.0.1:8000"), settings=settings)
    _announce_line(runtime)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "READ-ONLY" in out and "hunter2" not in out and "station:***@db.example" in out
    add_user(settings.resolved_users_file, "ann", Role.QA)
    _announce_line(runtime)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "1 user(s)" in out and "READ-ONLY" not in out and "ci_" not in out
