"""Commands in over MQTT: `<station topic>/cmd/<name>` in, `<station topic>/cmd/<name>/reply` out.

Why beside the HTTP API rather than instead of it: a plant's MES or SCADA often speaks only
MQTT. The rules are the HTTP API's: the payload carries the user's API token, the station
checks it with the same users file and the same role rule as the route for that action, and
the action runs through the same call the route makes (plant/mqtt_station.py builds them).

A payload is a JSON object: `request_id` (echoed in the reply, and the key that makes a
redelivered message, QoS 1 being at least once, answer again without running twice),
`token`, and the action's own fields, checked like the route's body (unknown fields refused).
Commands run one at a time on a worker thread, never on paho's network thread. The token
never goes into a reply or a log line; what is logged is the command, the request id, the user
and the outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from cellinspect.users import ROLE_PERMISSIONS, Authenticator, Identity, Permission, Role

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 16 * 1024
QUEUE_SIZE = 32
REMEMBERED_REPLIES = 256
Publish = Callable[[str, str], None]


class CommandError(Exception):
    """The command was refused or failed; the message goes into the reply as `error`."""


@dataclass(frozen=True)
class Command:
    """One action: who may run it (the HTTP route's rule), its fields, and the call itself."""

    name: str
    permission: Permission | None  # the route's permission, or None when roles decide
    roles: tuple[Role, ...]  # the route's roles (used when permission is None)
    args: type[BaseModel]
    run: Callable[[Identity, Any], dict[str, Any]]


Runner = Callable[[Identity, Any], dict[str, Any]]


def operate(name: str, args: type[BaseModel], run: Runner) -> Command:
    """A command behind the routes' `operate` permission (operator, admin)."""
    return Command(name, Permission.OPERATE, (), args, run)


def for_roles(name: str, roles: tuple[Role, ...], args: type[BaseModel], run: Runner) -> Command:
    """A command behind a fixed set of roles (the model routes: promote needs admin)."""
    return Command(name, None, roles, args, run)


def authorize(auth: Authenticator | None, token: object, command: Command) -> Identity:
    """The caller, checked as the HTTP API checks it for the same action."""
    if auth is None or not auth.configured:
        raise CommandError(
            "this station has no API credentials configured, so it takes no commands; add a "
            "user with 'cellinspect users add NAME --role ROLE' and restart"
        )
    if not isinstance(token, str) or not token:
        raise CommandError("missing API token: put the user's token in 'token'")
    identity = auth.authenticate(token)
    if identity is None:
        raise CommandError("invalid API token")
    if command.permission is not None:
        if not identity.may(command.permission):
            may = ", ".join(
                r.value for r, allowed in ROLE_PERMISSIONS.items() if command.permission in allowed
            )
            raise CommandError(
                f"user {identity.name!r} has role {identity.role.value}, which may not "
                f"{command.permission.value}; roles that may: {may}"
            )
    elif identity.role not in command.roles:
        raise CommandError(
            f"user {identity.name!r} has role {identity.role.value}; this needs "
            + " or ".join(r.value for r in command.roles)
        )
    return identity


def _fields_error(err: ValidationError) -> str:
    """Which fields are wrong and why, without echoing their values."""
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
        for e in err.errors(include_url=False, include_input=False)
    ]
    return "bad fields: " + "; ".join(parts)


class MqttCommands:
    """Takes command messages from the link, runs them in order, publishes the replies."""

    def __init__(
        self,
        commands: dict[str, Command],
        auth: Authenticator | None,
        base_topic: str,
        station_id: str,
    ) -> None:
        self.commands = commands
        self.auth = auth
        self.base = base_topic
        self.station_id = station_id
        self.publish: Publish | None = None  # set by the link before it starts
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_SIZE)
        self._replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._thread: threading.Thread | None = None
        self.handled = 0

    @property
    def topic_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def reply_topic(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/reply"

    def start(self) -> MqttCommands:
        self._thread = threading.Thread(target=self._run, name="mqtt-commands", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, topic: str, payload: bytes | bytearray) -> None:
        """From paho's network thread: queue the message (a full queue is answered 'busy')."""
        name = topic.rsplit("/", 1)[-1]
        try:
            self._queue.put_nowait((name, bytes(payload)))
        except queue.Full:
            busy = f"station busy: {QUEUE_SIZE} commands already wait; try again"
            self._send(name, self._reply(name, _request_id(payload), error=busy))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, payload = item
            try:
                reply = self.handle(name, payload)
            except Exception as err:  # a bug must not end the command thread
                log.exception("MQTT command %s: unexpected error", name)
                reply = self._reply(name, None, error=f"unexpected error: {type(err).__name__}")
            self._send(name, reply)

    def _send(self, name: str, reply: dict[str, Any]) -> None:
        if self.publish is not None:
            self.publish(self.reply_topic(name), json.dumps(reply, separators=(",", ":")))

    def handle(self, name: str, payload: bytes) -> dict[str, Any]:
        """Check and run one command; the reply (ok with result, or error)."""
        self.handled += 1
        if len(payload) > MAX_PAYLOAD_BYTES:
            return self._reply(name, None, error=f"payload over {MAX_PAYLOAD_BYTES} bytes")
        try:
            body = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._reply(name, None, error="payload is not JSON")
        if not isinstance(body, dict):
            return self._reply(name, None, error="payload must be a JSON object")
        request_id = body.pop("request_id", None)
        token = body.pop("token", None)
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            return self._reply(name, None, error="'request_id' must be a string of 1-128 chars")
        command = self.commands.get(name)
        if command is None:
            known = ", ".join(sorted(self.commands))
            return self._reply(
                name, request_id, error=f"unknown command {name[:64]!r}; known: {known}"
            )
        try:
            identity = authorize(self.auth, token, command)
        except CommandError as err:
            log.warning("MQTT command %s (request %s) refused: %s", name, request_id, err)
            return self._reply(name, request_id, error=str(err))
        seen = self._replies.get(request_id)
        if seen is not None and seen["command"] == name:  # QoS 1 redelivery: not run twice
            log.info("MQTT command %s (request %s): a repeat, answered again", name, request_id)
            return seen
        try:
            args = command.args.model_validate(body)
        except ValidationError as err:
            return self._reply(name, request_id, error=_fields_error(err), by=identity.name)
        try:
            result = command.run(identity, args)
        except CommandError as err:
            log.warning(
                "MQTT command %s (request %s) by %s failed: %s",
                name,
                request_id,
                identity.name,
                err,
            )
            reply = self._reply(name, request_id, error=str(err), by=identity.name)
        else:
            log.info("MQTT command %s (request %s) by %s: ok", name, request_id, identity.name)
            reply = self._reply(name, request_id, result=result, by=identity.name)
        self._remember(request_id, reply)
        return reply

    def _remember(self, request_id: str, reply: dict[str, Any]) -> None:
        self._replies[request_id] = reply
        while len(self._replies) > REMEMBERED_REPLIES:
            self._replies.popitem(last=False)

    def _reply(
        self,
        name: str,
        request_id: str | None,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "request_id": request_id,
            "command": name,
            "ok": error is None,
            "station_id": self.station_id,
            "at": datetime.now(UTC).isoformat(),
        }
        if by is not None:
            reply["by"] = by
        if error is None:
            reply["result"] = result or {}
        else:
            reply["error"] = error
        return reply


def _request_id(payload: bytes | bytearray) -> str | None:
    try:
        value = json.loads(payload).get("request_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
