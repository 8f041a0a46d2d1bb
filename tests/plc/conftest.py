"""Fixtures for the PLC tests: a content-judging test inspector, labelled part images on disk,
and a station with its Modbus server on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cellinspect.entities import InspectedFrame
from cellinspect.plc.modbus_adapter import ModbusServer
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.sim_camera import FolderCatalog, SimCamera
from cellinspect.plc.station_interface import StationConfig, StationInterface
from tests.fakes import BlobInspector, write_samples


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    labels = ["good", "scratch", "good", "good", "scratch", "good", "crack", "good"]
    return write_samples(tmp_path / "samples", labels)


@dataclass
class Station:
    image: RegisterImage
    station: StationInterface
    server: ModbusServer
    inspector: BlobInspector
    camera: SimCamera

    @property
    def port(self) -> int:
        return self.server.port


MakeStation = Callable[..., Station]


@pytest.fixture
def make_station(samples: Path) -> Iterator[MakeStation]:
    """Factory: a started station + Modbus server on 127.0.0.1:<free port>; stopped after."""
    started: list[Station] = []

    def make(
        config: StationConfig | None = None,
        inspector: BlobInspector | None = None,
        drop_parts: tuple[int, ...] = (),
        supervise_from_connect: bool = False,
        on_result: Callable[[InspectedFrame], None] | None = None,
    ) -> Station:
        """`supervise_from_connect` wires the server to the watchdog as `cellinspect run` does."""
        image = RegisterImage()
        insp = inspector or BlobInspector()
        camera = SimCamera(FolderCatalog(samples), drop_parts=drop_parts)
        station = StationInterface(
            image, camera, insp, config or StationConfig(), on_result=on_result
        )
        server = ModbusServer(
            image,
            host="127.0.0.1",
            port=0,
            on_connect=(lambda _host: station.handshake.plc_connected())
            if supervise_from_connect
            else None,
        )
        server.start()
        station.start()
        s = Station(image, station, server, insp, camera)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.inspector.gate is not None:
            s.inspector.gate.set()
        s.station.stop()
        s.server.stop()
