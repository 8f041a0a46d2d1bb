"""Letterbox input: shapes kept, padding neutral and kept out of maps, old manifests stretch.

Real parts throughout: the shipped backbone's input spec and manifests, onnxruntime sessions
of small real graphs (tests/conftest.py), and a classifier head fitted here on a few images.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    ResizeMode,
    load_manifest,
    sealed_fields,
    verified_package_sha256,
    write_manifest,
)
from cellinspect.inference.runner import ModelRunner
from cellinspect.inference.tiling import input_notes, prepare_input
from cellinspect.preprocess.model_input import letterbox_box, neutral_pixel, preparer_for
from cellinspect.training.dataset import RoiReader, load_dataset
from cellinspect.training.fit_classifier import fit_classifier
from tests.conftest import ROOT, build_brightness_anomaly_model

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"
SHIPPED = [
    ROOT / "models" / name / "1" / "model.onnx" for name in ("flange-anomaly", "flange-classifier")
]


def _spec(resize: ResizeMode | None) -> InputSpec:
    return load_manifest(BACKBONE).input.model_copy(update={"resize": resize})


def _disk(width: int, height: int) -> np.ndarray:
    """Black image with a white disk of radius height/3 in the middle."""
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), height // 3, (255, 255, 255), -1)
    return image


def _extent(plane: np.ndarray, level: float) -> tuple[int, int]:
    """(width, height) of the pixels above `level`."""
    ys, xs = np.nonzero(plane > level)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_letterbox_keeps_the_shape_and_pads_with_the_neutral_pixel() -> None:
    image = _disk(240, 120)
    spec = _spec(ResizeMode.LETTERBOX)
    batch = np.asarray(prepare_input([image], spec, tally=False))
    box = letterbox_box(240, 120, 224, 224)
    assert (box.x, box.y, box.width, box.height) == (0, 56, 224, 112)
    # Padding normalises to 0 (the backbone's mean grey, 127), on every channel.
    assert neutral_pixel(spec) == (127, 127, 127)
    assert np.all(batch[0, :, :56] == 0.0) and np.all(batch[0, :, 168:] == 0.0)
    assert np.all(batch[0, :, 56:168].min(axis=(1, 2)) < -0.9)  # the black image area
    w, h = _extent(batch[0, 0], 0.5)
    assert abs(w - h) <= 2  # the disk is still round
    stretched = np.asarray(prepare_input([image], _spec(ResizeMode.STRETCH), tally=False))
    w, h = _extent(stretched[0, 0], 0.5)
    assert h > 1.8 * w  # stretching the 2:1 image makes it an upright ellipse


def test_square_images_are_the_same_under_letterbox_and_stretch() -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    a = prepare_input([image], _spec(ResizeMode.LETTERBOX), tally=False)
    b = prepare_input([image], _spec(None), tally=False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("model", SHIPPED, ids=lambda p: p.parent.parent.name)
def test_shipped_manifests_without_the_key_stretch_and_keep_their_seal(model: Path) -> None:
    raw = json.loads((model.parent / "manifest.json").read_text(encoding="utf-8"))
    assert "resize" not in raw["input"] and "tile" not in raw["input"]
    manifest = load_manifest(model)
    assert manifest.input.resize is None and manifest.input.resize_mode is ResizeMode.STRETCH
    assert manifest.seal is not None and sealed_fields(manifest) == manifest.seal.fields
    assert verified_package_sha256(model, manifest) == manifest.seal.package_sha256
    # The tensor is the plain stretch of before: cv2.resize, then (x * scale - mean) / std.
    image = np.random.default_rng(2).integers(0, 256, (90, 310, 3), dtype=np.uint8)
    spec = manifest.input
    got = np.asarray(ModelRunner.load("m", model, trusted_keys=None).prepare([image]))
    resized = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    rgb = resized[..., ::-1] if spec.colour.value == "RGB" else resized
    want = (rgb.astype(np.float64) * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(got[0], want.transpose(2, 0, 1), atol=1e-5)


def _letterboxed_brightness(folder: Path) -> Path:
    path = build_brightness_anomaly_model(folder, size=16)
    manifest = load_manifest(path)
    spec = manifest.input.model_copy(update={"resize": ResizeMode.LETTERBOX})
    write_manifest(manifest.model_copy(update={"input": spec}), path)
    return path


def test_letterbox_anomaly_map_covers_the_image_only(tmp_path: Path) -> None:
    runner = ModelRunner.load("b", _letterboxed_brightness(tmp_path / "b" / "1"))
    wide = np.full((32, 64, 3), 128, np.uint8)  # 2:1, so rows 4..11 of 16 are image
    wide[10:20, 40:50] = 20  # a dark spot in the right half
    tall = np.full((48, 24, 3), 128, np.uint8)  # 1:2, so columns 4..11 are image
    (w_out, t_out) = runner.predict([wide, tall])
    assert w_out.anomaly_map is not None and w_out.anomaly_map.shape == (8, 16)
    assert t_out.anomaly_map is not None and t_out.anomaly_map.shape == (16, 8)
    row, col = np.unravel_index(int(np.argmax(w_out.anomaly_map)), w_out.anomaly_map.shape)
    assert 2 <= row <= 5 and 9 <= col <= 13  # where the spot is, in image-area cells
    assert w_out.anomaly_score == pytest.approx(float(w_out.anomaly_map.max()))
    assert t_out.anomaly_score == pytest.approx(0.0, abs=1e-6)  # flat grey, grey padding


def test_station_slices_keep_each_image_geometry(tmp_path: Path) -> None:
    """The station prepares all ROIs at once and runs slices: sizes travel with the slice."""
    runner = ModelRunner.load("b", _letterboxed_brightness(tmp_path / "b" / "1"))
    images = [np.full((h, w, 3), 128, np.uint8) for w, h in ((64, 32), (16, 48), (20, 20))]
    images[1][30:40, 4:12] = 250
    batch = runner.prepare(images)
    sliced = runner.postprocess(runner.run(batch[1:3]))
    whole = runner.predict(images[1:3])
    for a, b in zip(sliced, whole, strict=True):
        assert a.anomaly_map is not None and b.anomaly_map is not None
        assert a.anomaly_map.shape == b.anomaly_map.shape
        assert a.anomaly_score == pytest.approx(b.anomaly_score)
    assert [o.anomaly_map.shape for o in sliced if o.anomaly_map is not None] == [
        (16, 5),  # 16x48 -> 5x16 in the 16x16 input
        (16, 16),
    ]


def test_an_old_stretch_model_says_once_that_it_distorts(tmp_path: Path) -> None:
    runner = ModelRunner.load("b", build_brightness_anomaly_model(tmp_path / "b" / "1"))
    input_notes()  # start counting here
    runner.predict([np.full((20, 60, 3), 128, np.uint8)] * 3 + [np.zeros((16, 16, 3), np.uint8)])
    notes = input_notes()
    assert len(notes) == 1
    assert "3 of 4 image(s) are stretched" in notes[0] and "--resize letterbox" in notes[0]
    assert input_notes() == []  # said once
    runner.predict([np.zeros((30, 32, 3), np.uint8)])  # within 10 %: nothing to say
    assert input_notes() == []


def _classes(root: Path) -> Path:
    """Six wide images per class: bright vs dark discs on mid grey."""
    rng = np.random.default_rng(5)
    for label, level in (("good", 230), ("dent", 30)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            image = np.full((100, 260, 3), 128, np.uint8)
            centre = (int(rng.integers(40, 220)), int(rng.integers(30, 70)))
            cv2.circle(image, centre, 20, (level, level, level), -1)
            cv2.imwrite(str(root / label / f"{i}.png"), image)
    return root


def test_fits_record_letterbox_by_default_and_use_the_station_path(tmp_path: Path) -> None:
    data = load_dataset(_classes(tmp_path / "data"))
    rep = fit_classifier(data, RoiReader(None), BACKBONE, tmp_path / "c" / "1", "c", "1")
    manifest = load_manifest(rep.model_path)
    assert manifest.input.resize is ResizeMode.LETTERBOX
    # Fitting fed the preparer's own letterboxed images: predicting on them or on the raw
    # wide image gives the same probabilities.
    runner = ModelRunner.load("c", rep.model_path)
    raw = cv2.imread(str(data.items[0].path))
    fitted = preparer_for(manifest.input).fit_image(raw)
    assert fitted.shape == (224, 224, 3)
    a, b = runner.predict([raw, fitted])
    for label in manifest.labels:
        assert a.class_scores[label] == pytest.approx(b.class_scores[label], abs=1e-6)
    stretch = fit_classifier(
        data, RoiReader(None), BACKBONE, tmp_path / "s" / "1", "s", "1", resize=ResizeMode.STRETCH
    )
    assert load_manifest(stretch.model_path).input.resize is ResizeMode.STRETCH
    with pytest.raises(ModelError, match="which of its tiles"):
        fit_classifier(
            data, RoiReader(None), BACKBONE, tmp_path / "t" / "1", "t", "1", resize=ResizeMode.TILE
        )


def test_cli_names_the_resize_choices(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["fit-classifier", str(tmp_path), "--out", str(tmp_path / "m" / "1"), "--resize", "crop"],
    )
    assert res.exit_code != 0
    said = " ".join(res.output.replace("│", " ").split())  # rich wraps it in a box
    assert "--resize must be one of stretch, letterbox, tile, got 'crop'" in said


def test_evaluate_prints_the_stretch_note_once(tmp_path: Path) -> None:
    """`evaluate` on wide images with an old (stretching) model: one input line, not one per
    image, after the report."""
    model = build_brightness_anomaly_model(tmp_path / "b" / "1")
    for label, level in (("good", 128), ("dent", 10)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            image = np.full((20, 60, 3), 128, np.uint8)
            image[8:12, 20 + i : 30 + i] = level
            cv2.imwrite(str(tmp_path / "data" / label / f"{i}.png"), image)
    input_notes()
    res = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("input: ")]
    assert len(lines) == 1 and "6 of 6 image(s) are stretched" in lines[0]
