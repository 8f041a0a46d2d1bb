"""The adaptive loop on the shipped line: inspect, review (API), export, train, evaluate, deploy.

One sequence with real parts: the shipped recipe and models judge the sample images through the
API's upload route, a QA user labels most of them through the review route, `cellinspect
export` writes them with export.json, `cellinspect train` fits a detector through the recipe,
`cellinspect evaluate` judges it on the recorded test split through the recipe, and the station
loads the new model in the recipe and judges a part with it. The commands are the ones
docs/training.md shows.
"""

from __future__ import annotations

import json
import shlex
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cellinspect.api import create_app
from cellinspect.cli import app
from cellinspect.config import load_recipe
from cellinspect.entities import Verdict
from cellinspect.export.record import EXPORT_FILE, read_export_record
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.preprocess_contract import check_recipe_fits
from cellinspect.runtime.inspector import Inspector
from cellinspect.settings import load_settings
from cellinspect.sources.decode import decode_image_file
from cellinspect.storage.factory import open_store
from tests.api.helpers import TOKEN, auth_as, write_users_file
from tests.conftest import ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))
pytestmark = pytest.mark.slow  # fits two models: about a minute on a 2-core machine

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"
LEFT_UNREVIEWED = 4  # good parts QA did not get to: they must not be exported


def truth(path: Path) -> str:
    """part_0007_dent.bmp -> dent; the sample's ground truth from its file name."""
    return path.stem.split("_", 2)[2]


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A station's data folder after the shipped recipe judged every sample and QA labelled
    all but a few good parts through the API; returns its settings file."""
    root = tmp_path_factory.mktemp("loop")
    settings_file = root / "settings.yaml"
    settings_file.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(root / "data"),
                "users_file": str(write_users_file(root / "users.yaml")),
                "api_token": TOKEN,
                "pass_sample_rate": 1.0,  # keep PASS images too: good parts to learn from
                "disk_budget_mb": None,
                "defect_classes": sorted({truth(p) for p in SAMPLES} - {"good"}),
            }
        ),
        encoding="utf-8",
    )
    settings = load_settings(settings_file)
    store = open_store(settings)
    inspector = Inspector.from_recipe(RECIPE)
    try:
        with TestClient(create_app(settings, store, inspector)) as client:
            ids: dict[str, str] = {}
            for path in SAMPLES:
                response = client.post(
                    "/inspections",
                    files={"file": (path.name, path.read_bytes(), "image/bmp")},
                    headers=auth_as("otto"),
                )
                assert response.status_code == 201, response.text
                ids[path.name] = response.json()["result"]["id"]
            assert client.app.state.services.writer.flush(30.0)  # type: ignore[attr-defined]
            skip = [p.name for p in SAMPLES if truth(p) == "good"][:LEFT_UNREVIEWED]
            for path in SAMPLES:
                if path.name in skip:
                    continue
                label = truth(path)
                body = (
                    {"label": "good"}
                    if label == "good"
                    else {"label": "defect", "defect_class": label}
                )
                response = client.put(
                    f"/results/{ids[path.name]}/review", json=body, headers=auth_as("ann")
                )
                assert response.status_code == 200, response.text
            unauthenticated = client.put(f"/results/{ids[skip[0]]}/review", json={"label": "good"})
            assert unauthenticated.status_code == 401
    finally:
        inspector.close()
        store.close()
    yield settings_file


def run(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def documented_loop() -> list[list[str]]:
    """The commands under the loop marker of docs/training.md, as argument lists."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    block = text.split("<!-- loop:", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert all(line in readme for line in lines), "README's loop differs from docs/training.md"
    commands = [shlex.split(line) for line in lines]
    assert all(c[0] == ".venv/bin/cellinspect" for c in commands)
    return [c[1:] for c in commands]


@pytest.fixture
def repo_like(tmp_path: Path, line: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder where the documented relative paths lead to the shipped recipe and
    backbone, and the station's settings point at the reviewed line's data."""
    (tmp_path / "models").mkdir()
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "models" / "efficientnet-lite0").symlink_to(ROOT / "models" / "efficientnet-lite0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CELLINSPECT_DATA_DIR", str(load_settings(line).data_dir))
    return tmp_path


def test_review_export_train_evaluate_deploy(repo_like: Path) -> None:
    export_cmd, train_cmd, evaluate_cmd = documented_loop()
    assert [export_cmd[0], train_cmd[0], evaluate_cmd[0]] == ["export", "train", "evaluate"]

    # export: the reviewed parts, with how the station prepared their images
    run(*export_cmd)
    export = repo_like / export_cmd[1]
    record = read_export_record(export / EXPORT_FILE)
    assert len(record.images) == len(SAMPLES) - LEFT_UNREVIEWED
    assert {i.label for i in record.images} == {truth(p) for p in SAMPLES}
    assert all(i.reviewer == "ann" and i.label_source == "review" for i in record.images)
    (recipe_record,) = record.recipes
    loaded = load_recipe(RECIPE)
    assert recipe_record.name == loaded.name
    assert recipe_record.ops() == loaded.preprocess
    assert [r.name for r in recipe_record.roi_list()] == ["part"]

    # train through the recipe: a classifier head on the backbone (no torch, the cheapest)
    out = run(*train_cmd)
    assert "skipped" not in out
    model_dir = repo_like / train_cmd[train_cmd.index("--out") + 1]
    model = model_dir / "model.onnx"
    manifest = load_manifest(model)
    assert manifest.preprocess == recipe_record.preprocess
    assert manifest.roi_size == [224, 224]
    assert set(manifest.labels) == {truth(p) for p in SAMPLES}
    split = json.loads((model_dir / "split.json").read_text())
    assert sum(split["counts"]["test"].values()) > 0

    # evaluate on the recorded test split, through the recipe
    run(*evaluate_cmd)
    rep = json.loads((repo_like / evaluate_cmd[evaluate_cmd.index("--json") + 1]).read_text())
    assert rep["counts"] == split["counts"]["test"]
    assert rep["skipped"] == []
    assert rep["model"] == "flange-classifier" and rep["version"] == "2"

    # deploy: the station loads it in the recipe and judges a part with it
    models_cfg = [
        m.model_copy(update={"path": model}) if m.name == "flange-classifier" else m
        for m in loaded.models
    ]
    recipe = loaded.model_copy(update={"models": models_cfg})
    station = Inspector.from_recipe(RECIPE, recipe=recipe)
    try:
        judged = station.inspect_image(decode_image_file(SAMPLES[0]), name=SAMPLES[0].name)
    finally:
        station.close()
    assert judged.result.error is None
    assert judged.result.verdict in set(Verdict)
    assert any(m.name == "flange-classifier" and m.version == "2" for m in judged.result.models)


def test_the_same_export_trains_without_the_recipe(line: Path, tmp_path: Path) -> None:
    """export.json stands in for -r: fit-anomaly on export/good gives a model the recipe
    accepts, and evaluate without -r cuts the images the same way."""
    export = tmp_path / "export"
    run("export", export, "--settings", line, "-r", RECIPE)
    model_dir = tmp_path / "models" / "flange-anomaly" / "3"
    run(
        "fit-anomaly", "--good", export / "good", "--out", model_dir, "--roi", "part",
        "--backbone", BACKBONE, "--coreset", "200",
    )  # fmt: skip
    manifest = load_manifest(model_dir / "model.onnx")
    assert manifest.preprocess == read_export_record(export / EXPORT_FILE).recipes[0].preprocess
    assert manifest.roi_size == [224, 224]
    check_recipe_fits(manifest, load_recipe(RECIPE), "flange-anomaly")  # raises if refused
    report = tmp_path / "eval.json"
    run("evaluate", model_dir / "model.onnx", export, "--roi", "part", "--json", report)
    assert json.loads(report.read_text())["skipped"] == []


def test_the_api_export_records_the_recipe_it_inspects_with(line: Path) -> None:
    settings = load_settings(line)
    store = open_store(settings)
    inspector = Inspector.from_recipe(RECIPE)
    try:
        with TestClient(create_app(settings, store, inspector)) as client:
            assert client.post("/exports", headers=auth_as("vic")).status_code == 403
            response = client.post("/exports", headers=auth_as("ann"))
            assert response.status_code == 201, response.text
            name = response.json()["name"]
    finally:
        inspector.close()
        store.close()
    record = read_export_record(settings.resolved_export_dir / name / EXPORT_FILE)
    (recipe_record,) = record.recipes
    assert recipe_record.sha256 == inspector.recipe_sha256
    assert recipe_record.ops() == load_recipe(RECIPE).preprocess
