"""fit-anomaly on rendered parts: real backbone, real fit, real scores, honest errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.inference.runner import ModelRunner
from cellinspect.training.dataset import DatasetError, RoiReader, good_images
from cellinspect.training.fit_anomaly import AnomalyFitParams, fit_anomaly
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def _write_parts(folder: Path, count: int, seed: int, defect_rate: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for spec in plan_parts(count, seed, defect_rate):
        cv2.imwrite(str(folder / f"p{spec.index:03d}_{spec.label}.png"), render_part(spec))
        labels.append(spec.label)
    return labels


def test_fit_on_good_parts_scores_defects_higher(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 12, seed=11, defect_rate=0.0)
    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    params = AnomalyFitParams(coreset_size=300, projection_dim=None, batch_size=4)
    report = fit_anomaly(
        good_images(good), RoiReader(None), BACKBONE, tmp_path / "m" / "1", "m", "1", params
    )
    assert report.images_used == 12 and report.bank_size == 300
    assert [Path(p).name for p, _ in report.skipped] == ["broken.png"]
    manifest = load_manifest(report.model_path)
    assert manifest.sha256 == sha256_file(report.model_path)
    assert manifest.provenance["data"]["good_images"] == 12
    assert max(report.holdout_scores) == pytest.approx(1.0)
    runner = ModelRunner.load("m", report.model_path)
    test = tmp_path / "test"
    labels = _write_parts(test, 12, seed=99, defect_rate=0.5)
    outs = runner.predict([cv2.imread(str(p)) for p in sorted(test.glob("*.png"))])
    good_scores = [o.anomaly_score for o, lbl in zip(outs, labels, strict=True) if lbl == "good"]
    bad_scores = [o.anomaly_score for o, lbl in zip(outs, labels, strict=True) if lbl != "good"]
    assert sum(b > max(good_scores) for b in bad_scores if b is not None) >= len(bad_scores) // 2


def test_too_few_good_images(tmp_path: Path) -> None:
    _write_parts(tmp_path / "good", 3, seed=1, defect_rate=0.0)
    with pytest.raises(ModelError, match="at least 5"):
        fit_anomaly(
            good_images(tmp_path / "good"), RoiReader(None), BACKBONE, tmp_path / "o", "m", "1"
        )


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        good_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not found"):
        good_images(tmp_path / "missing")
