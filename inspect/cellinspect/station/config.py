"""The station file: what one station is, which recipes it may run, and how it is wired.

A recipe says what to inspect and how; the station file says where this station stands
(ids), which recipes its PLC may select by number, what triggers an inspection, and which
links (Modbus, OPC UA, robot, API, store) it serves. YAML, validated by pydantic with unknown
keys rejected; relative paths resolve against the station file. Secrets (the API token, a
database password) stay in the environment (CELLINSPECT_*), never in this file.
"""

from __future__ import annotations

import enum
import ipaddress
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cellinspect.config import SourceConfig, format_validation_error
from cellinspect.errors import ConfigError
from cellinspect.health.config import HealthConfig
from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.s3_images import S3Config

OpcUaPolicy = Literal["none", "basic256sha256_sign", "basic256sha256_sign_encrypt"]


def _secure_policies() -> list[OpcUaPolicy]:
    return ["basic256sha256_sign", "basic256sha256_sign_encrypt"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerMode(enum.StrEnum):
    """What starts an inspection."""

    FREE_RUN = "free_run"  # every frame the source delivers is a part
    PLC = "plc"  # the PLC's Modbus trigger handshake; one frame per accepted trigger
    SOFTWARE = "software"  # POST /station/trigger or OPC UA StartSingleJob


class TriggerConfig(_Strict):
    mode: TriggerMode = Field(default=TriggerMode.FREE_RUN, description="What starts a job.")
    frame_timeout_ms: float = Field(
        default=1000.0,
        gt=0,
        description="How long a triggered job waits for its frame before it is a fail-safe "
        "result (a stream that is reconnecting, an empty hot folder).",
    )


class ModbusConfig(_Strict):
    enabled: bool = Field(default=False, description="Serve the PLC register map (Modbus TCP).")
    host: str = Field(
        default="127.0.0.1",
        description="Bind address. 0.0.0.0 (all interfaces) only when asked for: Modbus has "
        "no authentication, so put the station on the cell's own network.",
    )
    port: int = Field(default=502, ge=0, le=65535, description="Modbus TCP port (0: a free one).")
    heartbeat_timeout_s: float | None = Field(
        default=1.0,
        gt=0,
        description="PLC heartbeat (HR7) watchdog, armed when the first Modbus client "
        "connects: HR7 must change at least this often or the station goes to its safe state "
        "(PLC_HEARTBEAT_LOST), whatever the trigger mode. null: no supervision (a warning at "
        "start).",
    )
    max_connections: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Modbus clients connected at once; one more is closed at once (logged).",
    )
    allowed_clients: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (10.0.0.5, 10.1.0.0/16) allowed to connect; "
        "empty: any. Others are closed at once (logged at a bounded rate).",
    )

    @model_validator(mode="after")
    def _networks(self) -> ModbusConfig:
        for spec in self.allowed_clients:
            try:
                ipaddress.ip_network(spec.strip(), strict=False)
            except ValueError as err:
                raise ValueError(
                    f"allowed_clients: {spec!r} is not an IP address or network"
                ) from err
        return self


class OpcUaConfig(_Strict):
    enabled: bool = Field(default=False, description="Serve the OPC 40100-shaped OPC UA server.")
    host: str = Field(default="127.0.0.1", description="Bind address of the endpoint.")
    port: int = Field(default=4840, ge=0, le=65535, description="OPC UA port (0: a free one).")
    security_policies: list[OpcUaPolicy] = Field(
        default_factory=_secure_policies,
        min_length=1,
        description="Offered policies: none, basic256sha256_sign, basic256sha256_sign_encrypt "
        "(default: both Basic256Sha256 modes, no unsecured endpoint; 'none' only when listed).",
    )
    certificate: Path | None = Field(
        default=None,
        description="Server certificate (DER or PEM) for the signing policies. Unset: a "
        "self-signed station certificate is generated into <data_dir>/opcua/ at the first "
        "start (its SHA-1 thumbprint is logged) and reused after.",
    )
    private_key: Path | None = Field(
        default=None,
        description="Server private key (PEM), with 'certificate' (unset with it: generated).",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Accept anonymous sessions (default False: users from 'users_file' only).",
    )
    users_file: Path | None = Field(
        default=None,
        description="YAML mapping user name -> password for OPC UA sessions (keep it mode "
        "600, readable by the station's user only).",
    )

    @model_validator(mode="after")
    def _sessions_need_users(self) -> OpcUaConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError(
                "certificate and private_key go together (leave both unset for a generated "
                "self-signed station certificate)"
            )
        if self.enabled and not self.allow_anonymous and self.users_file is None:
            raise ValueError(
                "opcua sessions need user authentication by default: set 'users_file' (user "
                "name -> password), or allow_anonymous: true explicitly"
            )
        if self.users_file is not None and self.security_policies == ["none"]:
            raise ValueError(
                "users_file: with only policy 'none' passwords would cross the network in "
                "plain text; add basic256sha256_sign_encrypt"
            )
        return self


class RobotConfig(_Strict):
    enabled: bool = Field(default=False, description="Send pick targets of rejected parts.")
    host: str = Field(default="127.0.0.1", description="Robot controller address.")
    port: int = Field(default=30002, ge=0, le=65535, description="Robot JSON-lines TCP port.")
    timeout_s: float = Field(default=1.0, gt=0, description="Wait for each acknowledgement.")
    retries: int = Field(default=2, ge=0, description="Resends after a timeout or lost link.")
    queue_size: int = Field(default=256, ge=1, description="Targets waiting for the robot.")


class ApiConfig(_Strict):
    enabled: bool = Field(default=True, description="Serve the results API and review page.")
    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port (0: a free one).")
    allow_remote: bool = Field(
        default=False,
        description="Allow a non-loopback address (needs CELLINSPECT_API_TOKEN).",
    )


class StoreConfig(_Strict):
    enabled: bool = Field(default=True, description="Keep every result (and images).")
    data_dir: Path = Field(
        default=Path("cellinspect-data"),
        description="SQLite database, kept images and the spill file (relative: to this file).",
    )
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of another database; a password belongs in "
        "CELLINSPECT_DB_URL instead.",
    )
    settings: Path | None = Field(
        default=None,
        description="Station settings YAML (image budget, retention...); CELLINSPECT_* override.",
    )


class ForwardConfig(_Strict):
    """Store-and-forward to the plant (plant/forwarder.py); the local store stays the truth."""

    enabled: bool = Field(default=False, description="Forward results to a central store.")
    central_url_env: str = Field(
        default="CELLINSPECT_CENTRAL_DB_URL",
        description="Environment variable holding the central SQLAlchemy URL (with its "
        "password, which never belongs in this file).",
    )
    central_url_file: Path | None = Field(
        default=None,
        description="Or a file (mode 600) holding that URL; used when the variable is unset.",
    )
    hub_url: str | None = Field(
        default=None,
        description="Base URL of `cellinspect hub` for kept images (None: results only).",
    )
    token_env: str = Field(
        default="CELLINSPECT_HUB_TOKEN",
        description="Environment variable holding this station's hub token (role operator).",
    )
    token_file: Path | None = Field(
        default=None, description="Or a file holding the token; used when the variable is unset."
    )
    batch_size: int = Field(default=200, ge=1, le=5000, description="Results per round trip.")
    interval_s: float = Field(
        default=2.0, gt=0, description="Pause between passes; failures back off up to 60 s."
    )
    reviews_from_hub: bool = Field(
        default=False,
        description="Copy labels set on the hub (central database) for this station's results "
        "back into its own store (reviewer recorded as NAME@hub).",
    )
    reviews_to_hub: bool = Field(
        default=True,
        description="Send labels set on this station's review page (and their undos) to the "
        "central store, after their results (reviewer recorded as NAME@<station_id>).",
    )
    s3: S3Config | None = Field(
        default=None,
        description="Put kept images to this S3-compatible bucket instead of the hub "
        "(content-addressed; the central row records s3://bucket/key). Needs the s3 extra.",
    )


class StationFile(_Strict):
    station_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="This station's id, recorded in every result.",
    )
    line: str | None = Field(default=None, description="Line the station stands on.")
    site: str | None = Field(default=None, description="Plant or site.")
    area: str | None = Field(
        default=None, description="Area of the site (MQTT topics and messages)."
    )
    recipes: dict[int, Path] = Field(
        min_length=1,
        description="Recipe catalog: number (what the PLC selects with command 1) -> file.",
    )
    active_recipe: int = Field(default=1, description="Catalog number active at start.")
    source: SourceConfig | None = Field(
        default=None,
        description="The station's own camera; None: each recipe's own `source:`.",
    )
    trigger: TriggerConfig = Field(default_factory=TriggerConfig, description="What starts a job.")
    modbus: ModbusConfig = Field(default_factory=ModbusConfig, description="PLC link.")
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig, description="OPC UA server.")
    robot: RobotConfig = Field(default_factory=RobotConfig, description="Robot link.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="Results API and review page.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Where results live.")
    forward: ForwardConfig = Field(
        default_factory=ForwardConfig, description="Store-and-forward to the plant's store."
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Camera health and score drift alarms."
    )
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig, description="Results, state and alarms to a broker."
    )
    status_every_s: float = Field(
        default=10.0, gt=0, description="Status log line interval when not on a terminal."
    )
    trusted_model_keys: list[Path] = Field(
        default_factory=list,
        description="ed25519 public keys (PEM, `cellinspect models keygen`); when listed, every "
        "model must carry a valid signature by one of them (`models seal --key`) or is refused.",
    )
    teach_signing_key: Path | None = Field(
        default=None,
        description="ed25519 private key (PEM, `cellinspect models keygen`, readable only by the "
        "station) that signs the models taught on the line; its public key must be one of "
        "trusted_model_keys. A station with trusted_model_keys and no such key refuses teach.",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> StationFile:
        bad = sorted(n for n in self.recipes if not 1 <= n <= 65535)
        if bad:
            raise ValueError(f"recipes: numbers must be 1..65535 (a PLC register), got {bad}")
        if self.active_recipe not in self.recipes:
            raise ValueError(
                f"active_recipe: {self.active_recipe} is not in the catalog {sorted(self.recipes)}"
            )
        if self.forward.enabled and not self.store.enabled:
            raise ValueError("forward.enabled: forwarding needs store.enabled: true")
        if self.trigger.mode is TriggerMode.PLC and not self.modbus.enabled:
            raise ValueError("trigger.mode: 'plc' needs modbus.enabled: true")
        for name in ("modbus", "opcua", "robot", "api", "mqtt"):
            host = getattr(self, name).host
            if not _is_address(host):
                raise ValueError(f"{name}.host: {host!r} is not an IP address or host name")
        return self


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and all(part.isalnum() or "-" in part for part in host.split("."))
    return True


class StationInvalidError(ConfigError):
    """A station file failed validation; `problems` holds one line per error with its key path."""

    def __init__(self, file: Path, problems: list[str]) -> None:
        super().__init__(f"{file}: invalid station file\n" + "\n".join(problems))
        self.file = file
        self.problems = problems


def _resolve_paths(station: StationFile, base: Path) -> StationFile:
    from cellinspect.config import _resolve

    def absolute(path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return (base / path).resolve()

    store = station.store.model_copy(
        update={
            "data_dir": absolute(station.store.data_dir),
            "settings": absolute(station.store.settings),
        }
    )
    forward = station.forward.model_copy(
        update={
            "central_url_file": absolute(station.forward.central_url_file),
            "token_file": absolute(station.forward.token_file),
            "s3": None
            if station.forward.s3 is None
            else station.forward.s3.model_copy(
                update={"credentials_file": absolute(station.forward.s3.credentials_file)}
            ),
        }
    )
    opcua = station.opcua.model_copy(
        update={
            "certificate": absolute(station.opcua.certificate),
            "private_key": absolute(station.opcua.private_key),
            "users_file": absolute(station.opcua.users_file),
        }
    )
    return station.model_copy(
        update={
            "recipes": {n: absolute(p) for n, p in station.recipes.items()},
            "source": None if station.source is None else _resolve(base, station.source),
            "store": store,
            "forward": forward,
            "opcua": opcua,
            "mqtt": _resolve_mqtt(station.mqtt, absolute),
            "trusted_model_keys": [base / p for p in station.trusted_model_keys],
            "teach_signing_key": absolute(station.teach_signing_key),
        }
    )


def _resolve_mqtt(mqtt: MqttConfig, absolute: Any) -> MqttConfig:
    tls = mqtt.tls
    if tls is not None:
        tls = tls.model_copy(update={k: absolute(getattr(tls, k)) for k in ("ca", "cert", "key")})
    return mqtt.model_copy(update={"password_file": absolute(mqtt.password_file), "tls": tls})


def parse_station(data: Any, file: Path) -> StationFile:
    """Validate a mapping as a station file; paths resolve against `file`'s folder."""
    if not isinstance(data, dict):
        raise StationInvalidError(file, [f"{file}: <root>: expected a mapping of station keys"])
    try:
        station = StationFile.model_validate(data)
    except ValidationError as err:
        raise StationInvalidError(file, format_validation_error(err, file)) from err
    return _resolve_paths(station, file.resolve().parent)


def read_yaml(file: Path, what: str) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{file}: {what} not found") from err
    except OSError as err:
        raise ConfigError(f"{file}: cannot read {what}: {err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from err


def load_station(path: Path | str) -> StationFile:
    """Read, validate and resolve a station file (it says nothing yet of the recipes' contents)."""
    file = Path(path)
    return parse_station(read_yaml(file, "station file"), file)


def is_station_file(path: Path | str) -> bool:
    """True when a YAML file has a top-level `station_id` (what `validate` uses to tell)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "station_id" in data
