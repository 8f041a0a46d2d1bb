"""The station behind its OPC UA server: StartSingleJob runs a station job, recipes by catalog.

The OPC 40100-shaped server (`plc/opcua_server.py`) calls a job runner and keeps a state
machine. Here the runner is the station's own trigger path (the same inspector, deadline,
fail-safe and outputs as a PLC trigger), and PrepareRecipe selects from the station's
catalog by number ("2") or recipe name, loading it the way the PLC's command 1 does: while
idle only, and a recipe that fails to load leaves the previous one live.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cellinspect.entities import InspectedFrame
from cellinspect.errors import ConfigError
from cellinspect.plc.opcua_security import OpcUaSecurity, make_self_signed
from cellinspect.plc.registers import ErrorCode
from cellinspect.plc.vision_state import (
    AutoState,
    InvalidTransitionError,
    VisionState,
    VisionStateMachine,
)
from cellinspect.station.config import read_yaml

if TYPE_CHECKING:
    from cellinspect.plc.opcua_server import VisionOpcUaServer
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

_PREPARABLE = (AutoState.INITIALIZED, AutoState.READY)  # never mid-job: not switched, refused


class CatalogVisionState(VisionStateMachine):
    """PrepareRecipe switches the station's live recipe before it reports Ready."""

    def __init__(self, runtime: StationRuntime) -> None:
        super().__init__(runtime.catalog.external_ids())
        self.runtime = runtime

    def prepare_recipe(self, recipe: str) -> None:
        number = self.runtime.catalog.lookup(recipe)
        if number is None:
            raise InvalidTransitionError(
                f"PrepareRecipe: unknown recipe {recipe!r}; known: "
                f"{self.runtime.catalog.external_ids()}"
            )
        if self.state is not VisionState.OPERATIONAL or self.auto not in _PREPARABLE:
            super().prepare_recipe(recipe)  # raises with the state rule's message
        if number != self.runtime.active_recipe:
            code = self.runtime.select_recipe(number)
            if code is not ErrorCode.NONE:
                raise InvalidTransitionError(
                    f"PrepareRecipe: recipe {number} not loaded ({code.name})"
                )
        super().prepare_recipe(recipe)

    def follow_live_recipe(self, number: int) -> None:
        """The API or the PLC switched the live recipe: PreparedRecipe follows it.

        Otherwise OPC UA clients would keep reading, and get results tagged with, the recipe
        they prepared last rather than the one that judges the parts. Unprepared stays so.
        """
        with self._lock:
            if self.recipe is None or self.runtime.catalog.lookup(self.recipe) == number:
                return
            self.recipe = str(number)
            self._set(self.state, self.auto)


def recipe_went_live(server: VisionOpcUaServer, number: int) -> None:
    """Tell the OPC UA side that recipe `number` is live now (whoever selected it)."""
    if isinstance(server.machine, CatalogVisionState):
        server.machine.follow_live_recipe(number)


def _security(runtime: StationRuntime) -> OpcUaSecurity | None:
    """The server's security settings from the station file (None: anonymous, no security).

    Signing policies without a configured certificate get the station's own self-signed one
    (`station_certificate`).
    """
    cfg = runtime.station.opcua
    if cfg.security_policies == ["none"] and cfg.allow_anonymous:
        log.warning(
            "OPC UA: security policy 'none' with anonymous sessions (configured): any client "
            "on the network may run jobs and switch recipes"
        )
        return None
    users = None if cfg.users_file is None else _read_users(cfg.users_file)
    certificate, private_key = cfg.certificate, cfg.private_key
    if certificate is None and any(p != "none" for p in cfg.security_policies):
        certificate, private_key = station_certificate(
            runtime.station.store.data_dir, runtime.station.station_id
        )
    return OpcUaSecurity(
        policies=tuple(cfg.security_policies),
        certificate=certificate,
        private_key=private_key,
        allow_anonymous=cfg.allow_anonymous,
        users=users,
    )


def station_certificate(data_dir: Path, station_id: str) -> tuple[Path, Path]:
    """The station's self-signed OPC UA certificate and key in `data_dir`/opcua/.

    Generated at the first start (URI ``urn:cellinspect:<station_id>``) and kept: clients
    that trusted it keep working after a restart. Its SHA-1 thumbprint (what OPC UA clients
    show) is logged every start so an operator can compare it with what a client is offered.
    """
    folder = data_dir / "opcua"
    cert_path, key_path = folder / "station-cert.pem", folder / "station-key.pem"
    if not (cert_path.is_file() and key_path.is_file()):
        make_self_signed(cert_path, key_path, f"urn:cellinspect:{station_id}", overwrite=True)
        log.warning(
            "OPC UA: no certificate configured; generated a self-signed station certificate "
            "%s (thumbprint sha1 %s)",
            cert_path.name,
            certificate_thumbprint(cert_path),
        )
    else:
        log.info(
            "OPC UA: station certificate %s (thumbprint sha1 %s)",
            cert_path.name,
            certificate_thumbprint(cert_path),
        )
    return cert_path, key_path


def certificate_thumbprint(path: Path) -> str:
    """SHA-1 over the certificate's DER bytes, colon-separated hex, as OPC UA clients show it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    data = path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.lstrip().startswith(b"-----BEGIN")
        else x509.load_der_x509_certificate(data)
    )
    digest = cert.fingerprint(hashes.SHA1())  # OPC UA thumbprints are SHA-1
    return ":".join(f"{b:02X}" for b in digest)


def _read_users(path: Path) -> dict[str, str]:
    """user -> password from a YAML mapping; errors name the file, never a password."""
    data = read_yaml(path, "OPC UA users file")
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int) for k, v in data.items()
    ):
        raise ConfigError(f"{path}: expected a mapping of user name -> password")
    return {k: str(v) for k, v in data.items()}


def start_opcua(runtime: StationRuntime) -> VisionOpcUaServer:
    """Start the server in Operational/Ready with the active recipe prepared."""
    from cellinspect.plc.opcua_server import VisionOpcUaServer

    machine = CatalogVisionState(runtime)
    machine.select_mode_automatic()
    VisionStateMachine.prepare_recipe(machine, str(runtime.active_recipe))

    def run_job(meas: str, part: str) -> InspectedFrame:
        part_id = int(part) if part.strip().isdigit() else None
        return runtime.trigger(part_id, origin="opcua")

    cfg = runtime.station.opcua
    server = VisionOpcUaServer(
        machine,
        run_job,
        host=cfg.host,
        port=cfg.port,
        simulated=False,
        security=_security(runtime),
    )
    server.start()
    log.info("OPC UA server on %s", server.url)
    return server
