"""Recipe loading and validation: key paths in errors, unknown keys rejected, paths resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.config import FolderSource, RecipeInvalidError, load_recipe
from cellinspect.errors import ConfigError

GOOD = """
name: demo
source: {type: folder, path: images, pattern: "*.png"}
preprocess:
  - {op: rotate, degrees: 90}
rois:
  - {name: part, x: 0, y: 0, width: 10, height: 10}
models:
  - {name: det, path: models/det/1/model.onnx}
decision:
  fail_safe: review
  thresholds:
    det: {fail_at: 1.5}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_recipe_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.models[0].path == (tmp_path / "models/det/1/model.onnx").resolve()
    assert isinstance(recipe.source, FolderSource)
    assert recipe.source.path == (tmp_path / "images").resolve()
    assert recipe.decision.fail_safe.value == "review"


@pytest.mark.parametrize(
    ("text", "expected_key"),
    [
        (GOOD.replace("fail_safe: review", "fail_safe: pass"), "decision.fail_safe"),
        (GOOD + "colour_mode: hsv\n", "colour_mode"),
        (
            GOOD.replace("{op: rotate, degrees: 90}", "{op: rotate, degree: 90}"),
            "preprocess.0.rotate",
        ),
        (GOOD.replace("{op: rotate, degrees: 90}", "{op: sharpen}"), "preprocess.0"),
        (GOOD.replace("width: 10", "width: 0"), "rois.0.width"),
        (GOOD.replace("type: folder", "type: ftp"), "source"),
        (GOOD.replace("det: {fail_at: 1.5}", "other: {fail_at: 1.5}"), "decision.thresholds"),
    ],
)
def test_invalid_recipes_name_the_key(tmp_path: Path, text: str, expected_key: str) -> None:
    with pytest.raises(RecipeInvalidError) as info:
        load_recipe(_write(tmp_path, text))
    assert any(expected_key in line for line in info.value.problems), info.value.problems


@pytest.mark.parametrize("text", ["", "just a string", "- a\n- list"])
def test_non_mapping_recipe(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="recipe"):
        load_recipe(_write(tmp_path, text))


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_undistort_needs_calibration(tmp_path: Path) -> None:
    text = GOOD.replace("{op: rotate, degrees: 90}", "{op: undistort}")
    with pytest.raises(RecipeInvalidError, match="calibration"):
        load_recipe(_write(tmp_path, text))


def test_validate_command_prints_key_paths_and_exits_1(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("width: 10", "width: -3") + "bogus: 1\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "rois.0.width" in result.output
    assert "bogus" in result.output


def test_validate_command_reports_missing_model_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(_write(tmp_path, GOOD))])
    assert result.exit_code == 1
    assert "model.onnx" in result.output
