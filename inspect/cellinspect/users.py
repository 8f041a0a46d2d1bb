"""Who may use the station's API: roles, API tokens per user, and the users file.

Each user has a name, a role and one API token. The file (YAML, `users_file` in the settings,
default `<data_dir>/users.yaml`) stores only a salted scrypt hash of each token
(`hashlib.scrypt`, OpenSSL's implementation in the standard library), never the token. Tokens
are made by `cellinspect users add`, shown once, and look like `ci_<id>_<secret>`: the id names
the file entry to check, so a request costs one scrypt, not one per user; the secret is 256
random bits. Checks use a constant-time comparison.

Roles and what they may do:

- viewer: read results, images, audit trails, statistics, the station status, live events.
- operator: viewer + trigger a part, select a recipe, upload an image for inspection.
- qa: viewer + label results (the label records the user as reviewer) and export datasets.
- admin: everything.

The settings' single `api_token` (CELLINSPECT_API_TOKEN) still works: it is an admin token for
a user named `api-token` (kept for existing installations).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cellinspect.config import format_validation_error
from cellinspect.errors import ConfigError

LEGACY_TOKEN_USER = "api-token"
TOKEN_PREFIX = "ci"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_TOKEN_RE = re.compile(r"^ci_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# scrypt cost: 16 MiB and a few tens of ms per check; each token is checked once per process.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_CACHE = 1024


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    QA = "qa"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    READ = "read"  # results, images, audit, stats, station status, events
    OPERATE = "operate"  # trigger, recipe select, POST /inspections
    REVIEW = "review"  # PUT /results/{id}/review
    EXPORT = "export"  # POST /exports


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.QA: frozenset({Permission.READ, Permission.REVIEW, Permission.EXPORT}),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: a user of the users file, the legacy token, or anonymous."""

    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


class UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="User name, recorded as reviewer.")
    role: Role
    token_id: str = Field(pattern=r"^[0-9a-f]{12}$", description="Public part of the token.")
    token_hash: str = Field(description="scrypt$N$r$p$salt$hash (base64), never the token.")
    created_at: datetime


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserEntry] = Field(default_factory=list)


# --------------------------------------------------------------------------- hashing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=128 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def new_token() -> tuple[str, str, str]:
    """(token, token_id, secret) for a new user."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}_{token_id}_{secret}", token_id, secret


# --------------------------------------------------------------------------- the file


def read_users(path: Path) -> UsersFile:
    """The users file; a missing file is no users. ConfigError when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UsersFile()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the users file: {err.strerror}") from err
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: the users file is not valid YAML") from err
    try:
        return UsersFile.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError("\n".join(format_validation_error(err, path))) from err


def write_users(path: Path, users: UsersFile) -> None:
    """Replace the file atomically, readable by its owner only (it holds token hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = users.model_dump(mode="json")
    text = "# cellinspect users: managed by `cellinspect users`; token hashes only.\n"
    text += yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def add_user(path: Path, name: str, role: Role, *, replace: bool = False) -> str:
    """Add (or with `replace`, re-issue) a user; returns the new token, which is not stored."""
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(
            f"{name!r}: a user name is 1-64 letters, digits or . _ @ - (starting with a letter "
            "or digit)"
        )
    if name == LEGACY_TOKEN_USER:
        raise ConfigError(f"{name!r} is reserved for the settings' api_token")
    users = read_users(path)
    if any(u.name == name for u in users.users) and not replace:
        raise ConfigError(f"user {name!r} exists; pass --replace to issue a new token")
    token, token_id, secret = new_token()
    entry = UserEntry(
        name=name,
        role=role,
        token_id=token_id,
        token_hash=hash_secret(secret),
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    users.users = [u for u in users.users if u.name != name] + [entry]
    write_users(path, users)
    return token


def remove_user(path: Path, name: str) -> None:
    users = read_users(path)
    kept = [u for u in users.users if u.name != name]
    if len(kept) == len(users.users):
        raise ConfigError(f"no user {name!r} in {path}")
    users.users = kept
    write_users(path, users)


# --------------------------------------------------------------------------- checking tokens


class Authenticator:
    """Turns a presented token into an Identity; re-reads the users file when it changes.

    A token that passed the scrypt check is remembered (by an HMAC under a per-process key, not
    in clear) until the file changes, so the review page's many requests cost one check.
    A users file that cannot be read refuses every user token (the legacy token still works)
    and keeps the station closed to anonymous reads.
    """

    def __init__(self, users_file: Path, legacy_token: str | None = None) -> None:
        self.users_file = users_file
        self._legacy = legacy_token
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, UserEntry] = {}
        self._broken = False
        self._cache: dict[bytes, Identity] = {}
        self._cache_key = secrets.token_bytes(32)
        self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.users_file.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Read the users file now (raises ConfigError for a broken one)."""
        with self._lock:
            self._stamp = self._file_stamp()
            self._cache.clear()
            try:
                users = read_users(self.users_file)
            except ConfigError:
                self._entries, self._broken = {}, True
                raise
            self._entries = {u.token_id: u for u in users.users}
            self._broken = False

    def _refresh(self) -> None:
        if self._file_stamp() != self._stamp:
            # A broken file stays closed: no user token passes until it is fixed.
            with contextlib.suppress(ConfigError):
                self.reload()

    @property
    def configured(self) -> bool:
        """Any credential at all: then reads need a token too."""
        self._refresh()
        return self._legacy is not None or bool(self._entries) or self._broken

    @property
    def user_count(self) -> int:
        self._refresh()
        return len(self._entries)

    def authenticate(self, token: str) -> Identity | None:
        self._refresh()
        if self._legacy is not None and hmac.compare_digest(
            token.encode("utf-8"), self._legacy.encode("utf-8")
        ):
            return Identity(LEGACY_TOKEN_USER, Role.ADMIN)
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        key = hmac.new(self._cache_key, token.encode("utf-8"), hashlib.sha256).digest()
        with self._lock:
            known = self._cache.get(key)
            entry = self._entries.get(match.group(1))
        if known is not None:
            return known
        if entry is None or not verify_secret(match.group(2), entry.token_hash):
            return None
        identity = Identity(entry.name, entry.role)
        with self._lock:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[key] = identity
        return identity
