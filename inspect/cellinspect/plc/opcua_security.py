"""Security of the OPC UA server: policies, the station certificate, and who may open a session.

`OpcUaSecurity` is what a station configures; `VisionOpcUaServer(..., security=...)` applies it.
Passwords and key material never reach a log line, an error message or a ``repr``.

What asyncua (2.x) does and does not do, and what this module adds:

- asyncua always accepts an unsecured channel (clients use it to read the endpoints), and a
  session on it would be activated like any other. The user manager here refuses every session
  whose channel carries no client certificate when "none" is not among the policies.
- asyncua accepts any client certificate that completes the handshake (no trust list); who may
  work is decided by user name and password, or anonymous access if allowed.
- asyncua only logs a warning when the certificate's SubjectAlternativeName URI differs from
  the server's application URI (clients reject such a server), so the server takes its
  application URI from the certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cellinspect.errors import ConfigError

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

log = logging.getLogger(__name__)

PolicyName = Literal["none", "basic256sha256_sign", "basic256sha256_sign_encrypt"]
POLICY_TYPES: Mapping[str, ua.SecurityPolicyType] = MappingProxyType(
    {
        "none": ua.SecurityPolicyType.NoSecurity,
        "basic256sha256_sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
        "basic256sha256_sign_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    }
)

PasswordCheck = Callable[[str, str], bool]
"""(user name, password) -> whether they may open a session."""

_RSA_BITS = (2048, 4096)  # what Basic256Sha256 allows


class OpcUaSecurityError(ConfigError, ValueError):
    """The OPC UA security settings, or the certificate or key files they name, are unusable."""


@dataclass(frozen=True)
class OpcUaSecurity:
    """Which security policies the OPC UA server offers, its certificate, and its users.

    ``users`` maps user name -> password (compared in constant time), or is a callable
    ``(user, password) -> bool``. The certificate and key may be PEM or DER files; the key must
    be an unencrypted RSA key (2048-4096 bits), protected by its file permissions. The server
    takes its application URI from the certificate's SubjectAlternativeName URI.
    """

    policies: tuple[PolicyName, ...] = ("none",)
    certificate: Path | None = None
    private_key: Path | None = None
    allow_anonymous: bool = True
    users: Mapping[str, str] | PasswordCheck | None = field(default=None, repr=False, compare=False)
    application_uri: str | None = field(init=False, default=None)
    """SubjectAlternativeName URI of the certificate (None without certificate)."""

    def __post_init__(self) -> None:
        policies = tuple(self.policies)
        object.__setattr__(self, "policies", policies)
        if not policies:
            raise OpcUaSecurityError(
                f"policies: give at least one of {', '.join(POLICY_TYPES)}, got none"
            )
        for name in policies:
            if name not in POLICY_TYPES:
                raise OpcUaSecurityError(
                    f"policies: unknown policy {name!r}, expected one of {', '.join(POLICY_TYPES)}"
                )
        if len(set(policies)) != len(policies):
            raise OpcUaSecurityError(f"policies: each policy once, got {list(policies)}")
        self._check_files()
        self._check_users()

    # ------------------------------------------------------------------ validation

    def _check_files(self) -> None:
        secure = [p for p in self.policies if p != "none"]
        for name in ("certificate", "private_key"):
            value = getattr(self, name)
            if value is None:
                if secure:
                    raise OpcUaSecurityError(
                        f"{name}: policy {secure[0]!r} signs messages and needs the station's "
                        f"certificate and private key files; {name} is not set"
                    )
                continue
            path = Path(value)
            object.__setattr__(self, name, path)
            if not path.is_file():
                raise OpcUaSecurityError(f"{name}: file not found: {path}")
        if (self.certificate is None) != (self.private_key is None):
            missing = "private_key" if self.private_key is None else "certificate"
            raise OpcUaSecurityError(
                f"{missing}: certificate and private_key go together; {missing} is not set"
            )
        if self.certificate is not None and self.private_key is not None:
            cert = _read_certificate(self.certificate)
            key = _read_private_key(self.private_key)
            if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise OpcUaSecurityError(
                    f"private_key: {self.private_key} is not the key of certificate "
                    f"{self.certificate}"
                )
            object.__setattr__(self, "application_uri", _san_uri(cert, self.certificate))

    def _check_users(self) -> None:
        users = self.users
        if isinstance(users, Mapping):
            if not users:
                raise OpcUaSecurityError("users: empty; leave it unset for no users")
            for name, password in users.items():
                if not isinstance(name, str) or not name:
                    raise OpcUaSecurityError("users: every user name must be a non-empty string")
                if not isinstance(password, str) or not password:
                    raise OpcUaSecurityError(
                        f"users: the password of user {name!r} must be a non-empty string"
                    )
            object.__setattr__(self, "users", MappingProxyType(dict(users)))
        elif users is not None and not callable(users):
            raise OpcUaSecurityError(
                f"users: expected a mapping user -> password or a callable (user, password) "
                f"-> bool, got {type(users).__name__}"
            )
        if not self.allow_anonymous and users is None:
            raise OpcUaSecurityError(
                "allow_anonymous: anonymous sessions are refused and no users are set, so no "
                "client could open a session"
            )
        if users is not None:
            if self.policies == ("none",):
                raise OpcUaSecurityError(
                    "users: with only policy 'none' passwords would cross the network in plain "
                    "text; add 'basic256sha256_sign_encrypt' with a certificate and key"
                )
            if "none" in self.policies and "basic256sha256_sign_encrypt" not in self.policies:
                raise OpcUaSecurityError(
                    "users: on the unsecured endpoint (policy 'none') passwords are encrypted "
                    "with the station certificate only when 'basic256sha256_sign_encrypt' is "
                    "offered as well; add it or remove 'none'"
                )

    # ------------------------------------------------------------------ for the server

    @property
    def policy_types(self) -> list[ua.SecurityPolicyType]:
        """The asyncua policy types, for ``Server.set_security_policy``."""
        return [POLICY_TYPES[p] for p in self.policies]

    @property
    def identity_tokens(self) -> list[type]:
        """The identity token types offered, for ``Server.set_identity_tokens``."""
        tokens: list[type] = []
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self.users is not None:
            tokens.append(ua.UserNameIdentityToken)
        return tokens

    def user_manager(self) -> UserManager:
        """Decides each session: anonymous if allowed, else a known user with their password."""
        return _StationUserManager(
            allow_anonymous=self.allow_anonymous,
            users=self.users,
            unsecured_allowed="none" in self.policies,
        )

    def describe(self) -> str:
        """One line for the log: policies, anonymous access, number of users; no secrets."""
        users = self.users
        who = (
            "no users"
            if users is None
            else f"{len(users)} users"
            if isinstance(users, Mapping)
            else "users by callback"
        )
        anonymous = "anonymous allowed" if self.allow_anonymous else "anonymous refused"
        return f"policies {', '.join(self.policies)}; {anonymous}; {who}"


class _StationUserManager(UserManager):
    def __init__(
        self,
        allow_anonymous: bool,
        users: Mapping[str, str] | PasswordCheck | None,
        unsecured_allowed: bool,
    ) -> None:
        self.allow_anonymous = allow_anonymous
        self.users = users
        self.unsecured_allowed = unsecured_allowed

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # `certificate` is the client certificate of the secure channel: empty on an unsecured
        # channel, which asyncua always accepts so that clients can read the endpoints.
        if not certificate and not self.unsecured_allowed:
            log.info("OPC UA: refused a session on an unsecured channel")
            return None
        if username is None:
            if self.allow_anonymous:
                return User(role=UserRole.User)
            log.info("OPC UA: refused an anonymous session")
            return None
        if self.users is not None and _password_ok(self.users, username, password or ""):
            return User(role=UserRole.User, name=username)
        log.info("OPC UA: refused a session for user %r (unknown user or wrong password)", username)
        return None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _password_ok(users: Mapping[str, str] | PasswordCheck, name: str, password: str) -> bool:
    if not isinstance(users, Mapping):
        return bool(users(name, password))
    expected = users.get(name)
    # Digests first, so neither the content nor the length of the password shows in the timing;
    # an unknown user costs the same comparison.
    same = hmac.compare_digest(_digest(expected or ""), _digest(password))
    return same and expected is not None


# ---------------------------------------------------------------------- files


def file_format(path: Path) -> Literal["pem", "der"]:
    """PEM or DER, by content: asyncua guesses from the suffix (only ``.pem`` is PEM)."""
    with path.open("rb") as f:
        head = f.read(64)
    return "pem" if b"-----BEGIN" in head else "der"


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
        if file_format(path) == "pem":
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except OSError as err:
        raise OpcUaSecurityError(f"certificate: cannot read {path}: {err.strerror}") from err
    except ValueError as err:
        raise OpcUaSecurityError(
            f"certificate: {path} is not a PEM or DER X.509 certificate"
        ) from err


def _read_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
        if file_format(path) == "pem":
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except OSError as err:
        raise OpcUaSecurityError(f"private_key: cannot read {path}: {err.strerror}") from err
    except TypeError as err:  # cryptography: "Password was not given but private key is encrypted"
        raise OpcUaSecurityError(
            f"private_key: {path} is encrypted; give an unencrypted key and protect the file "
            "by its permissions"
        ) from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise OpcUaSecurityError(f"private_key: {path} is not a PEM or DER private key") from err
    if not isinstance(key, rsa.RSAPrivateKey) or not _RSA_BITS[0] <= key.key_size <= _RSA_BITS[1]:
        raise OpcUaSecurityError(
            f"private_key: {path} must be an RSA key of {_RSA_BITS[0]}-{_RSA_BITS[1]} bits "
            f"(Basic256Sha256), got {type(key).__name__.lstrip('_')}"
        )
    return key


def _san_uri(cert: x509.Certificate, path: Path) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris: list[str] = []
    else:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise OpcUaSecurityError(
            f"certificate: {path} has no SubjectAlternativeName URI; OPC UA needs the "
            "application URI there (make_self_signed writes one)"
        )
    return uris[0]


def make_self_signed(
    cert_path: Path,
    key_path: Path,
    application_uri: str,
    hostname: str | None = None,
    *,
    common_name: str = "cellinspect",
    days: int = 1825,
    overwrite: bool = False,
) -> None:
    """Write a self-signed OPC UA application certificate (PEM) and its RSA-2048 key (PEM).

    The certificate carries ``application_uri`` and ``hostname`` (default: this machine's
    name; an IP address goes in as one) as SubjectAlternativeNames, as OPC UA Part 6 asks, and
    serves both as server and as client certificate. The key is written unencrypted with mode
    0600. Existing files are kept unless ``overwrite``: a new key breaks every client that
    trusts the old certificate.
    """
    if ":" not in application_uri:
        raise OpcUaSecurityError(
            f"application_uri: expected a URI such as 'urn:cellinspect:station-1', got "
            f"{application_uri!r}"
        )
    if days <= 0:
        raise OpcUaSecurityError(f"days: must be > 0, got {days}")
    if not overwrite:
        for label, path in (("cert_path", cert_path), ("key_path", key_path)):
            if path.exists():
                raise OpcUaSecurityError(
                    f"{label}: {path} exists; pass overwrite=True to replace it"
                )
    host = hostname or socket.gethostname()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path in (cert_path, key_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an overwritten file keeps its old mode otherwise
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info(
        "wrote OPC UA certificate %s (URI %s, host %s) and key %s",
        cert_path,
        application_uri,
        host,
        key_path,
    )
