"""Station settings: where results live, how long images are kept, how the API is guarded.

Distinct from a recipe (what to inspect and how): these are per-station facts an operator sets
once, from a YAML file and/or environment variables prefixed ``CELLINSPECT_`` (for example
``CELLINSPECT_API_TOKEN``, ``CELLINSPECT_DB_URL``). Precedence: explicit arguments, then the
environment, then the file, then the defaults below.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cellinspect.config import format_validation_error
from cellinspect.errors import ConfigError

ENV_PREFIX = "CELLINSPECT_"


class ImageFormat(enum.StrEnum):
    """How kept images are written to disk."""

    PNG = "png"
    JPEG = "jpeg"


class SqliteSync(enum.StrEnum):
    """SQLite `synchronous` pragma in WAL mode: FULL survives power loss, NORMAL a process crash."""

    FULL = "full"
    NORMAL = "normal"


class StationSettings(BaseSettings):
    """Everything the store, the API and the export need to know about this station."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    api_token: SecretStr | None = Field(
        default=None,
        description="A single admin token (Authorization: Bearer <token> or X-API-Token), "
        "kept for existing installations; prefer per-user tokens from `cellinspect users add`. "
        "With no token and no users the API serves read-only.",
    )
    users_file: Path | None = Field(
        default=None,
        description="Users with roles and token hashes, managed by `cellinspect users` "
        "(None: data_dir/users.yaml).",
    )
    host: str = Field(default="127.0.0.1", description="Address the API binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the API binds.")
    data_dir: Path = Field(
        default=Path("cellinspect-data"),
        description="Folder for the SQLite database, images, exports and the spill file.",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+psycopg://...); None: SQLite in data_dir.",
    )
    image_dir: Path | None = Field(default=None, description="Kept images (None: data_dir/images).")
    export_dir: Path | None = Field(
        default=None, description="Where the API writes exports (None: data_dir/exports)."
    )
    spill_file: Path | None = Field(
        default=None,
        description="JSON Lines file for results the writer could not queue or commit "
        "(None: data_dir/spill.jsonl). Replayed into the database at the next start.",
    )
    image_format: ImageFormat = Field(default=ImageFormat.PNG, description="Kept image format.")
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality when used.")
    pass_sample_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of PASS results whose images are kept (FAIL and REVIEW: all).",
    )
    disk_budget_mb: float | None = Field(
        default=2048.0,
        gt=0,
        description="Image disk budget; the oldest images go first when it is exceeded "
        "(None: no limit).",
    )
    disk_reserve_mb: float = Field(
        default=256.0,
        ge=0,
        description="Free disk space images may never take: below it new images are not kept "
        "(the result says why) and old ones go first, so results and the journal still fit "
        "(0: no reserve).",
    )
    max_upload_mb: float = Field(
        default=20.0, gt=0, description="Largest accepted upload (413 above)."
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest accepted image area, checked from the header before decoding.",
    )
    max_concurrent_uploads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Uploads decoded or inspected at once; more get 503 with Retry-After.",
    )
    writer_queue_size: int = Field(
        default=1024, ge=1, description="Results waiting for the database at most."
    )
    writer_batch_size: int = Field(default=64, ge=1, description="Results per commit at most.")
    writer_max_block_ms: float = Field(
        default=50.0,
        ge=0,
        description="How long a full writer queue may block the caller before spilling.",
    )
    sqlite_synchronous: SqliteSync = Field(
        default=SqliteSync.FULL, description="SQLite durability (see SqliteSync)."
    )
    defect_classes: list[str] = Field(
        default_factory=list,
        description="Known defect classes in the order the review page's keys 1-9 pick them.",
    )
    good_label: str = Field(
        default="good", min_length=1, description="Folder name of good parts in exports."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, file_secret_settings)

    # ----------------------------------------------------------------- derived paths

    @property
    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'results.db').as_posix()}"

    @property
    def display_db_url(self) -> str:
        """The database URL with any password masked, for messages and logs."""
        return mask_db_url(self.resolved_db_url)

    @property
    def resolved_users_file(self) -> Path:
        return self.users_file or self.data_dir / "users.yaml"

    @property
    def resolved_image_dir(self) -> Path:
        return self.image_dir or self.data_dir / "images"

    @property
    def resolved_export_dir(self) -> Path:
        return self.export_dir or self.data_dir / "exports"

    @property
    def resolved_spill_file(self) -> Path:
        return self.spill_file or self.data_dir / "spill.jsonl"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def disk_budget_bytes(self) -> int | None:
        return None if self.disk_budget_mb is None else int(self.disk_budget_mb * 1024 * 1024)

    @property
    def disk_reserve_bytes(self) -> int:
        return int(self.disk_reserve_mb * 1024 * 1024)

    @property
    def resolved_journal_dir(self) -> Path:
        """The station's result journal (see storage/journal.py): always in data_dir."""
        return self.data_dir / "journal"

    def token_value(self) -> str | None:
        return None if self.api_token is None else self.api_token.get_secret_value()


def mask_db_url(url: str) -> str:
    """A SQLAlchemy URL with its password shown as ***; an unparsable one is not shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<db_url not shown: not a SQLAlchemy URL>"


class _FileSource(InitSettingsSource):
    """Values from a YAML file, ranked below the environment."""


def load_settings(path: Path | None = None, **overrides: Any) -> StationSettings:
    """Settings from an optional YAML file, the environment and explicit overrides."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: settings file not found") from err
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read settings: {err}") from err
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        file_values = data

    class _WithFile(StationSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _FileSource(settings_cls, file_values))

    try:
        loaded = _WithFile(**overrides)
    except ValidationError as err:
        where = path if path is not None else "settings"
        raise ConfigError("\n".join(format_validation_error(err, where))) from err
    return StationSettings.model_construct(**dict(loaded))
