"""Sealed model packages: a copy of a shipped model, edited as a tamperer would, is refused at
load naming the file and what changed; re-sealing records who and when and changes the hash
results carry; a station's trusted keys demand a valid ed25519 signature."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    MANIFEST_NAME,
    load_manifest,
    load_public_keys,
    seal_problem,
)
from cellinspect.inference.runner import ModelRunner, SessionOptions
from tests.conftest import ROOT

SHIPPED = ROOT / "models" / "flange-anomaly" / "1"
FAST = SessionOptions(warmup_runs=0)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the shipped anomaly model; returns its .onnx path."""
    folder = tmp_path / "flange-anomaly" / "1"
    shutil.copytree(SHIPPED, folder)
    return folder / "model.onnx"


def _edit_thresholds(model: Path, review_at: float, fail_at: float) -> None:
    path = model.with_name(MANIFEST_NAME)
    data = json.loads(path.read_text())
    data["thresholds"].update(review_at=review_at, fail_at=fail_at)
    path.write_text(json.dumps(data, indent=2))


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return res.exit_code, res.output


def test_shipped_package_loads_and_records_its_package_hash(package: Path) -> None:
    runner = ModelRunner.load("a", package, FAST)
    manifest = load_manifest(package)
    assert manifest.seal is not None
    assert runner.ref.sha256 == manifest.seal.package_sha256 != manifest.sha256


def test_edited_thresholds_are_refused_naming_file_and_field(package: Path) -> None:
    _edit_thresholds(package, 0.98, 0.99)
    with pytest.raises(ModelError) as err:
        ModelRunner.load("a", package, FAST)
    message = str(err.value)
    assert str(package.with_name(MANIFEST_NAME)) in message
    assert "manifest fields changed" in message and ": thresholds;" in message
    assert "cellinspect models seal" in message


def test_edited_model_bytes_are_refused(package: Path) -> None:
    with package.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match=r"model\.onnx: model bytes changed"):
        ModelRunner.load("a", package, FAST)


def test_removing_the_seal_does_not_help(package: Path) -> None:
    path = package.with_name(MANIFEST_NAME)
    data = json.loads(path.read_text())
    del data["seal"]
    data["thresholds"]["fail_at"] = 0.99
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unsealed"):
        ModelRunner.load("a", package, FAST)


def test_reseal_records_who_and_a_new_package_hash(package: Path) -> None:
    before = ModelRunner.load("a", package, FAST).ref.sha256
    _edit_thresholds(package, 0.5, 0.9)
    code, out = _cli("models", "seal", str(package.parent), "--by", "qa: j.doe")
    assert code == 0, out
    assert "sealed" in out and "j.doe" in out
    manifest = load_manifest(package)
    assert manifest.seal is not None and manifest.seal.sealed_by == "qa: j.doe"
    assert manifest.thresholds.fail_at == 0.9
    after = ModelRunner.load("a", package, FAST).ref.sha256
    assert after == manifest.seal.package_sha256 != before


def test_signature_required_by_trusted_keys(package: Path, tmp_path: Path) -> None:
    code, out = _cli("models", "keygen", str(tmp_path / "qa"))
    assert code == 0, out
    private, public = tmp_path / "qa.pem", tmp_path / "qa.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert _cli("models", "keygen", str(tmp_path / "qa"))[0] == 1  # never overwrites a key
    trusted = load_public_keys([public])

    with pytest.raises(ModelError, match="not signed"):  # sealed, but the station wants more
        ModelRunner.load("a", package, FAST, trusted)

    code, out = _cli("models", "seal", str(package), "--by", "qa", "--key", str(private))
    assert code == 0, out
    runner = ModelRunner.load("a", package, FAST, trusted)
    assert runner.ref.sha256 == load_manifest(package).seal.package_sha256  # type: ignore[union-attr]

    _cli("models", "keygen", str(tmp_path / "other"))
    other = load_public_keys([tmp_path / "other.pub.pem"])
    with pytest.raises(ModelError, match="not a trusted model key"):
        ModelRunner.load("a", package, FAST, other)

    # a tamperer who re-seals without the key cannot keep the signature
    _edit_thresholds(package, 0.98, 0.99)
    assert _cli("models", "seal", str(package), "--by", "mallory")[0] == 0
    with pytest.raises(ModelError, match="not signed"):
        ModelRunner.load("a", package, FAST, trusted)

    # nor forge one by copying an old signature into a new seal
    _cli("models", "seal", str(package), "--by", "qa", "--key", str(private))
    path = package.with_name(MANIFEST_NAME)
    data = json.loads(path.read_text())
    signature = data["seal"]["signature"]
    _edit_thresholds(package, 0.97, 0.99)
    _cli("models", "seal", str(package), "--by", "mallory")
    data = json.loads(path.read_text())
    data["seal"]["signature"] = signature
    path.write_text(json.dumps(data))
    problem = seal_problem(package, load_manifest(package), trusted)
    assert problem is not None and "does not verify" in problem


def test_models_listing_shows_seal_state(package: Path, tmp_path: Path) -> None:
    root = package.parent.parent.parent
    code, out = _cli("models", str(root))
    assert code == 0 and "sealed" in out and "MISMATCH" not in out
    _edit_thresholds(package, 0.98, 0.99)
    code, out = _cli("models", str(root))
    assert code == 0 and "MISMATCH" in out


def test_validate_names_the_tampered_model(package: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    text = (ROOT / "recipes" / "flange.yaml").read_text()
    text = text.replace("../models/flange-anomaly/1/model.onnx", str(package))
    recipe.write_text(text.replace("../", f"{ROOT}/"))
    code, out = _cli("validate", str(recipe))
    assert code == 0, out
    _edit_thresholds(package, 0.98, 0.99)
    code, out = _cli("validate", str(recipe))
    assert code == 1
    assert "models[0] (flange-anomaly)" in out and str(package.with_name(MANIFEST_NAME)) in out
    assert "thresholds" in out and "valid recipe" not in out
    with package.open("ab") as fh:
        fh.write(b"\0")
    code, out = _cli("validate", str(recipe))
    assert code == 1 and "model bytes changed" in out


def test_validate_station_checks_signatures(package: Path, tmp_path: Path) -> None:
    from cellinspect.inference.manifest import write_key_pair
    from tests.station.runner import write_station

    recipe = tmp_path / "recipe.yaml"
    text = (ROOT / "recipes" / "flange.yaml").read_text()
    text = text.replace("../models/flange-anomaly/1/model.onnx", str(package))
    recipe.write_text(text.replace("../", f"{ROOT}/"))
    private, public = write_key_pair(tmp_path / "qa")
    station = write_station(
        tmp_path / "station.yaml", recipes={1: str(recipe)}, trusted_model_keys=[str(public)]
    )
    code, out = _cli("validate", str(station))
    assert code == 1 and str(package.with_name(MANIFEST_NAME)) in out and "not signed" in out
    for model in (package, ROOT / "models" / "flange-classifier" / "1" / "model.onnx"):
        if model != package:  # sign a copy: the shipped classifier stays as it is
            copy = tmp_path / "flange-classifier" / "1"
            shutil.copytree(model.parent, copy)
            model = copy / "model.onnx"
            recipe.write_text(
                recipe.read_text().replace(
                    f"{ROOT}/models/flange-classifier/1/model.onnx", str(model)
                )
            )
        assert _cli("models", "seal", str(model), "--by", "qa", "--key", str(private))[0] == 0
    code, out = _cli("validate", str(station))
    assert code == 0 and "valid station" in out, out
