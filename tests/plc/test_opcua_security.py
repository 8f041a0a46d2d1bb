"""The OPC UA server secured: policies, the station certificate, users; real asyncua clients.

Servers bind 127.0.0.1 on a free port. Certificates come from `make_self_signed`, the helper a
station uses, for the server and for the test client alike.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import BadIdentityTokenRejected, BadUserAccessDenied, UaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cellinspect.entities import InspectedFrame
from cellinspect.errors import ConfigError
from cellinspect.plc.errors import PlcError
from cellinspect.plc.opcua_security import (
    POLICY_TYPES,
    OpcUaSecurity,
    OpcUaSecurityError,
    PolicyName,
    file_format,
    make_self_signed,
)
from cellinspect.plc.opcua_server import NAMESPACE, VisionOpcUaServer
from cellinspect.plc.vision_state import VisionStateMachine

STATION_URI = "urn:cellinspect:test-station"
CLIENT_URI = "urn:cellinspect:test-client"
PASSWORD = "correct-horse-7"
USERS = {"operator": PASSWORD, "qa": "another-pw-42"}


@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_key: Path  # a valid key that belongs to no certificate here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    make_self_signed(d / "station.crt", d / "station.key", STATION_URI, "127.0.0.1")
    # asyncua's client reads PEM only from files named *.pem
    make_self_signed(d / "client.pem", d / "client-key.pem", CLIENT_URI, "localhost")
    make_self_signed(d / "other.pem", d / "other-key.pem", "urn:other", "localhost")
    return Pki(
        d / "station.crt",
        d / "station.key",
        d / "client.pem",
        d / "client-key.pem",
        d / "other-key.pem",
    )


def _no_jobs(meas: str, part: str) -> InspectedFrame:
    raise NotImplementedError("no jobs in these tests")


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[[OpcUaSecurity], VisionOpcUaServer]]:
    started: list[VisionOpcUaServer] = []

    def start(security: OpcUaSecurity) -> VisionOpcUaServer:
        srv = VisionOpcUaServer(
            VisionStateMachine(recipes=["flange"]), _no_jobs, port=0, security=security
        )
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def secured(
    pki: Pki, start_server: Callable[[OpcUaSecurity], VisionOpcUaServer]
) -> VisionOpcUaServer:
    """Sign-and-encrypt only, anonymous refused, two users."""
    return start_server(
        OpcUaSecurity(
            policies=("basic256sha256_sign_encrypt",),
            certificate=pki.server_cert,
            private_key=pki.server_key,
            allow_anonymous=False,
            users=USERS,
        )
    )


async def _client(
    srv: VisionOpcUaServer,
    pki: Pki,
    *,
    secure: bool = True,
    user: str | None = None,
    password: str | None = None,
) -> Client:
    client = Client(url=srv.url, timeout=5)
    client.application_uri = CLIENT_URI
    if secure:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(pki.client_cert),
            str(pki.client_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    if user is not None:
        client.set_user(user)
    if password is not None:
        client.set_password(password)
    return client


async def _work(client: Client) -> tuple[str, bool, str]:
    """Connect, read CurrentState, select automatic mode, prepare a recipe, and put it back."""
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        vsm = await system.get_child(f"{idx}:VisionStateMachine")
        recipes = await system.get_child(f"{idx}:RecipeManagement")
        state = await vsm.get_child(f"{idx}:CurrentState")
        before = await state.read_value()
        await vsm.call_method(f"{idx}:SelectModeAutomatic")
        prepared = await recipes.call_method(f"{idx}:PrepareRecipe", "flange")
        after = await state.read_value()
        await vsm.call_method(f"{idx}:Halt")
        await vsm.call_method(f"{idx}:Reset")
        return before, prepared, after


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- over OPC UA


def test_client_with_certificate_and_password_works(secured: VisionOpcUaServer, pki: Pki) -> None:
    client = _run(_client(secured, pki, user="operator", password=PASSWORD))
    assert _run(_work(client)) == ("Preoperational", True, "Operational")
    assert secured.machine.label == "Preoperational"


def test_the_server_offers_only_its_policies_with_its_certificate(
    secured: VisionOpcUaServer, pki: Pki
) -> None:
    async def endpoints() -> list[ua.EndpointDescription]:
        client = Client(url=secured.url, timeout=5)
        return list(await client.connect_and_get_server_endpoints())

    eps = _run(endpoints())
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    assert [(e.SecurityPolicyUri, e.SecurityMode) for e in eps] == [
        (SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)
    ]
    (ep,) = eps
    assert ep.ServerCertificate == cert.public_bytes(serialization.Encoding.DER)
    assert ep.Server.ApplicationUri == STATION_URI
    assert [t.TokenType for t in ep.UserIdentityTokens] == [ua.UserTokenType.UserName]


@pytest.mark.parametrize(
    ("user", "password", "refusal"),
    [
        (None, None, BadIdentityTokenRejected),  # anonymous
        ("operator", "wrong-password", BadUserAccessDenied),
        ("operator", "", BadUserAccessDenied),
        ("operator", USERS["qa"], BadUserAccessDenied),  # another user's password
        ("nobody", PASSWORD, BadUserAccessDenied),
    ],
)
def test_anonymous_and_wrong_credentials_are_refused(
    secured: VisionOpcUaServer,
    pki: Pki,
    user: str | None,
    password: str | None,
    refusal: type[Exception],
) -> None:
    client = _run(_client(secured, pki, user=user, password=password))
    with pytest.raises(refusal):
        _run(_work(client))
    assert secured.machine.label == "Preoperational"


def test_a_client_asking_for_security_none_is_refused(secured: VisionOpcUaServer, pki: Pki) -> None:
    client = _run(_client(secured, pki, secure=False, user="operator", password=PASSWORD))
    with pytest.raises(UaError, match="No matching endpoints"):
        _run(_work(client))


@pytest.fixture(scope="module")
def anonymous_secured(
    pki: Pki, start_server: Callable[[OpcUaSecurity], VisionOpcUaServer]
) -> VisionOpcUaServer:
    """Sign-and-encrypt only, anonymous allowed: only the channel keeps strangers out."""
    return start_server(
        OpcUaSecurity(
            policies=("basic256sha256_sign_encrypt",),
            certificate=pki.server_cert,
            private_key=pki.server_key,
        )
    )


def test_a_session_on_an_unsecured_channel_is_refused_by_the_server(
    anonymous_secured: VisionOpcUaServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncua's client gives up when no endpoint offers None; a client that goes on anyway
    (opening a session on the unsecured discovery channel) is refused by the server."""
    secure_client = _run(_client(anonymous_secured, pki))
    assert _run(_work(secure_client))[1] is True  # anonymous over the encrypted channel works

    def any_endpoint(
        endpoints: list[ua.EndpointDescription], mode: ua.MessageSecurityMode, uri: str
    ) -> ua.EndpointDescription:
        return endpoints[0]

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(any_endpoint))
    client = _run(_client(anonymous_secured, pki, secure=False))
    with pytest.raises(BadUserAccessDenied):
        _run(_work(client))
    assert anonymous_secured.machine.label == "Preoperational"


def test_none_and_encrypted_endpoints_side_by_side(
    pki: Pki, start_server: Callable[[OpcUaSecurity], VisionOpcUaServer]
) -> None:
    """With 'none' offered too, anonymous works unsecured, and a password sent on the unsecured
    endpoint is encrypted with the station certificate; a callable checks the users."""
    seen: list[str] = []

    def check(user: str, password: str) -> bool:
        seen.append(user)
        return (user, password) == ("operator", PASSWORD)

    srv = start_server(
        OpcUaSecurity(
            policies=("none", "basic256sha256_sign_encrypt"),
            certificate=pki.server_cert,
            private_key=pki.server_key,
            users=check,
        )
    )
    assert _run(_work(_run(_client(srv, pki, secure=False))))[1] is True
    assert _run(_work(_run(_client(srv, pki, secure=False, user="operator", password=PASSWORD))))[1]
    assert _run(_work(_run(_client(srv, pki, user="operator", password=PASSWORD))))[1] is True
    with pytest.raises(BadUserAccessDenied):
        _run(_work(_run(_client(srv, pki, secure=False, user="operator", password="bad"))))
    assert seen == ["operator"] * 3


def test_passwords_never_reach_the_server_log(
    secured: VisionOpcUaServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _run(_work(_run(_client(secured, pki, user="operator", password=PASSWORD))))
    with pytest.raises(BadUserAccessDenied):
        _run(_work(_run(_client(secured, pki, user="operator", password="wrong-secret-99"))))
    # asyncua's own client logs its requests, password included, at DEBUG: only the server's
    # side (asyncua.server and cellinspect) is ours to keep clean.
    server_side = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("asyncua.client")
    )
    assert "refused a session for user 'operator'" in server_side
    assert "asyncua.server.uaprocessor" in {r.name for r in caplog.records}
    assert PASSWORD not in server_side and "wrong-secret-99" not in server_side


def test_a_key_that_changed_on_disk_is_a_start_error(tmp_path: Path) -> None:
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    make_self_signed(cert, key, STATION_URI, "127.0.0.1")
    security = OpcUaSecurity(
        policies=("basic256sha256_sign",), certificate=cert, private_key=key, allow_anonymous=True
    )
    key.write_text("not a key any more")
    srv = VisionOpcUaServer(VisionStateMachine(), _no_jobs, port=0, security=security)
    with pytest.raises(PlcError, match="cannot start"):
        srv.start()


# --------------------------------------------------------------------------- configuration


def test_the_policy_names_map_to_asyncua() -> None:
    assert set(POLICY_TYPES) == {"none", "basic256sha256_sign", "basic256sha256_sign_encrypt"}
    s = OpcUaSecurity()
    assert s.policy_types == [ua.SecurityPolicyType.NoSecurity]
    assert s.identity_tokens == [ua.AnonymousIdentityToken]
    assert s.application_uri is None


def _bad(pki: Pki, tmp_path: Path) -> list[tuple[dict[str, Any], str]]:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    missing = tmp_path / "nowhere" / "station.key"
    enc_key = tmp_path / "enc.key"
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    enc_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass"),
        )
    )
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    no_uri = tmp_path / "no-uri.crt"
    no_uri_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    no_uri.write_bytes(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(no_uri_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(no_uri_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    no_uri_keyfile = tmp_path / "no-uri.key"
    no_uri_keyfile.write_bytes(
        no_uri_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    enc = "basic256sha256_sign_encrypt"
    files = {"certificate": pki.server_cert, "private_key": pki.server_key}
    return [
        ({"policies": ()}, r"^policies: give at least one"),
        ({"policies": ("basic128",)}, r"^policies: unknown policy 'basic128'"),
        ({"policies": ("none", "none")}, r"^policies: each policy once"),
        ({"policies": (enc,)}, r"^certificate: policy 'basic256sha256_sign_encrypt' .* not set"),
        (
            {"policies": (enc,), "certificate": pki.server_cert},
            r"^private_key: policy 'basic256sha256_sign_encrypt' .*private_key is not set",
        ),
        (
            {
                "policies": ("basic256sha256_sign",),
                "certificate": pki.server_cert,
                "private_key": missing,
            },
            rf"^private_key: file not found: {missing}$",
        ),
        (
            {"certificate": tmp_path / "absent.crt", "private_key": pki.server_key},
            rf"^certificate: file not found: {tmp_path / 'absent.crt'}$",
        ),
        ({"certificate": pki.server_cert}, r"^private_key: certificate and private_key go"),
        ({"private_key": pki.server_key}, r"^certificate: certificate and private_key go"),
        (
            {"certificate": garbage, "private_key": pki.server_key},
            r"^certificate: .*garbage.pem is not a PEM or DER X.509 certificate",
        ),
        (
            {"certificate": pki.server_cert, "private_key": garbage},
            r"^private_key: .*garbage.pem is not a PEM or DER private key",
        ),
        (
            {"certificate": pki.server_cert, "private_key": enc_key},
            r"^private_key: .* is encrypted",
        ),
        (
            {"certificate": pki.server_cert, "private_key": ec_key},
            r"^private_key: .* must be an RSA",
        ),
        (
            {"certificate": pki.server_cert, "private_key": pki.other_key},
            r"^private_key: .*other-key.pem is not the key of certificate .*station.crt",
        ),
        (
            {"certificate": no_uri, "private_key": no_uri_keyfile},
            r"^certificate: .*no-uri.crt has no SubjectAlternativeName URI",
        ),
        ({"allow_anonymous": False}, r"^allow_anonymous: anonymous sessions are refused and no"),
        ({"users": {}}, r"^users: empty"),
        ({"users": {"": "pw"}, **files, "policies": (enc,)}, r"^users: every user name"),
        ({"users": {"op": ""}, **files, "policies": (enc,)}, r"^users: the password of user 'op'"),
        ({"users": "op:pw"}, r"^users: expected a mapping"),
        ({"users": USERS}, r"^users: with only policy 'none' passwords would cross"),
        (
            {"users": USERS, **files, "policies": ("none", "basic256sha256_sign")},
            r"^users: on the unsecured endpoint",
        ),
    ]


def test_invalid_settings_name_the_field(pki: Pki, tmp_path: Path) -> None:
    for kwargs, message in _bad(pki, tmp_path):
        with pytest.raises(OpcUaSecurityError, match=message) as info:
            OpcUaSecurity(**kwargs)
        assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
        for password in (PASSWORD, "key-pass", "pw"):
            assert password not in str(info.value), (kwargs, info.value)


def test_valid_settings_and_no_secret_in_repr(pki: Pki) -> None:
    policies: tuple[PolicyName, ...] = (
        "none",
        "basic256sha256_sign",
        "basic256sha256_sign_encrypt",
    )
    users = dict(USERS)
    s = OpcUaSecurity(
        policies=policies,
        certificate=pki.server_cert,
        private_key=pki.server_key,
        allow_anonymous=False,
        users=users,
    )
    assert s.application_uri == STATION_URI
    assert s.policy_types == [
        ua.SecurityPolicyType.NoSecurity,
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ]
    assert s.identity_tokens == [ua.UserNameIdentityToken]
    assert PASSWORD not in repr(s) and PASSWORD not in s.describe()
    assert s.describe() == (
        "policies none, basic256sha256_sign, basic256sha256_sign_encrypt; anonymous refused; "
        "2 users"
    )
    users["late"] = "x"
    assert isinstance(s.users, Mapping) and "late" not in s.users  # a copy was taken


def test_der_files_are_read_by_content(pki: Pki, tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    (tmp_path / "station.pem").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "station.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert file_format(tmp_path / "station.pem") == "der"
    assert file_format(pki.server_cert) == "pem"
    s = OpcUaSecurity(
        policies=("basic256sha256_sign",),
        certificate=tmp_path / "station.pem",
        private_key=tmp_path / "station.key",
    )
    assert s.application_uri == STATION_URI


def test_make_self_signed_writes_an_opc_ua_certificate(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "pki" / "station.pem", tmp_path / "pki" / "private" / "key.pem"
    make_self_signed(cert_path, key_path, STATION_URI, "192.168.10.5", common_name="station-1")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [STATION_URI]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.168.10.5"]
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "station-1"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    s = OpcUaSecurity(
        policies=("basic256sha256_sign",), certificate=cert_path, private_key=key_path
    )
    assert s.application_uri == STATION_URI

    make_self_signed(tmp_path / "h.pem", tmp_path / "h.key", "urn:x", "station-1.plant.local")
    san = (
        x509.load_pem_x509_certificate((tmp_path / "h.pem").read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert san.get_values_for_type(x509.DNSName) == ["station-1.plant.local"]


def test_make_self_signed_keeps_existing_files_and_checks_its_input(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(cert_path, key_path, STATION_URI, "localhost")
    before = key_path.read_bytes()
    with pytest.raises(OpcUaSecurityError, match=r"^cert_path: .* exists; pass overwrite=True"):
        make_self_signed(cert_path, key_path, STATION_URI, "localhost")
    assert key_path.read_bytes() == before
    key_path.chmod(0o644)
    make_self_signed(cert_path, key_path, STATION_URI, "localhost", overwrite=True)
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(OpcUaSecurityError, match=r"^application_uri: expected a URI"):
        make_self_signed(tmp_path / "a.pem", tmp_path / "b.pem", "station", "localhost")
    with pytest.raises(OpcUaSecurityError, match=r"^days: must be > 0"):
        make_self_signed(tmp_path / "a.pem", tmp_path / "b.pem", STATION_URI, days=0)
