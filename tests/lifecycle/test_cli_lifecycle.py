"""`cellinspect models versions|add|shadow|promote|rollback`: offline on a stopped station's
store, and through the API of a running one (token from CELLINSPECT_API_TOKEN)."""

from __future__ import annotations

import getpass
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect.cli.root import app
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.users import Role, add_user
from tests.lifecycle.test_registry import resealed
from tests.station.runner import write_station

SLOT = "flange-anomaly"


def cli(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(app, list(args))
    return out.exit_code, out.output


def events(data_dir: Path, slot: str = SLOT) -> list[tuple[str, str, str, str]]:
    """A slot's audit rows, read with plain sqlite3 (not through the code under test)."""
    with sqlite3.connect(data_dir / "results.db") as db:
        rows = db.execute(
            "SELECT version, action, to_state, actor FROM model_events WHERE slot = ? ORDER BY id",
            (slot,),
        )
        return [tuple(r) for r in rows]


def test_offline_add_promote_rollback_as_the_given_actor(tmp_path: Path) -> None:
    station = write_station(tmp_path / "station.yaml")
    data_dir = tmp_path / "data"
    package = resealed(tmp_path, "wide", 0.95)
    offline = ("--station", str(station), "--offline")

    code, out = cli("models", "add", SLOT, str(package), *offline, "--actor", "ann")
    assert code == 0, out
    assert "flange-anomaly@wide: candidate" in out
    code, out = cli("models", "promote", SLOT, "wide", *offline, "--actor", "ada")
    assert code == 1 and "no shadow report" in out and "override" in out
    code, out = cli("models", "shadow", SLOT, "nope", *offline)
    assert code == 1 and "no version 'nope'" in out
    code, out = cli(
        "models", "promote", SLOT, "wide", *offline, "--actor", "ada", "--override", "trial"
    )
    assert code == 0, out
    assert "wide is live" in out and "at the next start" in out
    code, out = cli("models", "versions", *offline)
    assert code == 0 and "wide" in out and "retired" in out
    code, out = cli("models", "rollback", SLOT, *offline, "--actor", "ada", "--reason", "undo")
    assert code == 0 and "1 is live" in out, out
    code, out = cli("models", "add", SLOT, str(resealed(tmp_path, "w2", 0.9)), *offline)
    assert code == 0, out
    code, out = cli("models", "retire", SLOT, "w2", *offline, "--actor", "ann", "--reason", "x")
    assert code == 0 and "flange-anomaly@w2: retired" in out, out
    code, out = cli("models", "retire", SLOT, "1", *offline)
    assert code == 1 and "is live: cannot go retired" in out
    assert events(data_dir) == [
        ("1", "register", "live", "station"),
        ("wide", "add", "candidate", "ann"),
        ("1", "promote", "retired", "ada"),
        ("wide", "promote", "live", "ada"),
        ("wide", "rollback", "retired", "ada"),
        ("1", "rollback", "live", "ada"),
        ("w2", "add", "candidate", getpass.getuser()),
        ("w2", "retire", "retired", "ann"),
    ]
    assert events(data_dir, "flange-classifier") == [("1", "register", "live", "station")]
    # the existing `models` listing and its subcommands still work beside the new ones
    code, out = cli("models")
    assert code == 0 and "flange-anomaly/1" in out


@pytest.mark.slow
def test_online_commands_go_through_the_api_as_the_tokens_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    admin = add_user(data_dir / "users.yaml", "ada", Role.ADMIN)
    viewer = add_user(data_dir / "users.yaml", "vera", Role.VIEWER)
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    station = write_station(
        tmp_path / "station.yaml", api={"enabled": True, "host": "127.0.0.1", "port": 0}
    )
    package = resealed(tmp_path, "wide", 0.95)
    with StationRuntime(load_station(station)) as runtime:
        assert runtime.api is not None
        url = ("--station", str(station), "--url", runtime.api.url)
        code_anon, out_anon = cli("models", "versions", *url)
        monkeypatch.setenv("CELLINSPECT_API_TOKEN", viewer)
        code_list, out_list = cli("models", "versions", *url)
        code_denied, out_denied = cli("models", "add", SLOT, str(package), *url)
        monkeypatch.setenv("CELLINSPECT_API_TOKEN", admin)
        code_add, out_add = cli("models", "add", SLOT, str(package), *url)
        code_shadow, out_shadow = cli("models", "shadow", SLOT, "wide", *url)
        shadowing = (runtime.shadow.slot, runtime.shadow.version) if runtime.shadow else None
        code_up, out_up = cli("models", "promote", SLOT, "wide", *url, "--override", "trial")
        live = runtime.live_models[SLOT]
        shadow_after = runtime.shadow
    assert code_anon == 1 and "401" in out_anon and "CELLINSPECT_API_TOKEN" in out_anon
    assert admin not in out_anon + out_denied  # no secret printed
    assert code_list == 0 and "flange-anomaly" in out_list and "live" in out_list
    assert code_denied == 1 and "403" in out_denied and "has role viewer" in out_denied
    assert code_add == 0, out_add
    assert code_shadow == 0 and "flange-anomaly@wide: shadow" in out_shadow, out_shadow
    assert shadowing == (SLOT, "wide")  # the running station judges it beside the live model
    assert code_up == 0 and "hot swapped" in out_up, out_up
    assert shadow_after is None  # promoting the shadowed version ends its shadow run
    assert live.parent == data_dir.resolve() / "models" / SLOT / "wide"
    assert events(data_dir)[-1] == ("wide", "promote", "live", "ada")
