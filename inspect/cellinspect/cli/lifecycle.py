"""`cellinspect models versions|audit|add|shadow|retire|promote|rollback`: the model lifecycle.

By default each command talks to the running station through its API (the URL from the
station file's `api` section, or `--url`; the token from CELLINSPECT_API_TOKEN), so a
promotion is a hot swap. `--offline` edits the registry of a stopped station directly (as the
OS user, or `--actor`); the station loads the live versions at its next start.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cellinspect.cli.support import console, fail, user_errors
from cellinspect.lifecycle import promotion
from cellinspect.lifecycle.registry import ModelRegistry, State

TOKEN_ENV = "CELLINSPECT_API_TOKEN"

StationOpt = Annotated[
    Path, typer.Option("--station", help="The station file (API address, store, recipes).")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Edit the registry of a stopped station directly.")
]
ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who (offline; default: the OS user).")
]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="The station API (default: from the station file).")
]
SlotArg = Annotated[str, typer.Argument(help="Model slot: the model's name in the recipe.")]
VersionArg = Annotated[str, typer.Argument(help="Registered version.")]


# ------------------------------------------------------------------ offline: the store itself


@contextmanager
def offline_registry(station_path: Path) -> Iterator[tuple[ModelRegistry, Any]]:
    """The stopped station's registry, with each live-recipe slot's first version registered."""
    from cellinspect.settings import load_settings
    from cellinspect.station.catalog import RecipeCatalog
    from cellinspect.station.config import load_station
    from cellinspect.storage.factory import open_store

    station = load_station(station_path)
    overrides: dict[str, Any] = {"data_dir": station.store.data_dir}
    if station.store.url is not None:
        overrides["db_url"] = station.store.url
    settings = load_settings(station.store.settings, **overrides)
    catalog = RecipeCatalog.load(station.recipes, str(station_path))
    store = open_store(settings)
    try:
        registry = promotion.registry_for(store.engine, settings.data_dir)
        for model in catalog[station.active_recipe].recipe.models:
            registry.ensure_live(model.name, model.path)
        yield registry, station
    finally:
        store.close()


def _actor(actor: str | None) -> str:
    return actor or getpass.getuser()


def _keys(station: Any) -> Any:
    from cellinspect.inference.manifest import load_public_keys

    return load_public_keys(station.trusted_model_keys) if station.trusted_model_keys else None


# ------------------------------------------------------------------ online: the API


def api_url(station_path: Path, url: str | None) -> str:
    if url is not None:
        return url.rstrip("/")
    from cellinspect.station.config import load_station

    api = load_station(station_path).api
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
    return f"http://{host}:{api.port}"


def call(method: str, station_path: Path, url: str | None, path: str, **kwargs: Any) -> Any:
    """One API request; a clear error (never the token) when it fails."""
    token = os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = api_url(station_path, url)
    try:
        reply = httpx.request(method, f"{base}{path}", headers=headers, timeout=300, **kwargs)
    except httpx.HTTPError as err:
        raise fail(
            f"{base}: station API not reachable ({type(err).__name__}); is `cellinspect run` "
            "up? (use --offline for a stopped station)"
        ) from err
    if reply.status_code >= 400:
        try:
            body = reply.json()
            detail = body.get("message") or body.get("detail") or reply.text
        except (ValueError, AttributeError):
            detail = reply.text
        hint = f" (set {TOKEN_ENV})" if reply.status_code == 401 else ""
        raise fail(f"{method} {path}: {reply.status_code}: {detail}{hint}")
    return reply.json()


# ------------------------------------------------------------------ output


def versions_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="model versions", show_header=True)
    for name in ("slot", "version", "state", "sha256", "by", "updated"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            r["slot"], r["version"], r["state"], r["sha256"][:12], r["created_by"], r["updated_at"]
        )
    return table


def audit_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="model lifecycle audit", show_header=True)
    for name in ("at", "slot", "version", "action", "from", "to", "actor", "reason"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            str(r["at"]),
            r["slot"],
            r["version"],
            r["action"],
            r["from_state"] or "-",
            r["to_state"],
            r["actor"],
            r["reason"],
        )
    return table


def _dump(obj: Any) -> dict[str, Any]:
    """A registry dataclass as the API's JSON would give it (enums, paths, times as text)."""
    from dataclasses import asdict
    from datetime import datetime

    def plain(value: Any) -> Any:
        if isinstance(value, State):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return {k: plain(v) for k, v in asdict(obj).items()}


def _said(change: dict[str, Any]) -> None:
    how = "hot swapped on the running station" if change.get("swapped") else "at the next start"
    console.print(
        f"{change['slot']}: {change['live']['version']} is live "
        f"({change['live']['sha256'][:12]}), {change['retired']['version']} retired; {how}"
    )


def _offline_change(change: promotion.Change) -> dict[str, Any]:
    """A promote or rollback done offline, shaped as the API answers it (nothing swapped)."""
    return {
        "slot": change.slot,
        "live": _dump(change.live),
        "retired": _dump(change.retired),
        "swapped": False,
    }


# ------------------------------------------------------------------ commands


def versions_cmd(
    slot: Annotated[str | None, typer.Argument(help="Only this slot.")] = None,
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    url: UrlOpt = None,
) -> None:
    """Registered model versions per slot and their state."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            rows = [_dump(v) for v in registry.versions(slot)]
    else:
        rows = call("GET", station, url, "/models/versions", params={"slot": slot} if slot else {})
    console.print(versions_table(rows))


def audit_cmd(
    slot: Annotated[str | None, typer.Argument(help="Only this slot.")] = None,
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    url: UrlOpt = None,
) -> None:
    """Who changed which model version, when and why."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            rows = [_dump(e) for e in registry.audit(slot)]
    else:
        rows = call("GET", station, url, "/models/audit", params={"slot": slot} if slot else {})
    console.print(audit_table(rows))


def add_cmd(
    slot: SlotArg,
    package: Annotated[Path, typer.Argument(help="Sealed package folder (model.onnx + manifest).")],
    version: Annotated[
        str | None, typer.Option("--version", help="Version name (default: the manifest's).")
    ] = None,
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    actor: ActorOpt = None,
    url: UrlOpt = None,
) -> None:
    """Register a sealed package as a candidate (copied and verified; admin)."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, st):
            row = _dump(
                registry.add(slot, package, _actor(actor), version=version, trusted_keys=_keys(st))
            )
    else:
        body = {"path": str(package.resolve()), "version": version}
        row = call("POST", station, url, f"/models/{slot}/versions", json=body)
    console.print(f"{row['slot']}@{row['version']}: {row['state']} ({row['sha256'][:12]})")


def shadow_cmd(
    slot: SlotArg,
    version: VersionArg,
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    actor: ActorOpt = None,
    url: UrlOpt = None,
) -> None:
    """Judge every part with this version beside the live model (qa, admin)."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            row = _dump(promotion.shadow(registry, slot, version, _actor(actor)))
    else:
        row = call("POST", station, url, f"/models/{slot}/versions/{version}/shadow")
    console.print(f"{row['slot']}@{row['version']}: {row['state']}")


def retire_cmd(
    slot: SlotArg,
    version: VersionArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit).")] = "",
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    actor: ActorOpt = None,
    url: UrlOpt = None,
) -> None:
    """Give up a candidate or shadow version (admin)."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            row = _dump(promotion.retire(registry, slot, version, _actor(actor), reason))
    else:
        path = f"/models/{slot}/versions/{version}/retire"
        row = call("POST", station, url, path, json={"reason": reason})
    console.print(f"{row['slot']}@{row['version']}: {row['state']}")


def promote_cmd(
    slot: SlotArg,
    version: VersionArg,
    override: Annotated[
        str | None, typer.Option("--override", help="Admin's reason to skip a failing gate.")
    ] = None,
    min_reviewed: Annotated[
        int, typer.Option(help="QA-reviewed compared parts the gate needs.")
    ] = promotion.DEFAULT_MIN_REVIEWED,
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    actor: ActorOpt = None,
    url: UrlOpt = None,
) -> None:
    """Make a version live after the gate (admin); a running station swaps between parts."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            change = promotion.promote(
                registry,
                slot,
                version,
                _actor(actor),
                min_reviewed=min_reviewed,
                override_reason=override,
            )
            data = _offline_change(change)
    else:
        body = {"override_reason": override, "min_reviewed": min_reviewed}
        data = call("POST", station, url, f"/models/{slot}/versions/{version}/promote", json=body)
    _said(data)


def rollback_cmd(
    slot: SlotArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit).")] = "",
    station: StationOpt = Path("station.yaml"),
    offline: OfflineOpt = False,
    actor: ActorOpt = None,
    url: UrlOpt = None,
) -> None:
    """Return the slot to the version live before this one (admin)."""
    if offline:
        with user_errors(), offline_registry(station) as (registry, _):
            change = promotion.rollback(registry, slot, _actor(actor), reason)
            data = _offline_change(change)
    else:
        data = call("POST", station, url, f"/models/{slot}/rollback", json={"reason": reason})
    _said(data)


def register(models_app: typer.Typer) -> None:
    """Add the lifecycle commands to the `models` group."""
    models_app.command("versions")(versions_cmd)
    models_app.command("audit")(audit_cmd)
    models_app.command("add")(add_cmd)
    models_app.command("shadow")(shadow_cmd)
    models_app.command("retire")(retire_cmd)
    models_app.command("promote")(promote_cmd)
    models_app.command("rollback")(rollback_cmd)
