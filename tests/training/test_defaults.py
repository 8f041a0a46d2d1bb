"""build-default-models: the shipped flange models rebuilt from rendered parts, small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.config import load_recipe
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.inference.preprocess_contract import check_recipe_fits, preprocess_record
from cellinspect.training.evaluate import EvaluationReport
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "flange.yaml"
BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


@pytest.mark.slow
def test_build_default_models_writes_models_the_shipped_recipe_accepts(tmp_path: Path) -> None:
    models, work = tmp_path / "models", tmp_path / "work"
    args = ["build-default-models", "--models-dir", str(models), "--work-dir", str(work)]
    args += ["--backbone", str(BACKBONE), "--train-count", "40", "--val-count", "20"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    recipe = load_recipe(RECIPE)
    for name in ("flange-anomaly", "flange-classifier"):
        path = models / name / "1" / "model.onnx"
        manifest = load_manifest(path)
        assert manifest.sha256 == sha256_file(path)
        assert manifest.preprocess == preprocess_record(recipe.preprocess)
        assert manifest.roi_size == [224, 224]
        check_recipe_fits(manifest, recipe, name)
    anomaly = load_manifest(models / "flange-anomaly" / "1" / "model.onnx")
    thr = anomaly.thresholds
    assert thr.review_at is not None and thr.fail_at is not None
    assert 0 < thr.review_at <= thr.fail_at
    metrics = anomaly.provenance["metrics"]
    assert metrics["validation_images"] == 20 and 0.0 <= metrics["validation_auroc"] <= 1.0
    assert "review_at" in result.output and "validation accuracy" in result.output


def test_anomaly_thresholds_come_from_the_good_parts_as_the_manifest_names_them() -> None:
    """Good means outside the defect set (the manifest's good_labels), not the label 'good'."""
    from cellinspect.training.defaults import _anomaly_thresholds

    report = EvaluationReport(model="m", version="1", task="anomaly", images=6, counts={})
    good_scores = [0.1, 0.2, 0.3, 0.4]
    report.per_image = [{"label": "ok", "score": s, "defect": False} for s in good_scores] + [
        {"label": "dent", "score": 5.0, "defect": True},
        {"label": "good", "score": 9.0, "defect": True},
    ]
    review_at, fail_at = _anomaly_thresholds(report, 0.5, 1.10)
    assert review_at == pytest.approx(float(np.quantile(good_scores, 0.5)), abs=1e-4)
    assert fail_at == pytest.approx(0.44, abs=1e-4)
