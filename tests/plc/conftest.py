"""Fixtures for the PLC tests: a content-judging test inspector, labelled part images on disk,
and a station with its Modbus server on a free 127.0.0.1 port."""

from __future__ import annotations

import csv
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.entities import ImageU8, InspectedFrame, InspectionResult, Verdict
from cellinspect.plc.modbus_adapter import ModbusServer
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.sim_camera import FolderCatalog, SimCamera
from cellinspect.plc.station_interface import StationConfig, StationInterface


class BlobInspector:
    """Judges the picture itself: a bright blob (any pixel over 200) is a 'scratch' FAIL.

    `gate`, when given, makes every inspection wait for it (to hold the station BUSY or push
    it past its deadline deterministically); `calls` records the part ids it saw.
    """

    recipe_name = "blob-test"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.calls: list[int | None] = []
        self.started = threading.Event()

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        self.calls.append(part_id)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        bad = int(image.max()) > 200
        result = InspectionResult(
            result_id=uuid.uuid4().hex,
            frame_id=len(self.calls),
            source="test",
            verdict=Verdict.FAIL if bad else Verdict.PASS,
            reasons=("bright blob",) if bad else (),
            captured_wall=datetime.now(UTC),
            recipe_name=self.recipe_name,
            recipe_sha256="0" * 64,
            defect_class="scratch" if bad else None,
            path=name,
            part_id=part_id,
            encoder=encoder,
        )
        return InspectedFrame(result=result, image=image)


def part_image(defective: bool, seed: int) -> ImageU8:
    """A dark belt with a grey disc; a defective part has a bright scratch across the disc."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 40, size=(96, 96, 3), dtype=np.uint8)
    cv2.circle(img, (48, 48), 30, (120, 120, 120), -1)
    if defective:
        cv2.line(img, (30, 40), (66, 56), (255, 255, 255), 2)
    return img


def write_samples(folder: Path, labels: list[str]) -> Path:
    """Real PNG files plus labels.csv, as sample_images/ holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for i, label in enumerate(labels):
            name = f"part_{i:03d}_{label}.png"
            cv2.imwrite(str(folder / name), part_image(label != "good", i))
            writer.writerow([name, label])
    return folder


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
    ) -> Station:
        image = RegisterImage()
        insp = inspector or BlobInspector()
        camera = SimCamera(FolderCatalog(samples), drop_parts=drop_parts)
        station = StationInterface(image, camera, insp, config or StationConfig())
        server = ModbusServer(image, host="127.0.0.1", port=0)
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
