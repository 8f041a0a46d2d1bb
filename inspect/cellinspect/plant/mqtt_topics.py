"""The station's MQTT topic tree (unified-namespace style) and its JSON payloads.

    <prefix>/<site>/<area>/<line>/<station>/result   one message per result (QoS 1, outbox)
    <prefix>/<site>/<area>/<line>/<station>/alarm    an alarm raised or cleared (QoS 1, outbox)
    <prefix>/<site>/<area>/<line>/<station>/state    "online"/"offline" (retained, last will)
    <prefix>/<site>/<area>/<line>/<station>/metrics  counts and backlog (retained, periodic)

Why ids in the path and in the payload: a plant subscriber filters by path
(`cellinspect/plant-a/+/+/+/result`) and a stored message still says where it came from.
An unset level is `_`; characters MQTT reserves (`/ + #`) become `_` in a level.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cellinspect.entities import InspectionResult

SCHEMA_VERSION = 1
UNSET = "_"
_RESERVED = re.compile(r"[/+#\s\x00]")


def _level(value: str | None) -> str:
    if not value:
        return UNSET
    return _RESERVED.sub("_", value)


@dataclasses.dataclass(frozen=True, slots=True)
class StationIdentity:
    """Where a station stands in the plant, as the station file says."""

    station_id: str
    site: str | None = None
    area: str | None = None
    line: str | None = None

    def ids(self) -> dict[str, str | None]:
        return {
            "site": self.site,
            "area": self.area,
            "line": self.line,
            "station_id": self.station_id,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Topics:
    """The four topics of one station under `prefix`."""

    base: str

    @classmethod
    def of(cls, prefix: str, who: StationIdentity) -> Topics:
        levels = [who.site, who.area, who.line, who.station_id]
        return cls("/".join([prefix.rstrip("/"), *(_level(v) for v in levels)]))

    @property
    def result(self) -> str:
        return f"{self.base}/result"

    @property
    def alarm(self) -> str:
        return f"{self.base}/alarm"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def metrics(self) -> str:
        return f"{self.base}/metrics"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def result_payload(result: InspectionResult, who: StationIdentity) -> dict[str, Any]:
    """A result message: the stored result's fields, the station's ids (area included).

    `seq` (the outbox sequence) is added when the message is sent; `result_id` is the
    consumer's de-duplication key.
    """
    body = result.to_dict()
    body["area"] = who.area  # the result carries station, line and site; area is the file's
    return {"schema": SCHEMA_VERSION, "kind": "result", **body}


def alarm_payload(code: str, text: str, active: bool, who: StationIdentity) -> dict[str, Any]:
    """An alarm raised (`active` true) or cleared; `event_id` is unique per message."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "alarm",
        "event_id": uuid.uuid4().hex,
        **who.ids(),
        "code": code,
        "text": text,
        "active": active,
        "at": _now(),
    }


def state_payload(state: str, who: StationIdentity) -> dict[str, Any]:
    """The retained station state ('online', 'offline'); the last will is 'offline' too."""
    return {"schema": SCHEMA_VERSION, "kind": "state", **who.ids(), "state": state, "at": _now()}


def metrics_payload(values: dict[str, Any], who: StationIdentity) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "kind": "metrics",
        **who.ids(),
        "at": _now(),
        "monotonic_s": round(time.monotonic(), 3),
        **values,
    }


def alarm_code(line: str) -> str:
    """The stable part of an alarm line ('STORE_UNREACHABLE', 'HEALTH_WARN focus')."""
    return line.split(":", 1)[0].strip()
