"""Kept images to S3-compatible storage (AWS S3, MinIO, Ceph RGW ...) instead of the hub's disk.

Why its own module: the forwarder only needs "put these bytes, content-addressed, once", and
the hub only "read them back"; both go through one client built here. boto3 is an optional
extra (`pip install cellinspect[s3]`), imported only when a plant has an S3 target.

Objects are keyed by content, `<prefix>/<first two hex>/<sha256>.png` (`.jpg` for JPEG), so a
resent batch, or two results with the same bytes, address one object; a HEAD finds it and the
body is not sent again. The central image row records `s3://<bucket>/<key>` as its path.
Credentials come from the environment or a file, never from the station file, and are never
logged; unset, boto3's own chain applies (AWS_* variables, instance role).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from cellinspect.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCHEME = "s3://"
AddressingStyle = Literal["path", "virtual", "auto"]
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg"}
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30
# The hub's side: where the objects are read back from (the bucket is in each image's path).
HUB_ENDPOINT_ENV = "CELLINSPECT_S3_ENDPOINT_URL"
HUB_REGION_ENV = "CELLINSPECT_S3_REGION"
ACCESS_KEY_ENV = "CELLINSPECT_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "CELLINSPECT_S3_SECRET_ACCESS_KEY"


class S3Error(RuntimeError):
    """The object store refused or could not be reached; the message carries no secret."""


class S3Config(BaseModel):
    """`forward.s3:` the station's S3-compatible image target (docs/plant.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
        description="Bucket the images go to (it must exist).",
    )
    prefix: str = Field(
        default="cellinspect",
        pattern=r"^[A-Za-z0-9._/-]*$",
        description="Key prefix: objects are <prefix>/<ab>/<sha256>.png.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint (MinIO, Ceph: http(s)://host:port); unset: AWS for the region.",
    )
    region: str | None = Field(default=None, description="Region name; unset: boto3's default.")
    addressing_style: AddressingStyle = Field(
        default="path",
        description="Bucket in the path (MinIO, most on-site stores) or in the host name (AWS).",
    )
    access_key_env: str = Field(
        default=ACCESS_KEY_ENV, description="Environment variable holding the access key id."
    )
    secret_key_env: str = Field(
        default=SECRET_KEY_ENV, description="Environment variable holding the secret key."
    )
    credentials_file: Path | None = Field(
        default=None,
        description="Or a file (mode 600): access key id on the first line, secret key on the "
        "second; used when the variables are unset. Neither: boto3's own chain.",
    )


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never print the secret, even in a traceback's locals
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=***)"


def credentials_from(access_env: str, secret_env: str, file: Path | None) -> Credentials | None:
    """Keys from the two variables, else from the file, else None (boto3's chain)."""
    key, secret = os.environ.get(access_env, "").strip(), os.environ.get(secret_env, "").strip()
    if key and secret:
        return Credentials(key, secret)
    if key or secret:
        raise ConfigError(f"s3: set both {access_env} and {secret_env}, or neither")
    if file is None:
        return None
    try:
        lines = [ln.strip() for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as err:
        raise ConfigError(f"s3: cannot read the credentials file {file}: {err}") from err
    if len(lines) != 2:
        raise ConfigError(
            f"s3: {file} must hold two lines (access key id, secret key), found {len(lines)}"
        )
    return Credentials(lines[0], lines[1])


def make_client(
    endpoint_url: str | None,
    region: str | None,
    credentials: Credentials | None,
    addressing_style: AddressingStyle = "path",
) -> S3Client:
    """A boto3 S3 client with bounded timeouts (a dead endpoint must not hang a thread)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:
        raise ConfigError(
            "s3: boto3 is not installed; install the extra: pip install 'cellinspect[s3]'"
        ) from err
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": addressing_style},
    )
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=None if credentials is None else credentials.access_key_id,
        aws_secret_access_key=None if credentials is None else credentials.secret_access_key,
        config=config,
    )
    return client


def object_key(prefix: str, sha256: str, media_type: str) -> str:
    """Content-addressed key: <prefix>/<ab>/<sha256><ext>."""
    if media_type not in EXTENSIONS:
        raise S3Error(f"media type {media_type[:60]!r}: expected one of {sorted(EXTENSIONS)}")
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{sha256[:2]}/{sha256}{EXTENSIONS[media_type]}"


def s3_path(bucket: str, key: str) -> str:
    """What the central image row records as the image's path."""
    return f"{SCHEME}{bucket}/{key}"


def parse_s3_path(path: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` image path."""
    bucket, _, key = path.removeprefix(SCHEME).partition("/")
    if not path.startswith(SCHEME) or not bucket or not key:
        raise S3Error(f"{path[:200]!r} is not an s3://bucket/key image path")
    return bucket, key


class S3ImageTarget:
    """Puts images into one bucket, once per content; what the forwarder ships through."""

    def __init__(self, config: S3Config, client: S3Client) -> None:
        self.config = config
        self.client = client
        # For messages: endpoint and bucket, no secret.
        self.where = f"{config.endpoint_url or 'AWS S3'} bucket {config.bucket}"

    def put(self, sha256: str, media_type: str, body: bytes) -> tuple[str, bool]:
        """Store the bytes unless their object is there; (s3:// path, True when uploaded)."""
        key = object_key(self.config.prefix, sha256, media_type)
        if self._exists(key):
            return s3_path(self.config.bucket, key), False
        try:
            self.client.put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=body,
                ContentType=media_type,
                Metadata={"sha256": sha256},
            )
        except Exception as err:
            raise S3Error(f"cannot put {key} to {self.where}: {_why(err)}") from None
        return s3_path(self.config.bucket, key), True

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.config.bucket, Key=key)
        except Exception as err:
            if _status(err) == 404:
                return False
            raise S3Error(f"cannot check {key} at {self.where}: {_why(err)}") from None
        return True


def target_from(config: S3Config) -> S3ImageTarget:
    """The station's image target from its `forward.s3:` section."""
    creds = credentials_from(config.access_key_env, config.secret_key_env, config.credentials_file)
    client = make_client(config.endpoint_url, config.region, creds, config.addressing_style)
    return S3ImageTarget(config, client)


def read_object(client: S3Client, path: str) -> bytes:
    """The bytes of an `s3://bucket/key` image (the hub serving a forwarded image)."""
    bucket, key = parse_s3_path(path)
    try:
        reply = client.get_object(Bucket=bucket, Key=key)
        body: bytes = reply["Body"].read()
    except Exception as err:
        raise S3Error(f"cannot read {path[:200]}: {_why(err)}") from None
    return body


def hub_client() -> S3Client:
    """The hub's client: endpoint, region and keys from its environment (or boto3's chain)."""
    creds = credentials_from(ACCESS_KEY_ENV, SECRET_KEY_ENV, None)
    return make_client(
        os.environ.get(HUB_ENDPOINT_ENV) or None, os.environ.get(HUB_REGION_ENV) or None, creds
    )


def _status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
        return status if isinstance(status, int) else None
    return None


def _why(err: Exception) -> str:
    """A short reason: the S3 error code or the connection problem, never a credential."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code") if isinstance(error, dict) else None
        return f"{code or 'error'} (HTTP {_status(err)})"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]
