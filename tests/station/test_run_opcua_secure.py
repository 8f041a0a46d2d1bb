"""`cellinspect run` with OPC UA at its defaults: Basic256Sha256 and users, no anonymous.

A real station subprocess with `opcua: {enabled: true, users_file: ...}` and nothing else
about security. It generates its own self-signed certificate into the store's data dir at the
first start and logs its thumbprint; a client with its own certificate, SignAndEncrypt and a
user's password runs a job and gets its result (stored by the station); an anonymous client
and a client asking for security None are refused. A second start reuses the certificate.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import BadIdentityTokenRejected, UaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from cellinspect.plc.opcua_security import make_self_signed
from cellinspect.plc.opcua_server import NAMESPACE
from tests.station.runner import StationProcess, stored_results, write_station

CLIENT_URI = "urn:cellinspect:test-client"
USERS = {"operator": "op-pass-4c1e"}
GUARD_S = 60.0  # a hang guard only


def _thumbprint(cert: Path) -> str:
    digest = x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA1())
    return ":".join(f"{b:02X}" for b in digest)


async def _client(url: str, pki: Path, *, secure: bool, user: str | None) -> Client:
    client = Client(url=url, timeout=GUARD_S)
    client.application_uri = CLIENT_URI
    if secure:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(pki / "client.pem"),
            str(pki / "client-key.pem"),
            server_certificate=str(pki.parent / "data" / "opcua" / "station-cert.pem"),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    if user is not None:
        client.set_user(user)
        client.set_password(USERS[user])
    return client


async def _job(client: Client) -> str:
    """Connect, start one single job, return the JobId the station answered."""
    async with client:
        idx = await client.get_namespace_index(NAMESPACE)
        system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        vsm = await system.get_child(f"{idx}:VisionStateMachine")
        auto = await vsm.get_child(f"{idx}:VisionAutomaticModeStateMachine")
        job_id: str = await auto.call_method(
            f"{idx}:StartSingleJob",
            ua.Variant("meas-1", ua.VariantType.String),
            ua.Variant("7", ua.VariantType.String),
        )
        return job_id


def test_default_opcua_is_signed_encrypted_with_users_and_a_generated_certificate(
    tmp_path: Path,
) -> None:
    users_file = tmp_path / "opcua-users.yaml"
    users_file.write_text(json.dumps(USERS), encoding="utf-8")
    users_file.chmod(0o600)
    pki = tmp_path / "pki"
    make_self_signed(pki / "client.pem", pki / "client-key.pem", CLIENT_URI, "localhost")
    station_file = write_station(
        tmp_path / "station.yaml",
        trigger={"mode": "software"},
        opcua={"enabled": True, "host": "127.0.0.1", "port": 0, "users_file": str(users_file)},
    )
    cert = tmp_path / "data" / "opcua" / "station-cert.pem"
    with StationProcess(station_file) as station:
        running = station.wait_running()
        url = running["links"]["opcua"]["endpoint"]
        generated = [r for r in station.records if "generated a self-signed" in str(r["msg"])]
        assert cert.is_file() and (cert.parent / "station-key.pem").stat().st_mode & 0o077 == 0
        assert len(generated) == 1 and _thumbprint(cert) in generated[0]["msg"]

        with pytest.raises(BadIdentityTokenRejected):  # anonymous, though encrypted
            asyncio.run(_job(asyncio.run(_client(url, pki, secure=True, user=None))))
        with pytest.raises(UaError, match="No matching endpoints"):  # security None
            asyncio.run(_job(asyncio.run(_client(url, pki, secure=False, user="operator"))))
        job_id = asyncio.run(_job(asyncio.run(_client(url, pki, secure=True, user="operator"))))
        assert job_id
        station.wait_parts(1, timeout=GUARD_S)
        assert station.stop() == 0, station.log_text()
    (stored,) = stored_results(tmp_path / "data")
    assert stored.result.part_id == 7
    assert not any(USERS["operator"] in json.dumps(r) for r in station.records)

    thumbprint = _thumbprint(cert)
    with StationProcess(station_file) as again:  # the same certificate after a restart
        again.wait_running()
        assert not any("generated a self-signed" in str(r["msg"]) for r in again.records)
        assert any(thumbprint in str(r["msg"]) for r in again.records), again.log_text()
        assert again.stop() == 0
    assert _thumbprint(cert) == thumbprint
