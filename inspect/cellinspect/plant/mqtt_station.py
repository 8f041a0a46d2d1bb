"""Wiring of the MQTT link into a running station (ids, outbox place, alarms, metrics).

Why apart from runtime.py: the runtime only calls `start_mqtt` when `mqtt.enabled`, so a
station without a broker never imports paho. With `mqtt.commands.enabled` it also builds the
commands, each calling what its HTTP route calls, under the route's role rule.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import Field

from cellinspect.api.errors import scrub_with
from cellinspect.api.routers.lifecycle import PromoteIn, RollbackIn
from cellinspect.api.routers.station_control import RecipeSelectIn, TriggerIn
from cellinspect.errors import CellInspectError
from cellinspect.lifecycle import promotion
from cellinspect.plant.mqtt_commands import Command, CommandError, MqttCommands, for_roles, operate
from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity
from cellinspect.users import Authenticator, Identity, Role

if TYPE_CHECKING:
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

OUTBOX_FILE = "mqtt-outbox.sqlite"


def identity(runtime: StationRuntime) -> StationIdentity:
    st = runtime.station
    return StationIdentity(station_id=st.station_id, site=st.site, area=st.area, line=st.line)


def _metrics(runtime: StationRuntime) -> dict[str, Any]:
    counts = runtime.counts
    pending = runtime.journal.pending if runtime.journal is not None else None
    return {
        "parts": counts.parts,
        "verdicts": {v.value: n for v, n in counts.verdicts.items()},
        "errors": counts.errors,
        "recipe": runtime.active_recipe,
        "journal_pending": pending,
        "results_lost": runtime.results_lost,
        "alarms": len(runtime.alarms()),
    }


class PromoteCommandIn(PromoteIn):
    """POST /models/{slot}/versions/{version}/promote: the path's fields, then the body's."""

    slot: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)


class RollbackCommandIn(RollbackIn):
    """POST /models/{slot}/rollback."""

    slot: str = Field(min_length=1, max_length=128)


def _change(change: promotion.Change) -> dict[str, Any]:
    return {
        "slot": change.slot,
        "live": change.live.version,
        "retired": change.retired.version,
        "swapped": change.swapped,
    }


def station_commands(runtime: StationRuntime) -> dict[str, Command]:
    """The commands, each the call its HTTP route makes (station_control.py, lifecycle.py)."""

    def lifecycle_call(fn: Any, *args: Any, **kwargs: Any) -> promotion.Change:
        try:
            change: promotion.Change = fn(runtime.model_registry(), *args, **kwargs)
        except CellInspectError as err:  # LifecycleError (a 409) or a package problem (422)
            text = str(err) if runtime.settings is None else scrub_with(runtime.settings, str(err))
            raise CommandError(text) from err
        return change

    def recipe_select(_: Identity, args: RecipeSelectIn) -> dict[str, Any]:
        code = runtime.select_recipe(args.number)
        name = getattr(code, "name", str(code))
        if name != "NONE":
            raise CommandError(f"recipe {args.number} not selected: {name}")
        return {"number": args.number, "code": name}

    def trigger(_: Identity, args: TriggerIn) -> dict[str, Any]:
        try:
            inspected = runtime.trigger(args.part_id, "mqtt")
        except RuntimeError as err:  # StationBusyError: not ready within the wait
            raise CommandError(f"station not ready: {err}") from err
        result = inspected.result
        return {
            "result_id": result.result_id,
            "part_id": result.part_id,
            "verdict": result.verdict.value,
        }

    def promote(user: Identity, args: PromoteCommandIn) -> dict[str, Any]:
        return _change(
            lifecycle_call(
                promotion.promote,
                args.slot,
                args.version,
                user.name,
                station=runtime,
                min_reviewed=args.min_reviewed,
                override_reason=args.override_reason,
            )
        )

    def rollback(user: Identity, args: RollbackCommandIn) -> dict[str, Any]:
        return _change(
            lifecycle_call(promotion.rollback, args.slot, user.name, args.reason, station=runtime)
        )

    admin = (Role.ADMIN,)  # lifecycle.py's `Admin` dependency
    return {
        c.name: c
        for c in (
            operate("recipe_select", RecipeSelectIn, recipe_select),
            operate("trigger", TriggerIn, trigger),
            for_roles("promote", admin, PromoteCommandIn, promote),
            for_roles("rollback", admin, RollbackCommandIn, rollback),
        )
    }


def _commands(runtime: StationRuntime, link: MqttLink) -> MqttCommands:
    """Tokens are checked against the users file the station's HTTP API reads."""
    settings = runtime.settings
    auth = (
        None
        if settings is None
        else Authenticator(settings.resolved_users_file, settings.token_value())
    )
    if auth is None or not auth.configured:
        log.warning("MQTT commands: no API users or token configured, every command is refused")
    return MqttCommands(station_commands(runtime), auth, link.topics.base, link.who.station_id)


def start_mqtt(runtime: StationRuntime) -> MqttLink:
    """The outbox lives in the store's data_dir (beside the journal) and survives restarts."""
    data_dir = (
        runtime.settings.data_dir
        if runtime.settings is not None
        else runtime.station.store.data_dir
    )
    link = MqttLink(
        runtime.station.mqtt,
        identity(runtime),
        data_dir / OUTBOX_FILE,
        alarms=runtime.alarms,
        metrics=lambda: _metrics(runtime),
    )
    # Journaled results not yet stored at the last stop: queued unless the outbox has them.
    recovered = sum(link.result(r) for r in runtime.mqtt_recovered)
    runtime.mqtt_recovered = []
    if recovered:
        log.warning("MQTT: %d journaled result(s) recovered into the outbox", recovered)
    if runtime.station.mqtt.commands.enabled:
        commands = _commands(runtime, link)
        link.serve_commands(commands)
        log.info("MQTT: commands on %s", commands.topic_filter)
    return link.start()
