"""The MQTT link alone against a real broker that checks passwords: alarms raised and
cleared, the retained state, a wrong password refused without the password in any log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cellinspect.plant.mqtt_config import MqttConfig, MqttTlsConfig
from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity
from tests.servers.mosquitto import MosquittoServer, mosquitto_fixture, require_mosquitto

PASSWORD = "s3cret-Plant-pw"
mosquitto = mosquitto_fixture(users={"cell-9": PASSWORD})
WHO = StationIdentity(station_id="cell-9", site="plant-b", area=None, line="l1")
BASE = "cellinspect/plant-b/_/l1/cell-9"
Message = tuple[bool, str, str]


def _link(tmp_path: Path, broker: MosquittoServer, password: str, alarms: list[str]) -> MqttLink:
    pw = tmp_path / "mqtt.pw"
    pw.write_text(password + "\n", encoding="utf-8")
    cfg = MqttConfig(
        enabled=True, port=broker.port, username="cell-9", password_file=pw, reconnect_max_s=1
    )
    return MqttLink(cfg, WHO, tmp_path / "outbox.sqlite", alarms=lambda: list(alarms))


def _kind(kind: str, **fields: object) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        body = json.loads(message[2])
        return message[1] == f"{BASE}/{kind}" and all(body[k] == v for k, v in fields.items())

    return match


def test_alarms_are_raised_and_cleared_through_the_outbox(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    alarms: list[str] = []
    sub = mosquitto.subscribe(f"{BASE}/#", "-q", "1")
    link = _link(tmp_path, mosquitto, PASSWORD, alarms).start()
    try:
        sub.wait_for(_kind("state", state="online"))
        alarms.append("STORE_UNREACHABLE: the result store does not answer (3 pending)")
        _, _, raised = sub.wait_for(_kind("alarm", active=True))
        alarms.clear()
        _, _, cleared = sub.wait_for(_kind("alarm", active=False))
    finally:
        link.close()
        sub.close()
    up, down = json.loads(raised), json.loads(cleared)
    assert up["code"] == down["code"] == "STORE_UNREACHABLE"
    assert up["event_id"] != down["event_id"] and down["seq"] == up["seq"] + 1
    assert (up["site"], up["area"], up["line"], up["station_id"]) == (
        "plant-b",
        None,
        "l1",
        "cell-9",
    )
    assert link.snapshot()["backlog"] == 0 and link.state == "closed"
    assert any(_kind("state", state="offline")(m) for m in sub.messages)


def test_a_wrong_password_is_refused_and_never_logged(
    tmp_path: Path, mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = _link(tmp_path, mosquitto, "not-the-password", []).start()
    try:
        end = time.monotonic() + 20
        while link.last_error is None and time.monotonic() < end:  # guard only
            time.sleep(0.05)
        assert link.state == "disconnected"
        assert link.last_error is not None and "refused" in link.last_error
    finally:
        link.close(drain_s=0)
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text
    assert "refused" in caplog.text


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test plant CA")])
    ca = cert("test plant CA", ca_key, ca_name, ca_key, True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert("127.0.0.1", server_key, ca_name, ca_key, False)
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_to_a_broker_verified_by_its_ca(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    broker = MosquittoServer(require_mosquitto(), tls=(ca, cert, key))
    try:
        broker.start()
        cfg = MqttConfig(enabled=True, port=broker.port, tls=MqttTlsConfig(ca=ca))
        link = MqttLink(cfg, WHO, tmp_path / "outbox.sqlite").start()
        try:
            end = time.monotonic() + 20
            while link.state != "connected" and time.monotonic() < end:  # guard only
                time.sleep(0.05)
            assert link.state == "connected", link.last_error
        finally:
            link.close()
        # Without the CA the broker's certificate is not trusted: no connection.
        untrusted = MqttConfig(enabled=True, port=broker.port, tls=MqttTlsConfig())
        other = MqttLink(untrusted, WHO, tmp_path / "outbox2.sqlite").start()
        try:
            end = time.monotonic() + 20
            while other.last_error is None and time.monotonic() < end:  # guard only
                time.sleep(0.05)
            assert other.last_error is not None and "TLS" in other.last_error
            assert other.state == "disconnected" and other.connects == 0
        finally:
            other.close(drain_s=0)
    finally:
        broker.close()
