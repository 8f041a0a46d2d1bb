"""Commands in over MQTT: a running station, a real Mosquitto, mosquitto_pub in, mosquitto_sub out.

The station runs in-process (`StationRuntime`, the shipped flange recipes, software trigger)
with `mqtt.commands.enabled`; the tokens are users of its own users file. Each reply is read
from `<station topic>/cmd/<name>/reply`: roles are checked as the HTTP API checks them (recipe
select: operator or admin; promote: admin), the actions really happen (the active recipe
changes, the registry's live version changes), bad input is answered with an error, a
redelivered request id is not run twice, and no token reaches a log line.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.station.config import load_station, parse_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.users import Role, add_user
from tests.conftest import ROOT
from tests.lifecycle.test_registry import resealed
from tests.servers.mosquitto import MosquittoServer, Subscriber, mosquitto_fixture
from tests.station.runner import write_station

mosquitto = mosquitto_fixture()

BASE = "cellinspect/plant-a/assembly/line-3/cell-7"
SLOT = "flange-anomaly"


def _station_file(tmp_path: Path, broker: MosquittoServer) -> Path:
    source = tmp_path / "images"
    source.mkdir()
    for image in sorted((ROOT / "sample_images").glob("*.bmp"))[:4]:
        shutil.copy(image, source / image.name)
    return write_station(
        tmp_path / "station.yaml",
        station_id="cell-7",
        site="plant-a",
        area="assembly",
        line="line-3",
        recipes={
            1: str(ROOT / "recipes" / "flange.yaml"),
            2: str(ROOT / "recipes" / "flange.yaml"),
        },
        source={"type": "folder", "path": str(source), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        store={"data_dir": str(tmp_path / "data")},
        mqtt={"enabled": True, "port": broker.port, "commands": {"enabled": True}},
    )


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    users = tmp_path / "data" / "users.yaml"
    users.parent.mkdir(parents=True)
    yield {
        name: add_user(users, name, role)
        for name, role in (("ada", Role.ADMIN), ("otto", Role.OPERATOR), ("quinn", Role.QA))
    }


class Client:
    """mosquitto_pub for requests, one mosquitto_sub for replies and the station's state."""

    def __init__(self, broker: MosquittoServer) -> None:
        self.broker = broker
        self.sub: Subscriber = broker.subscribe(f"{BASE}/cmd/+/reply", "-t", f"{BASE}/state")

    def wait_online(self) -> None:
        """The station's retained 'online' comes after its command subscription."""
        self.sub.wait_for(
            lambda m: m[1] == f"{BASE}/state" and json.loads(m[2])["state"] == "online", 60
        )

    def send(self, name: str, payload: bytes) -> None:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.broker.port),
                "-q",
                "1",
                "-t",
                f"{BASE}/cmd/{name}",
                "-m",
                payload.decode(),
            ],
            check=True,
            timeout=30,
        )

    def ask(self, name: str, token: str | None, **fields: Any) -> dict[str, Any]:
        """Send a command with a fresh request id; its reply."""
        request_id = fields.pop("request_id", None) or uuid.uuid4().hex
        body = {"request_id": request_id, **fields}
        if token is not None:
            body["token"] = token
        self.send(name, json.dumps(body).encode())
        return self.reply_to(name, request_id)

    def reply_to(self, name: str, request_id: str | None) -> dict[str, Any]:
        def match(m: tuple[bool, str, str]) -> bool:
            return m[1] == f"{BASE}/cmd/{name}/reply" and (
                json.loads(m[2])["request_id"] == request_id
            )

        _, _, payload = self.sub.wait_for(match, 120)
        reply: dict[str, Any] = json.loads(payload)
        return reply


@pytest.mark.slow
def test_commands_follow_the_api_roles_and_run_the_api_actions(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    candidate = resealed(tmp_path, "loose", 0.95)
    client = Client(mosquitto)
    runtime = StationRuntime(load_station(_station_file(tmp_path, mosquitto)))
    try:
        with runtime:
            runtime.model_registry().add(SLOT, candidate, "ada")
            client.wait_online()

            # Recipe select: the operator permission, as POST /station/recipe.
            denied = client.ask("recipe_select", tokens["quinn"], number=2)
            assert denied["ok"] is False
            assert "role qa, which may not operate" in denied["error"]
            assert (
                client.ask("recipe_select", "ci_0123456789ab_" + "x" * 43, number=2)["error"]
                == "invalid API token"
            )
            assert "missing API token" in client.ask("recipe_select", None, number=2)["error"]
            assert runtime.active_recipe == 1
            done = client.ask("recipe_select", tokens["otto"], number=2, request_id="sel-2")
            assert done["ok"] is True, done
            assert (done["result"], done["by"], done["station_id"]) == (
                {"number": 2, "code": "NONE"},
                "otto",
                "cell-7",
            )
            assert runtime.active_recipe == 2
            missing = client.ask("recipe_select", tokens["ada"], number=99)
            assert "recipe 99 not selected: RECIPE_NOT_FOUND" in missing["error"]

            # A redelivered request is answered again, not run again.
            assert client.ask("recipe_select", tokens["otto"], number=1, request_id="sel-1")["ok"]
            assert client.ask("recipe_select", tokens["otto"], number=2)["ok"]
            again = client.ask("recipe_select", tokens["otto"], number=1, request_id="sel-1")
            assert again["ok"] is True and runtime.active_recipe == 2

            # A software trigger over MQTT: a part judged and stored as the API's would be.
            part = client.ask("trigger", tokens["otto"], part_id=77)
            assert part["ok"] is True, part
            assert part["result"]["part_id"] == 77
            assert part["result"]["verdict"] in ("pass", "fail", "review")

            # Bad input: fields, JSON, no request id, an unknown command.
            extra = client.ask("recipe_select", tokens["otto"], number=1, force=True)
            assert "force" in extra["error"] and "bad fields" in extra["error"]
            assert "number" in client.ask("recipe_select", tokens["otto"], number="two")["error"]
            client.send("recipe_select", b"{not json")
            assert client.reply_to("recipe_select", None)["error"] == "payload is not JSON"
            client.send("trigger", json.dumps({"token": tokens["otto"]}).encode())
            assert "request_id" in client.reply_to("trigger", None)["error"]
            unknown = client.ask("self_destruct", tokens["ada"])
            assert "unknown command 'self_destruct'" in unknown["error"]

            # Promote: admin only, as POST /models/{slot}/versions/{version}/promote; the
            # same gate refuses without a shadow report, and an override goes through.
            by_operator = client.ask("promote", tokens["otto"], slot=SLOT, version="loose")
            assert "role operator; this needs admin" in by_operator["error"]
            gated = client.ask("promote", tokens["ada"], slot=SLOT, version="loose")
            assert gated["ok"] is False and "no shadow report" in gated["error"]
            promoted = client.ask(
                "promote",
                tokens["ada"],
                slot=SLOT,
                version="loose",
                override_reason="checked offline",
            )
            assert promoted["ok"] is True, promoted
            assert promoted["result"]["live"] == "loose" and promoted["result"]["swapped"]
            live = {
                v.slot: v.version
                for v in runtime.model_registry().versions()
                if v.state.value == "live"
            }
            assert live[SLOT] == "loose"
            back = client.ask("rollback", tokens["ada"], slot=SLOT, reason="undo")
            assert back["ok"] is True and back["result"]["live"] == "1", back
    finally:
        client.sub.close()
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "MQTT command recipe_select" in messages  # the commands are logged ...
    assert not [t for t in tokens.values() if t in messages]  # ... never their tokens
    assert not [
        t
        for t in tokens.values()
        if t in "\n".join(m[2] for m in client.sub.messages if m[1].endswith("/reply"))
    ]


def test_commands_are_off_by_default(tmp_path: Path) -> None:
    base = {"station_id": "s1", "recipes": {1: str(ROOT / "recipes" / "flange.yaml")}}
    parsed = parse_station({**base, "mqtt": {"enabled": True}}, tmp_path / "s.yaml")
    assert parsed.mqtt.commands.enabled is False
