"""`cellinspect hub`: the plant's API, review page and exports over the central store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cellinspect.cli.support import user_errors

if TYPE_CHECKING:
    from cellinspect.plant.mqtt_config import MqttConfig


def hub(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLAlchemy URL of the central store; better CELLINSPECT_DB_URL, which keeps "
            "the password off the command line.",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Images received from stations, users file.")
    ] = Path("cellinspect-hub"),
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a non-loopback address (needs a token).")
    ] = False,
    mqtt_host: Annotated[
        str | None,
        typer.Option(
            "--mqtt-host",
            envvar="CELLINSPECT_HUB_MQTT_HOST",
            help="MQTT broker the stations publish to: GET /events then streams their results, "
            "state and alarms live. Unset: no live events from stations.",
        ),
    ] = None,
    mqtt_port: Annotated[
        int,
        typer.Option(
            "--mqtt-port", envvar="CELLINSPECT_HUB_MQTT_PORT", help="Broker port (8883 with TLS)."
        ),
    ] = 1883,
    mqtt_prefix: Annotated[
        str,
        typer.Option(
            "--mqtt-prefix",
            envvar="CELLINSPECT_HUB_MQTT_PREFIX",
            help="The stations' topic_prefix (topics <prefix>/<site>/<area>/<line>/<station>/...).",
        ),
    ] = "cellinspect",
    mqtt_username: Annotated[
        str | None,
        typer.Option(
            "--mqtt-username",
            envvar="CELLINSPECT_HUB_MQTT_USERNAME",
            help="User name at the broker.",
        ),
    ] = None,
    mqtt_password_file: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-password-file",
            envvar="CELLINSPECT_HUB_MQTT_PASSWORD_FILE",
            help="File holding the broker password (first line; never logged).",
        ),
    ] = None,
    mqtt_tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-tls-ca",
            envvar="CELLINSPECT_HUB_MQTT_TLS_CA",
            help="Speak TLS to the broker, verifying it with this CA certificate (PEM).",
        ),
    ] = None,
    mqtt_client_id: Annotated[
        str | None,
        typer.Option(
            "--mqtt-client-id",
            envvar="CELLINSPECT_HUB_MQTT_CLIENT_ID",
            help="MQTT client id of the hub's persistent session (default cellinspect-hub-<host>).",
        ),
    ] = None,
) -> None:
    """The plant hub: results, images and reviews of every station (forwarded to it)."""
    from cellinspect.plant.hub import serve_hub
    from cellinspect.settings import load_settings

    def announce(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    with user_errors():
        overrides: dict[str, object] = {"data_dir": data_dir.resolve()}
        if db is not None:
            overrides["db_url"] = db
        settings = load_settings(None, **overrides)
        mqtt = None
        if mqtt_host is not None:
            mqtt = hub_mqtt_config(
                mqtt_host,
                mqtt_port,
                mqtt_prefix,
                mqtt_username,
                mqtt_password_file,
                mqtt_tls_ca,
                mqtt_client_id,
            )
        serve_hub(settings, host, port, allow_remote=allow_remote, announce=announce, mqtt=mqtt)


def hub_mqtt_config(
    host: str,
    port: int,
    prefix: str,
    username: str | None,
    password_file: Path | None,
    tls_ca: Path | None,
    client_id: str | None,
) -> MqttConfig:
    """The station file's MQTT section, as the hub's options give it (the same checks)."""
    from pydantic import ValidationError

    from cellinspect.config import format_validation_error
    from cellinspect.errors import ConfigError
    from cellinspect.plant.mqtt_config import MqttConfig, MqttTlsConfig

    try:
        return MqttConfig(
            enabled=True,
            host=host,
            port=port,
            topic_prefix=prefix,
            username=username,
            password_file=password_file.resolve() if password_file else None,
            tls=MqttTlsConfig(ca=tls_ca.resolve()) if tls_ca else None,
            client_id=client_id,
        )
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, "hub --mqtt-* options"))) from None


def register(app: typer.Typer) -> None:
    app.command("hub")(hub)
