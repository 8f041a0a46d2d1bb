"""Fakes shared by the PLC and line tests: a content-judging inspector and labelled images.

The inspector really looks at the picture (a bright blob is a FAIL), so the cell's tracking
and handshake can be checked against the truth without the weight of the real models.
"""

from __future__ import annotations

import csv
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from cellinspect.entities import ImageU8, InspectedFrame, InspectionResult, Verdict


class BlobInspector:
    """Judges the picture itself: a bright blob (any pixel over 200) is a 'scratch' FAIL.

    `gate`, when given, makes every inspection wait for it (to hold the station BUSY or push
    it past its deadline deterministically); `calls` records the part ids it saw.
    """

    recipe_name = "blob-test"
    recipe_sha256 = "0" * 64

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
