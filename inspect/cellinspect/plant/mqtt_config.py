"""The station file's `mqtt:` section: broker, identity, security and pacing.

Why its own module: the station file (station/config.py) only embeds it; the MQTT link
(plant/mqtt_link.py) is the one reader. The password lives in a file (`password_file`), never
in the station file and never in a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTlsConfig(_Strict):
    """TLS to the broker: verify it with `ca`; `cert` and `key` for a client certificate."""

    ca: Path | None = Field(
        default=None, description="CA certificate (PEM) to verify the broker; unset: system CAs."
    )
    cert: Path | None = Field(default=None, description="Client certificate (PEM), with 'key'.")
    key: Path | None = Field(default=None, description="Client private key (PEM), with 'cert'.")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: cert and key go together")
        return self


class MqttCommandsConfig(_Strict):
    """Commands in over MQTT (plant/mqtt_commands.py); off unless asked for."""

    enabled: bool = Field(
        default=False,
        description="Take commands on <station topic>/cmd/<name> (recipe_select, trigger, "
        "promote, rollback), each with a user's API token checked as the HTTP API would; "
        "replies on .../cmd/<name>/reply.",
    )


class MqttConfig(_Strict):
    """Results, alarms (outbox, QoS 1), retained state with a last will, metrics (docs/mqtt.md)."""

    enabled: bool = Field(
        default=False, description="Publish results, state, alarms and metrics to a broker."
    )
    host: str = Field(default="127.0.0.1", description="Broker address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 with TLS).")
    client_id: str | None = Field(
        default=None,
        max_length=128,
        description="MQTT client id; unset: cellinspect-<station_id>.",
    )
    username: str | None = Field(default=None, description="User name at the broker.")
    password_file: Path | None = Field(
        default=None,
        description="File holding the broker password (first line; keep it mode 600). Never "
        "logged.",
    )
    tls: MqttTlsConfig | None = Field(
        default=None, description="TLS to the broker; unset: plain TCP (cell network only)."
    )
    topic_prefix: str = Field(
        default="cellinspect",
        min_length=1,
        pattern=r"^[^#+]+$",
        description="First topic levels: <prefix>/<site>/<area>/<line>/<station>/...",
    )
    qos: Literal[1, 2] = Field(
        default=1, description="QoS of results and alarms (at least once: 1 or 2)."
    )
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive; the broker sends the last will ('offline') after 1.5x "
        "without a packet.",
    )
    reconnect_min_s: int = Field(default=1, ge=1, description="First reconnect delay.")
    reconnect_max_s: int = Field(
        default=30, ge=1, description="Longest reconnect delay (the delay doubles up to it)."
    )
    ack_timeout_s: float = Field(
        default=10.0, gt=0, description="Wait for a PUBACK before the batch is sent again."
    )
    metrics_every_s: float = Field(
        default=10.0, gt=0, description="Interval of the retained metrics message."
    )
    commands: MqttCommandsConfig = Field(
        default_factory=MqttCommandsConfig, description="Commands in over MQTT (off by default)."
    )

    @model_validator(mode="after")
    def _backoff(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self
