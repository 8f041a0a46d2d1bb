"""The station's MQTT link: results and alarms through the outbox, state and metrics live.

Why a publisher thread: the job path only writes the outbox (plant/mqtt_outbox.py); this
thread sends the oldest messages with QoS 1 and deletes them once the broker acknowledged
them, so a slow or absent broker never delays a part. paho's network thread reconnects with
a doubling delay (reconnect_min_s .. reconnect_max_s). After a reconnect the unacknowledged
messages go out again from the outbox: delivery is at least once, and `result_id` /
`event_id` let a consumer keep each message exactly once. `seq` (the outbox sequence) gives
the order.

The retained `state` topic says "online" after every connect; the last will, set at
connect, makes the broker say "offline" when the station dies or its network goes. A clean
stop publishes "offline" itself. Alarms are the station's alarm lines (runtime.alarms()),
read every half second: a new code is an alarm raised, a code gone is an alarm cleared.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cellinspect.entities import InspectionResult
from cellinspect.plant.mqtt_commands import MqttCommands
from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.mqtt_connection import MqttConnection, configure
from cellinspect.plant.mqtt_outbox import MqttOutbox, OutboxMessage
from cellinspect.plant.mqtt_topics import (
    StationIdentity,
    Topics,
    alarm_code,
    alarm_payload,
    metrics_payload,
    result_payload,
    state_payload,
)

log = logging.getLogger(__name__)

WINDOW = 100  # messages in flight at once
POLL_S = 0.5
DRAIN_AT_STOP_S = 5.0

AlarmSource = Callable[[], list[str]]
MetricsSource = Callable[[], dict[str, Any]]


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


class MqttLink:
    """One station's connection to the plant broker; `start()`, then `close()`."""

    def __init__(
        self,
        cfg: MqttConfig,
        who: StationIdentity,
        outbox_path: Path,
        *,
        alarms: AlarmSource | None = None,
        metrics: MetricsSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.who = who
        self.topics = Topics.of(cfg.topic_prefix, who)
        self.outbox = MqttOutbox(outbox_path)
        self._alarms = alarms
        self._metrics = metrics
        self._active: dict[str, str] = {}  # alarm code -> its line
        self.conn = MqttConnection(cfg, log, "MQTT", "results wait in the outbox")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._next_metrics = 0.0
        self.commands: MqttCommands | None = None
        self.client = self._client()

    # ------------------------------------------------------------------ set-up

    def _client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"cellinspect-{self.who.station_id}",
            clean_session=True,
        )
        client.will_set(
            self.topics.state, _dumps(state_payload("offline", self.who)), qos=1, retain=True
        )
        configure(client, cfg)
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    def serve_commands(self, commands: MqttCommands) -> None:
        """Take commands (before `start`): subscribed at every connect, replies at QoS 1."""
        self.commands = commands
        commands.publish = lambda topic, payload: self._publish_reply(topic, payload)
        self.client.message_callback_add(
            commands.topic_filter, lambda _c, _u, msg: commands.submit(msg.topic, msg.payload)
        )
        commands.start()

    def _publish_reply(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)

    def start(self) -> MqttLink:
        """Connect in the background (the station runs whether the broker answers or not)."""
        cfg = self.cfg
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        log.info(
            "MQTT: publishing to %s:%d under %s/ (%d message(s) waiting in the outbox)",
            cfg.host,
            cfg.port,
            self.topics.base,
            self.outbox.backlog,
        )
        return self

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        del userdata, flags, props

        def ready() -> None:
            if self.commands is not None:  # a clean session forgets subscriptions: every
                client.subscribe(self.commands.topic_filter, qos=1)  # connect, before "online"
            client.publish(
                self.topics.state, _dumps(state_payload("online", self.who)), qos=1, retain=True
            )

        if self.conn.answered(reason, ready):
            self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        del client, userdata
        self.conn.connect_failed()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        del client, userdata, flags, props
        self.conn.disconnected(reason)

    @property
    def connects(self) -> int:
        return self.conn.connects

    @property
    def last_error(self) -> str | None:
        return self.conn.last_error

    # ------------------------------------------------------------------ the result path

    def result(self, result: InspectionResult) -> bool:
        """Queue a result (durable on return; False: already queued or sent)."""
        payload = _dumps(result_payload(result, self.who))
        fresh = self.outbox.add(self.topics.result, payload, result.result_id)
        self._wake.set()
        return fresh

    # ------------------------------------------------------------------ publisher thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_alarms()
                if self.conn.connected:
                    self._send_metrics()
                    if self._send_batch():
                        continue  # more may be waiting
            except Exception:  # the link must never die of one bad message
                log.exception("MQTT: publisher step failed")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _send_batch(self, timeout_s: float | None = None) -> bool:
        """Send the oldest messages, wait for their PUBACKs; True when all were acknowledged."""
        batch = self.outbox.peek(WINDOW)
        if not batch:
            return False
        sent: list[tuple[OutboxMessage, mqtt.MQTTMessageInfo]] = []
        for msg in batch:
            info = self.client.publish(msg.topic, _with_seq(msg), qos=self.cfg.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            sent.append((msg, info))
        end = time.monotonic() + (timeout_s or self.cfg.ack_timeout_s)
        acked: list[int] = []
        for msg, info in sent:
            try:
                info.wait_for_publish(max(end - time.monotonic(), 0.0))
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            acked.append(msg.seq)
        self.outbox.done(acked)
        return bool(acked) and len(acked) == len(batch)

    def _check_alarms(self) -> None:
        if self._alarms is None:
            return
        now = {alarm_code(line): line for line in self._alarms()}
        raised = [c for c in now if c not in self._active]
        cleared = [c for c in self._active if c not in now]
        for code in raised:
            self._queue_alarm(code, now[code], True)
        for code in cleared:
            self._queue_alarm(code, self._active[code], False)
        self._active = now

    def _queue_alarm(self, code: str, text: str, active: bool) -> None:
        body = alarm_payload(code, text, active, self.who)
        self.outbox.add(self.topics.alarm, _dumps(body), str(body["event_id"]))

    def _send_metrics(self) -> None:
        if self._metrics is None or time.monotonic() < self._next_metrics:
            return
        self._next_metrics = time.monotonic() + self.cfg.metrics_every_s
        values = {**self._metrics(), "mqtt_backlog": self.outbox.backlog}
        self.client.publish(
            self.topics.metrics, _dumps(metrics_payload(values, self.who)), qos=0, retain=True
        )

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        return "connected" if self.conn.connected else "disconnected"

    def snapshot(self) -> dict[str, Any]:
        """For the status links and the metrics collector."""
        return {
            "state": self.state,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "backlog": self.outbox.backlog,
            "queued": self.outbox.added,
            "sent": self.outbox.sent,
            "connects": self.conn.connects,
            "outages": self.conn.outages,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ stop

    def close(self, drain_s: float = DRAIN_AT_STOP_S) -> None:
        """Send what waits (bounded), say 'offline' (retained) and disconnect; what is
        still in the outbox goes out at the next start."""
        if self._closed:
            return
        self._stop.set()
        self.conn.stopping()
        self._wake.set()
        if self.commands is not None:
            self.client.message_callback_remove(self.commands.topic_filter)
            self.commands.close()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.ack_timeout_s + 5)
        end = time.monotonic() + drain_s
        try:
            self._check_alarms()
            while self.conn.connected and time.monotonic() < end:
                sent_all = self._send_batch(max(end - time.monotonic(), 0.1))
                if not sent_all and self.outbox.backlog == 0:
                    break
            if self.conn.connected:
                info = self.client.publish(
                    self.topics.state,
                    _dumps(state_payload("offline", self.who)),
                    qos=1,
                    retain=True,
                )
                info.wait_for_publish(2.0)
        except (RuntimeError, ValueError):
            log.warning("MQTT: the 'offline' state could not be published at stop")
        finally:
            self._closed = True
            left = self.outbox.backlog
            if left:
                log.warning("MQTT: %d message(s) stay in the outbox for the next start", left)
            self.client.disconnect()
            self.client.loop_stop()
            self.outbox.close()


def _with_seq(msg: OutboxMessage) -> str:
    body = json.loads(msg.payload)
    body["seq"] = msg.seq
    return _dumps(body)
