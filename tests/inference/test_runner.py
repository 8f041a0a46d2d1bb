"""ModelRunner: manifest checks at load, real onnxruntime sessions, output reading."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from cellinspect.config import Provider
from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import MANIFEST_NAME, load_manifest, write_manifest
from cellinspect.inference.runner import ModelRunner, SessionOptions


def _grey(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_anomaly_model_scores_follow_the_image(brightness_model: Path) -> None:
    runner = ModelRunner.load("b", brightness_model)
    flat, scratched = _grey(128), _grey(128)
    scratched[8, 2:14] = 0  # a dark line
    outs = runner.predict([flat, scratched])
    assert outs[0].task is Task.ANOMALY
    assert outs[0].anomaly_score == pytest.approx(0.0, abs=1e-6)
    assert outs[1].anomaly_score == pytest.approx(1.0, abs=1e-6)
    assert outs[1].anomaly_map is not None
    assert outs[1].anomaly_map.shape == (16, 16)
    assert outs[1].anomaly_map[8, 5] > 0.9 > outs[1].anomaly_map[0, 0] + 0.5


def test_images_are_resized_to_the_model_input(brightness_model: Path) -> None:
    runner = ModelRunner.load("b", brightness_model)
    (out,) = runner.predict([_grey(255, size=64)])
    assert out.anomaly_score == pytest.approx(127 / 128, abs=1e-3)


def test_classifier_reads_labels(colour_model: Path) -> None:
    runner = ModelRunner.load("c", colour_model)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = 255  # BGR: red channel last
    (out,) = runner.predict([red])
    assert max(out.class_scores, key=out.class_scores.__getitem__) == "stain"
    assert sum(out.class_scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_changed_model_file_is_refused(brightness_model: Path) -> None:
    with brightness_model.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        ModelRunner.load("b", brightness_model)


def test_missing_model_and_manifest_name_the_file(brightness_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nowhere\.onnx"):
        ModelRunner.load("x", tmp_path / "nowhere.onnx")
    (brightness_model.parent / MANIFEST_NAME).unlink()
    with pytest.raises(ModelError, match="manifest not found"):
        ModelRunner.load("b", brightness_model)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"input": {"name": "pixels"}}, "input 'pixels'"),
        ({"input": {"shape": [None, 3, 32, 32]}}, "input shape"),
        ({"outputs": [{"name": "nope", "meaning": "anomaly_score"}]}, "'nope' is not in the graph"),
        ({"task": "detection"}, "task"),
    ],
)
def test_manifest_mismatch_is_a_clear_error(
    brightness_model: Path, patch: dict[str, object], message: str
) -> None:
    path = brightness_model.parent / MANIFEST_NAME
    data = json.loads(path.read_text())
    for key, value in patch.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    with contextlib.suppress(ModelError):  # re-sealed, so the check after the seal's is seen
        write_manifest(load_manifest(brightness_model), brightness_model)
    with pytest.raises(ModelError, match=message):
        ModelRunner.load("b", brightness_model)


def test_unavailable_provider_is_named(brightness_model: Path) -> None:
    options = SessionOptions(providers=(Provider.TENSORRT, Provider.CPU))
    with pytest.raises(ModelError, match="TensorrtExecutionProvider"):
        ModelRunner.load("b", brightness_model, options)


def test_manifest_round_trip(brightness_model: Path) -> None:
    manifest = load_manifest(brightness_model)
    assert manifest.input.width == 16 and manifest.input.height == 16
    assert manifest.input.dynamic_batch
