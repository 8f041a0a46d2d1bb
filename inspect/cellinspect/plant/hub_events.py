"""The hub's live events: every station's results, state and alarms, read from the broker.

Why a subscriber on the hub: the forwarder delivers rows in batches (seconds behind, hours
after an outage), while the broker has each result the moment it is judged. The hub
subscribes to `<prefix>/+/+/+/+/{result,state,alarm}` and republishes each message into the
app's EventBroker, so GET /events on the hub streams them (kinds `result`, `state`, `alarm`,
each with the station's site, area, line and station_id).

Delivery is at least once (QoS 1, a persistent session that the broker keeps while the hub
reconnects); a result or alarm seen again (a station resending after a reconnect) is passed
on once, by `result_id` / `event_id` among the last DEDUP_WINDOW. A message that is not a
station's JSON is dropped and logged once per topic (the reason, never the payload); it never
stops the subscriber. paho's network thread reconnects with a doubling delay; the outage
bookkeeping is plant/mqtt_connection.py's, shared with the station's link. The counters are
in `snapshot()` and, once `register`ed, on the hub's GET /metrics (`cellinspect_hub_mqtt_*`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cellinspect.api.events import EventBroker
from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.mqtt_connection import MqttConnection, configure
from cellinspect.plant.mqtt_topics import SCHEMA_VERSION, UNSET

log = logging.getLogger(__name__)

KINDS = ("result", "state", "alarm")
DEDUP_WINDOW = 10_000
WARNED_TOPICS_MAX = 1_000
_LEVELS = 5  # site, area, line, station, kind under the prefix
_IDS = ("site", "area", "line", "station_id")


class MalformedMessageError(ValueError):
    """A message on a station topic that is not a station's message (the reason only)."""


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedMessageError(f"field {key!r} is not a non-empty string")
    return value


def _score(rois: Any) -> float | None:
    """The highest anomaly score over the ROIs, as InspectionResult.score has it."""
    if not isinstance(rois, list):
        return None
    values = [
        float(v)
        for roi in rois
        if isinstance(roi, dict) and isinstance(roi.get("scores"), dict)
        for k, v in roi["scores"].items()
        if k.endswith(":anomaly") and isinstance(v, int | float)
    ]
    return max(values) if values else None


def hub_event(topic: str, payload: bytes, prefix: str) -> tuple[str, dict[str, Any]]:
    """(kind, event data) of one station message; MalformedMessageError says why not."""
    base = prefix.rstrip("/").split("/")
    levels = topic.split("/")
    if len(levels) != len(base) + _LEVELS or levels[: len(base)] != base:
        raise MalformedMessageError("not a station topic under the prefix")
    kind = levels[-1]
    if kind not in KINDS:
        raise MalformedMessageError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedMessageError("payload is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise MalformedMessageError("payload is not a JSON object")
    if body.get("schema") != SCHEMA_VERSION:
        raise MalformedMessageError(f"schema is not {SCHEMA_VERSION}")
    if body.get("kind") != kind:
        raise MalformedMessageError("payload kind does not match the topic")
    data: dict[str, Any] = {key: _text(body, key) for key in _IDS}
    data["station_id"] = _text(body, "station_id", required=True)
    for key, level in zip(_IDS[:3], levels[len(base) : len(base) + 3], strict=True):
        if data[key] is None and level != UNSET:  # a result carries no area, say: the path has it
            data[key] = level
    if kind == "result":
        data.update(
            id=_text(body, "result_id", required=True),
            verdict=_text(body, "verdict", required=True),
            defect_class=_text(body, "defect_class"),
            score=_score(body.get("rois")),
            captured_wall=_text(body, "captured_wall"),
            part_id=body.get("part_id") if isinstance(body.get("part_id"), int) else None,
            reasons=[r for r in body.get("reasons") or [] if isinstance(r, str)],
            seq=body.get("seq") if isinstance(body.get("seq"), int) else None,
        )
    elif kind == "state":
        data.update(state=_text(body, "state", required=True), at=_text(body, "at"))
    else:
        if not isinstance(body.get("active"), bool):
            raise MalformedMessageError("field 'active' is not true or false")
        data.update(
            event_id=_text(body, "event_id", required=True),
            code=_text(body, "code", required=True),
            text=_text(body, "text"),
            active=body["active"],
            at=_text(body, "at"),
        )
    return kind, data


class HubEvents:
    """The hub's MQTT subscriber; `start()`, then `close()`. Counters for `snapshot()`."""

    def __init__(self, cfg: MqttConfig, events: EventBroker) -> None:
        self.cfg = cfg
        self.events = events
        self.filters = [f"{cfg.topic_prefix.rstrip('/')}/+/+/+/+/{kind}" for kind in KINDS]
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.conn = MqttConnection(cfg, log, "hub events", "reconnecting")
        self._closed = False
        self.received = 0
        self.published = 0
        self.duplicates = 0
        self.dropped = 0
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"cellinspect-hub-{socket.gethostname()}"[:128],
            clean_session=False,  # the broker keeps QoS 1 messages while the hub reconnects
        )
        configure(client, cfg)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self) -> HubEvents:
        """Connect in the background: the hub serves whether the broker answers or not."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        log.info(
            "hub events: subscribing at %s:%d to %s",
            self.cfg.host,
            self.cfg.port,
            ", ".join(self.filters),
        )
        return self

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        del userdata, flags, props
        self.conn.answered(
            reason, lambda: client.subscribe([(f, int(self.cfg.qos)) for f in self.filters])
        )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        del client, userdata
        self.conn.connect_failed()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        del client, userdata, flags, props
        self.conn.disconnected(reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        del client, userdata
        self.received += 1
        try:
            kind, data = hub_event(message.topic, bytes(message.payload), self.cfg.topic_prefix)
        except MalformedMessageError as err:
            self._drop(message.topic, str(err))
            return
        except Exception:  # the subscriber must never die of one message
            log.exception("hub events: a message on %s could not be read", message.topic)
            self.dropped += 1
            return
        key = data.get("id") or data.get("event_id")
        if key is not None and not self._first(f"{kind}:{key}"):
            self.duplicates += 1
            return
        self.events.publish(kind, data)
        self.published += 1

    def _first(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > DEDUP_WINDOW:
                self._seen.popitem(last=False)
            return True

    def _drop(self, topic: str, reason: str) -> None:
        self.dropped += 1
        if topic in self._warned:
            return
        if len(self._warned) < WARNED_TOPICS_MAX:
            self._warned.add(topic)
        log.warning("hub events: dropped a malformed message on %s: %s", topic, reason)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        return "connected" if self.conn.connected else "disconnected"

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "connects": self.conn.connects,
            "outages": self.conn.outages,
            "received": self.received,
            "published": self.published,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "last_error": self.conn.last_error,
        }

    def register(self, registry: CollectorRegistry) -> None:
        """Serve the counters from `registry` (the hub app's, for GET /metrics)."""
        registry.register(_HubEventsCollector(self))

    def wait_connected(self, timeout: float) -> bool:
        return self.conn.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.conn.stopping()
        self.client.disconnect()
        self.client.loop_stop()


class _HubEventsCollector(Collector):
    """The subscriber's counters and link state, read when Prometheus scrapes."""

    def __init__(self, events: HubEvents) -> None:
        self._events = events

    def collect(self) -> Iterator[Metric]:
        ev = self._events
        prefix = "cellinspect_hub_mqtt"
        state = GaugeMetricFamily(
            f"{prefix}_link_state",
            "The hub's MQTT subscriber: 1 for the state it is in, 0 for the others.",
            labels=["state"],
        )
        now = ev.state
        for name in ("connected", "disconnected", "closed"):
            state.add_metric([name], 1.0 if name == now else 0.0)
        yield state
        for name, doc, value in (
            ("received", "Messages on the stations' topics the hub received.", ev.received),
            ("republished", "Messages passed on to GET /events.", ev.published),
            ("reconnects", "Connects to the broker after the first.", ev.conn.reconnects),
            (
                "outages",
                "Times the broker connection was lost or could not be made.",
                ev.conn.outages,
            ),
        ):
            yield CounterMetricFamily(f"{prefix}_{name}", doc, value=value)
        dropped = CounterMetricFamily(
            f"{prefix}_dropped",
            "Messages not passed on: a duplicate (seen among the last ids) or malformed.",
            labels=["reason"],
        )
        dropped.add_metric(["duplicate"], ev.duplicates)
        dropped.add_metric(["malformed"], ev.dropped)
        yield dropped
