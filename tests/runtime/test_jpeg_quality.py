"""The shipped recipe on JPEG frames at the quality docs/benchmarks/jpeg-quality.md calls enough.

Real files, real decoder, real onnxruntime sessions: the 40 labelled samples are written as
JPEG (OpenCV's encoder, as a camera's MJPEG stream would deliver them), read back through the
command-line source and judged by the shipped recipe. At quality 99 with the usual 4:2:0
chroma, or quality 95 without chroma subsampling (4:4:4), good parts still pass (at most the
~5 % that review_at sends to QA anyway) and no defective part passes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.runtime.inspector import Inspector
from cellinspect.runtime.pipeline import run_pipeline
from cellinspect.sources.registry import source_for_paths
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = ROOT / "sample_images"
SAMPLING = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}


@pytest.mark.parametrize(("quality", "sampling"), [(99, "420"), (95, "444")])
def test_samples_as_jpeg_at_the_documented_quality(
    tmp_path: Path, quality: int, sampling: str
) -> None:
    truth: dict[str, str] = {}
    with (SAMPLES / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = cv2.imread(str(SAMPLES / row["file"]), cv2.IMREAD_COLOR)
            assert image is not None
            params = [
                cv2.IMWRITE_JPEG_QUALITY,
                quality,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                SAMPLING[sampling],
            ]
            ok, buf = cv2.imencode(".jpg", image, params)
            assert ok
            name = Path(row["file"]).with_suffix(".jpg").name
            (tmp_path / name).write_bytes(buf.tobytes())
            truth[name] = row["label"]

    results: list[InspectedFrame] = []
    stats = run_pipeline(
        source_for_paths([tmp_path]), Inspector.from_recipe(RECIPE), results.append
    )
    assert stats.count == len(truth) == 40 and stats.errors == 0
    verdicts = {Path(r.result.path or "").name: r.result.verdict for r in results}
    escapes = [n for n, v in verdicts.items() if truth[n] != "good" and v is Verdict.PASS]
    false_rejects = [n for n, v in verdicts.items() if truth[n] == "good" and v is not Verdict.PASS]
    assert escapes == []
    assert len(false_rejects) <= 3, false_rejects  # as on the BMP originals (test_shipped_station)
    assert verdicts["part_0001_good.jpg"] is Verdict.PASS
    assert verdicts["part_0002_scratch.jpg"] is Verdict.FAIL
