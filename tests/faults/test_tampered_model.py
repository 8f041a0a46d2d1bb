"""Fault: a tampered model package. `cellinspect run` on a recipe whose model manifest was
edited after sealing (the thresholds moved so defective parts would PASS), or whose .onnx was
swapped, or that a station requiring signatures finds unsigned, refuses to start: exit code
not 0, the log names the manifest or model file and what changed, and nothing is stored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.station.runner import StationProcess, stored_results
from tests.station.test_run_plc import RECIPE_1, plc_station

GUARD_S = 120.0


def _tampered_recipe(folder: Path, edit: str) -> tuple[Path, Path]:
    """A copy of the flange recipe whose anomaly model is a copy of the shipped one, edited."""
    package = folder / "models" / "flange-anomaly" / "1"
    shutil.copytree(ROOT / "models" / "flange-anomaly" / "1", package)
    model = package / "model.onnx"
    if edit == "thresholds":
        manifest = package / "manifest.json"
        data = json.loads(manifest.read_text())
        data["thresholds"].update(review_at=98.0, fail_at=99.0)  # as in issue 19
        manifest.write_text(json.dumps(data, indent=2))
    elif edit == "model":
        with model.open("ab") as fh:
            fh.write(b"\0")
    text = RECIPE_1.read_text().replace("../models/flange-anomaly/1/model.onnx", str(model))
    recipe = folder / "recipes" / "flange.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(text.replace("../", f"{ROOT}/"))
    return recipe, model


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ("thresholds", "manifest fields changed since sealed"),
        ("model", "model bytes changed"),
        ("unsigned", "not signed"),
    ],
)
def test_tampered_model_refuses_to_start(tmp_path: Path, edit: str, said: str) -> None:
    recipe, model = _tampered_recipe(tmp_path, edit)
    fields: dict[str, object] = {}
    if edit == "unsigned":  # sealed but unsigned; the station trusts one key
        from cellinspect.inference.manifest import write_key_pair

        _, public = write_key_pair(tmp_path / "qa")
        fields["trusted_model_keys"] = [str(public)]
    station = plc_station(tmp_path, recipes={1: recipe}, **fields)
    with StationProcess(station) as proc:
        code = proc.wait_exit(GUARD_S)
        log = proc.log_text()
    assert code != 0, log
    assert said in log, log
    named = model if edit == "model" else model.with_name("manifest.json")
    assert str(named) in log, log
    assert "Traceback" not in log, log
    data = tmp_path / "data"
    assert not data.exists() or not stored_results(data), "no result may be stored"
