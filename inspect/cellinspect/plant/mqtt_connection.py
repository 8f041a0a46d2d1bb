"""One MQTT client's connection state: connected or not, its outages, and what to log.

Why one helper: the station's publisher (plant/mqtt_link.py) and the hub's subscriber
(plant/hub_events.py) meet the same broker troubles, and an operator should read them the
same way. paho's network thread retries on its own with a doubling delay, so a broker away
for an hour fails hundreds of times: an outage is logged once, when it starts (a refusal is
logged again only when its reason changes); every connect is logged at info. A log
line names the broker and paho's reason, never the password or a message's payload.

The caller keeps its own work at a connect (subscribe first, then publish "online", ...):
`answered(reason, ready)` runs `ready` before the client counts as connected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from cellinspect.errors import ConfigError
from cellinspect.plant.mqtt_config import MqttConfig

CANNOT_CONNECT = "cannot connect (broker unreachable, or TLS refused)"


def read_password(path: Path) -> str:
    """The first line of the password file (its content never goes into a message or log)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError) as err:
        raise ConfigError(f"{path}: cannot read the MQTT password file") from err


def configure(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Credentials, TLS and the reconnect delay from `cfg`; unreadable files name themselves."""
    if cfg.username is not None:
        password = read_password(cfg.password_file) if cfg.password_file else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        tls = cfg.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
            )
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            files = ", ".join(str(p) for p in (tls.ca, tls.cert, tls.key) if p)
            raise ConfigError(f"{files}: cannot load the MQTT TLS files ({err})") from None
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)


class MqttConnection:
    """Connected/disconnected, connects, outages and the last error of one client.

    `who` starts each log line ("MQTT", "hub events"); `lost` ends the disconnect warning
    (what the caller does meanwhile, e.g. "results wait in the outbox").
    """

    def __init__(self, cfg: MqttConfig, log: logging.Logger, who: str, lost: str) -> None:
        self.broker = f"{cfg.host}:{cfg.port}"
        self._log = log
        self._who = who
        self._lost = lost
        self._up = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self.connects = 0  # CONNACKs accepted; reconnects are connects - 1
        self.outages = 0  # times the client went from working (or starting) to failing
        self.last_error: str | None = None

    # ------------------------------------------------------------------ paho's answers

    def answered(self, reason: Any, ready: Callable[[], object]) -> bool:
        """The broker's CONNACK: on success `ready()` runs, then the client is connected."""
        if reason.is_failure:
            error = f"connect refused: {reason}"
            self._failed(error, f"broker {self.broker} {error}")
            return False
        with self._lock:
            self.connects += 1
            self.last_error = None
        ready()
        self._up.set()
        self._log.info("%s: connected to %s", self._who, self.broker)
        return True

    def connect_failed(self) -> None:
        """No CONNACK at all (network, DNS, TLS handshake): logged once per outage."""
        self._failed(CANNOT_CONNECT, f"{self.broker} {CANNOT_CONNECT}", quiet_within_outage=True)

    def disconnected(self, reason: Any) -> None:
        """The connection dropped; a stop the caller asked for is not an outage."""
        was = self._up.is_set()
        self._up.clear()
        if was and not self._stopping:
            error = f"disconnected: {reason}"
            self._failed(error, f"{error}; {self._lost}")

    def stopping(self) -> None:
        """The caller is closing: the disconnect that follows is not reported."""
        self._stopping = True

    def _failed(self, error: str, text: str, *, quiet_within_outage: bool = False) -> None:
        with self._lock:
            before = self.last_error
            self.last_error = error
            if before is None:
                self.outages += 1
        if before is None or (not quiet_within_outage and error != before):
            self._log.warning("%s: %s", self._who, text)

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def wait(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)
