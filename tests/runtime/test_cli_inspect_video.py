"""`cellinspect inspect` on video files given on the command line, alone and mixed with images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from cellinspect.cli import app
from tests.conftest import ROOT

from .conftest import grey_part


def _write_avi(path: Path, frames: list[np.ndarray], codec: str = "MJPG") -> Path:
    """A real .avi (MJPG, as a line camera recorder would leave it, or lossless FFV1)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), 10.0, (width, height))
    assert writer.isOpened(), f"VideoWriter could not open a {codec} .avi"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _inspect(args: list[str], jsonl: Path) -> list[dict[str, object]]:
    result = CliRunner().invoke(app, ["inspect", *args, "--jsonl", str(jsonl)])
    assert result.exit_code == 0, result.output
    assert "not a decodable image" not in result.output
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def test_inspect_video_and_images_in_one_call(station: dict[str, Path], tmp_path: Path) -> None:
    video = _write_avi(tmp_path / "parts.AVI", [grey_part(), grey_part(scratch=True), grey_part()])
    image = station["images"] / "a_good.png"
    rows = _inspect(
        [str(image), str(video), str(image), "--recipe", str(station["recipe"])],
        tmp_path / "r.jsonl",
    )
    assert [(Path(str(r["path"])).name, r["frame_id"], r["verdict"]) for r in rows] == [
        ("a_good.png", 0, "pass"),
        ("parts.AVI", 0, "pass"),
        ("parts.AVI", 1, "fail"),
        ("parts.AVI", 2, "pass"),
        ("a_good.png", 0, "pass"),
    ]


def test_inspect_video_with_the_shipped_recipe(tmp_path: Path) -> None:
    """The user's call: `cellinspect inspect parts.avi --recipe recipes/flange.yaml`.

    Lossless FFV1: the shipped detector needs JPEG quality 100 (docs/benchmarks/jpeg-quality.md);
    an MJPG .avi at VideoWriter's default quality turns good parts into FAIL.
    """
    names = ["part_0001_good.bmp", "part_0002_scratch.bmp", "part_0006_crack.bmp"]
    frames = [np.asarray(cv2.imread(str(ROOT / "sample_images" / n)), np.uint8) for n in names]
    video = _write_avi(tmp_path / "parts.avi", frames, codec="FFV1")
    rows = _inspect(
        [str(video), "--recipe", str(ROOT / "recipes" / "flange.yaml")], tmp_path / "r.jsonl"
    )
    assert [r["frame_id"] for r in rows] == [0, 1, 2]
    assert all(r["path"] == str(video) and not r["error"] for r in rows)
    assert [r["verdict"] for r in rows] == ["pass", "fail", "fail"]
