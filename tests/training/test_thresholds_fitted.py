"""Thresholds written by `train --kind anomaly` and `fit-anomaly`: set on images the model never
fitted, honest on new parts, and `calibrate thresholds` refuses the fitted images."""

from __future__ import annotations

import json
import shutil
from math import prod
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.datagen.flange import generate_dataset, plan_parts, render_part
from cellinspect.inference.manifest import Manifest, SealState, load_manifest, seal_state
from cellinspect.inference.runner import ModelRunner
from cellinspect.training.dataset import Dataset, LabelledImage, load_dataset
from cellinspect.training.fitted_images import image_id
from cellinspect.training.split import calibration_split, load_split
from cellinspect.training.thresholds import default_thresholds
from tests.conftest import ROOT

BACKBONE = str(ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx")
PLACEHOLDERS = (1.0, 1.15)  # what fit_anomaly writes before calibration


def _invoke(args: list[str]) -> str:
    from cellinspect.cli import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def _tail_limit(n_calibration: int, n_new: int, level: float = 0.001) -> int:
    """Smallest j with P(at least j of n_new new parts score beyond every one of n_calibration
    calibration parts) <= level, for exchangeable scores: C(n_new, j) / C(n_new + n_cal, j).
    A threshold at the most extreme calibration part exceeding it means the guarantee failed."""
    for j in range(1, n_new + 1):
        if prod((n_new - i) / (n_new + n_calibration - i) for i in range(j)) <= level:
            return j
    return n_new + 1


def _held_out(folder: Path, seed: int) -> tuple[list[np.ndarray], list[bool]]:
    """New rendered parts (another seed): the same process as the training data."""
    images, defect = [], []
    for spec in plan_parts(30, seed, 0.5):
        images.append(render_part(spec))
        defect.append(spec.label != "good")
    return images, defect


def _check_on_new_parts(model: Path, manifest: Manifest, seed: int) -> None:
    """Escapes and good parts failed outright stay within what the calibration states."""
    cal = manifest.provenance["thresholds"]
    assert cal["escapes_allowed"] == 0  # too few defects for 1 %: every calibration one caught
    images, defect = _held_out(model.parent, seed)
    scores = np.array([o.anomaly_score for o in ModelRunner.load("m", model).predict(images)])
    bad, good = scores[np.array(defect)], scores[~np.array(defect)]
    review_at, fail_at = manifest.thresholds.review_at, manifest.thresholds.fail_at
    assert review_at is not None and fail_at is not None
    assert int((bad < review_at).sum()) < _tail_limit(cal["n_defect"], bad.size)
    assert int((good >= fail_at).sum()) < _tail_limit(cal["n_good"], good.size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("anomaly")
    data = root / "data"
    generate_dataset(data, count=40, seed=21, defect_rate=0.5, layout="class_folders")
    (data / "labels.csv").unlink()
    out = root / "models" / "m" / "1"
    args = ["train", str(data), "--kind", "anomaly", "--out", str(out), "--backbone", BACKBONE]
    output = _invoke(args)
    return data, out, output


def test_train_anomaly_writes_thresholds_set_on_val(trained: tuple[Path, Path, str]) -> None:
    data, out, output = trained
    manifest = load_manifest(out / "model.onnx")
    thr = manifest.thresholds
    assert (thr.review_at, thr.fail_at) != PLACEHOLDERS
    assert seal_state(out / "model.onnx", manifest) is SealState.SEALED
    split = load_split(out / "split.json")
    dataset = load_dataset(data)
    train, val = split.subset(dataset, "train"), split.subset(dataset, "val")
    fitted = {image_id(i.path) for i in train.with_labels(["good"]).items}
    assert set(manifest.provenance["fitted_images"]["ids"]) == fitted
    cal = manifest.provenance["thresholds"]
    assert cal["data"]["subset"] == "val"
    assert set(cal["data"]["images"]["ids"]) == {image_id(i.path) for i in val.items}
    assert not fitted & set(cal["data"]["images"]["ids"])
    n_good = val.counts()["good"]
    assert (cal["n_good"], cal["n_defect"]) == (n_good, len(val.items) - n_good)
    assert f"{n_good} / {len(val.items) - n_good}" in output
    assert "thresholds written, set on the val split" in output
    assert "fewer than 20" in output  # a handful of images: said to be rough
    # the test split is judged at the written thresholds
    assert manifest.provenance["metrics"]["test_escape_rate_at_review"] <= 1.0


def test_train_anomaly_thresholds_hold_on_new_parts(trained: tuple[Path, Path, str]) -> None:
    _, out, _ = trained
    _check_on_new_parts(out / "model.onnx", load_manifest(out / "model.onnx"), seed=77)


def test_calibrate_refuses_fitted_images_and_takes_others(
    trained: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from cellinspect.cli import app

    data, out, _ = trained
    model = tmp_path / "m" / "1" / "model.onnx"
    shutil.copytree(out, model.parent)
    split = load_split(out / "split.json")
    train = split.subset(load_dataset(data), "train")
    n_fitted = train.counts()["good"]
    base = ["calibrate", "thresholds", str(model), str(data), "--split", str(out / "split.json")]
    res = CliRunner().invoke(app, [*base, "--subset", "train", "--target-escape", "0.25"])
    assert res.exit_code == 1
    assert f"{n_fitted} of the {len(train.items)} calibration images were fitted on" in res.output
    assert "good/" in res.output  # names an example file
    # a copy of a fitted picture elsewhere is recognised by its bytes
    other = tmp_path / "other"
    for label in ("good", "scratch"):
        (other / label).mkdir(parents=True)
    shutil.copy(train.with_labels(["good"]).items[0].path, other / "good" / "renamed.png")
    shutil.copy(next((data / "scratch").iterdir()), other / "scratch" / "s.png")
    res = CliRunner().invoke(app, ["calibrate", "thresholds", str(model), str(other)])
    assert res.exit_code == 1 and "1 of the 2 calibration images" in res.output
    before = load_manifest(model).thresholds
    args = [*base, "--subset", "test", "--target-escape", "0.25", "--write", "manifest"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    manifest = load_manifest(model)
    assert manifest.thresholds != before
    assert manifest.provenance["thresholds"]["data"]["subset"] == "test"
    assert seal_state(model, manifest) is SealState.SEALED


def _folder(root: Path, parts: list[tuple[str, np.ndarray]]) -> Path:
    root.mkdir(parents=True)
    for i, (label, image) in enumerate(parts):
        cv2.imwrite(str(root / f"{i:03d}_{label}.png"), image)
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("fit")
    specs = plan_parts(44, 31, 19 / 44)
    good = _folder(root / "good", [(s.label, render_part(s)) for s in specs if s.label == "good"])
    bad = _folder(root / "bad", [(s.label, render_part(s)) for s in specs if s.label != "good"])
    out = root / "models" / "m" / "1"
    args = ["fit-anomaly", "--good", str(good), "--defects", str(bad), "--out", str(out)]
    output = _invoke([*args, "--coreset", "500", "--backbone", BACKBONE])
    return good, out, output


def test_fit_anomaly_keeps_a_seeded_part_apart(fitted: tuple[Path, Path, str]) -> None:
    good, out, output = fitted
    manifest = load_manifest(out / "model.onnx")
    assert (manifest.thresholds.review_at, manifest.thresholds.fail_at) != PLACEHOLDERS
    assert seal_state(out / "model.onnx", manifest) is SealState.SEALED
    record = manifest.provenance["thresholds"]["data"]["calibration_split"]
    assert (record["seed"], record["fraction"]) == (0, 0.2)
    images = sorted(good.iterdir())
    fit_part, kept, again = calibration_split(
        Dataset(good, [LabelledImage(p, "good") for p in images]), 0.2, 0
    )
    assert again == record  # the recorded seed and file list give back the same parts
    fitted_ids = set(manifest.provenance["fitted_images"]["ids"])
    assert fitted_ids == {image_id(i.path) for i in fit_part.items}
    cal = manifest.provenance["thresholds"]
    assert cal["n_good"] == len(kept.items) and cal["n_defect"] == 19
    assert not fitted_ids & set(cal["data"]["images"]["ids"])
    assert f"{len(kept.items)} good images kept apart and 19 from --defects" in output


def test_fit_anomaly_thresholds_hold_on_new_parts(fitted: tuple[Path, Path, str]) -> None:
    _, out, _ = fitted
    _check_on_new_parts(out / "model.onnx", load_manifest(out / "model.onnx"), seed=78)


@pytest.mark.slow
def test_fit_anomaly_without_defects_sets_review_on_good_parts(
    fitted: tuple[Path, Path, str], tmp_path: Path
) -> None:
    good, _, _ = fitted
    out = tmp_path / "m" / "1"
    args = ["fit-anomaly", "--good", str(good), "--out", str(out), "--coreset", "500"]
    output = _invoke([*args, "--backbone", BACKBONE, "--calibration-fraction", "0.3"])
    manifest = load_manifest(out / "model.onnx")
    cal = manifest.provenance["thresholds"]
    assert cal["n_defect"] == 0 and cal["escape_rate_calibration"] is None
    assert "good parts only" in cal["method"] and "escape rate unknown" in cal["guarantee"]
    assert "escape rate is not measured" in output
    assert manifest.provenance["thresholds"]["data"]["calibration_split"]["fraction"] == 0.3
    assert json.loads(json.dumps(cal))  # written as plain JSON (no NaN)


def _items(root: Path, counts: dict[str, int]) -> Dataset:
    return Dataset(
        root,
        [
            LabelledImage(root / f"{lbl}_{i:03d}.png", lbl)
            for lbl, n in counts.items()
            for i in range(n)
        ],
    )


def test_calibration_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    data = _items(tmp_path, {"good": 30, "defect": 10})
    fit_a, cal_a, rec_a = calibration_split(data, 0.2, seed=5)
    shuffled = Dataset(tmp_path, list(reversed(data.items)))
    fit_b, cal_b, rec_b = calibration_split(shuffled, 0.2, seed=5)
    assert cal_a.items == cal_b.items and fit_a.items == fit_b.items and rec_a == rec_b
    assert cal_a.counts() == {"defect": 2, "good": 6}
    assert not set(cal_a.items) & set(fit_a.items)
    _, cal_c, rec_c = calibration_split(data, 0.2, seed=6)
    assert cal_c.items != cal_a.items and rec_c["files_sha256"] == rec_a["files_sha256"]


def test_default_thresholds_fall_back_and_warn() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 50), rng.normal(4, 1, 9)])
    defect = np.array([False] * 50 + [True] * 9)
    choice = default_thresholds(scores, defect, target_escape=0.01, target_false_reject=0.05)
    assert choice.review_at <= scores[defect].min() and choice.escape_rate_calibration == 0
    assert choice.target_escape == 0.01 and "unreachable" in choice.guarantee
    assert any("at least 99 defective" in w for w in choice.warnings)
    assert any("9 defective image(s) (fewer than 20)" in w for w in choice.warnings)
    good_only = default_thresholds(scores[:50], defect[:50], 0.01, target_false_reject=0.1)
    assert good_only.false_reject_rate <= 0.1 and good_only.review_at <= good_only.fail_at
    assert good_only.to_dict()["escape_bound"] is None


def test_train_classifier_writes_thresholds_set_on_val(tmp_path: Path) -> None:
    """The shipped sample images: the head's review/fail thresholds come from the val split."""
    out = tmp_path / "cls" / "1"
    data = ROOT / "sample_images"
    _invoke(["train", str(data), "--out", str(out), "--backbone", BACKBONE])
    manifest = load_manifest(out / "model.onnx")
    thr = manifest.thresholds.default_class
    assert thr is not None and (thr.review_at, thr.fail_at) != (0.5, 0.8)  # fit_classifier's
    assert thr.review_at <= thr.fail_at <= 1.0
    split = load_split(out / "split.json")
    dataset = load_dataset(data)
    train, val = split.subset(dataset, "train"), split.subset(dataset, "val")
    assert set(manifest.provenance["fitted_images"]["ids"]) == {
        image_id(i.path) for i in train.items
    }
    cal = manifest.provenance["thresholds"]
    assert cal["n_good"] + cal["n_defect"] == len(val.items)


def test_fit_anomaly_on_too_few_good_parts_says_some_are_kept_apart(tmp_path: Path) -> None:
    from cellinspect.cli import app

    good = _folder(tmp_path / "good", [("good", render_part(s)) for s in plan_parts(5, 3, 0.0)])
    args = ["fit-anomaly", "--good", str(good), "--out", str(tmp_path / "m" / "1")]
    res = CliRunner().invoke(app, [*args, "--backbone", BACKBONE])
    assert res.exit_code == 1
    assert "4 readable good image(s); at least 5 are needed" in res.output
    assert "1 of the 5 good images are kept apart" in res.output
    assert not (tmp_path / "m" / "1" / "model.onnx").exists()
