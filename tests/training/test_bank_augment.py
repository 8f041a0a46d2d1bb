"""Bank augmentation: the views it makes, where their features go, and what stays out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.bank_augment import (
    AugmentedPatches,
    augment_features,
    make_view,
    parse_augment,
    view_names,
)
from cellinspect.training.dataset import RoiReader, good_images
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_gaussian import cross_fit_maps, fit_gaussian
from cellinspect.training.fitted_images import image_id
from cellinspect.training.split import calibration_split
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def _write_parts(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in plan_parts(count, seed, 0.0):
        cv2.imwrite(str(folder / f"p{spec.index:03d}.png"), render_part(spec))


def test_parse_names_and_refuses_unknown() -> None:
    assert parse_augment("shifts, flips") == ("flips", "shifts")
    assert parse_augment("") == () and parse_augment("none") == () and parse_augment(None) == ()
    assert view_names(("flips",)) == ("flip-h", "flip-v")
    assert len(view_names(("flips", "shifts"))) == 6
    with pytest.raises(ModelError, match=r"--augment.*'rotations'"):
        parse_augment("flips,rotations")
    with pytest.raises(ModelError, match="augment"):
        AnomalyFitParams(augment=("shifts", "flips")).check()


def test_views_are_the_flips_and_shifts_they_are_named() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)
    assert np.array_equal(make_view(image, "flip-h"), image[:, ::-1])
    assert np.array_equal(make_view(image, "flip-v"), image[::-1])
    dx, dy = 3, 2  # 84 / 28 and 56 / 28
    assert np.array_equal(make_view(image, "shift-right")[:, dx:], image[:, :-dx])
    assert np.array_equal(make_view(image, "shift-left")[:, :-dx], image[:, dx:])
    assert np.array_equal(make_view(image, "shift-down")[dy:], image[:-dy])
    assert np.array_equal(make_view(image, "shift-up")[:-dy], image[dy:])


def test_features_come_one_per_view_tied_to_their_source() -> None:
    images = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    seen: list[int] = []

    def extract(views: object) -> np.ndarray:  # mean grey of each view as a 1x1 "patch"
        batch = list(views)  # type: ignore[call-overload]
        seen.append(len(batch))
        return np.array([[[float(v.mean())]] for v in batch], np.float32)

    aug = augment_features(images, ("flips", "shifts"), extract, chunk=2)
    assert aug is not None and aug.patches.shape == (18, 1, 1) and seen == [12, 6]
    assert aug.source.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and aug.per_image() == 6
    assert aug.of(np.array([2])).ravel().tolist() == [30.0] * 6
    base = np.array([[[1.0]], [[2.0]], [[3.0]]], np.float32)
    assert aug.with_sources(base, np.array([1])).ravel().tolist() == [2.0] + [20.0] * 6
    assert augment_features(images, (), extract) is None


def test_cross_fitting_keeps_a_part_s_views_out_of_the_fold_that_scores_it() -> None:
    """Views identical to their source leave each fold's mean and covariance as they were, so
    held-out distances barely move; a view leaking into its own fold's fit would shrink them."""
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((40, 4, 6)).astype(np.float32)
    members = np.arange(40, dtype=np.int64)
    copies = AugmentedPatches(feats.copy(), members.copy())
    plain = cross_fit_maps(feats, members, 5, 0.1)
    augmented = cross_fit_maps(feats, members, 5, 0.1, copies)
    assert np.allclose(augmented, plain, rtol=0.05)
    # a split fit: views of the held-out parts (here wild outliers) never enter the Gaussians
    params = AnomalyFitParams(detector="gaussian", projection_dim=None, cross_fit=False)
    plain_fit = fit_gaussian(feats, 8, params, lambda *_: None)
    views = feats.copy()
    views[plain_fit.hold_idx] += 1000.0
    fit = fit_gaussian(feats, 8, params, lambda *_: None, AugmentedPatches(views, members))
    assert np.array_equal(fit.hold_idx, plain_fit.hold_idx)
    assert np.allclose(fit.params.groups[0].mean, plain_fit.params.groups[0].mean, atol=1e-5)
    assert np.allclose(fit.holdout_scores, plain_fit.holdout_scores, rtol=0.05)


def test_fit_records_the_augment_and_counts_views_of_fitted_images_only(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 12, seed=3)
    params = AnomalyFitParams(
        coreset_size=100_000, projection_dim=16, batch_size=8, augment=("flips",)
    )
    report = fit_anomaly(
        good_images(good), RoiReader(None), BACKBONE, tmp_path / "m" / "1", "m", "1", params
    )
    manifest = load_manifest(report.model_path)
    prov = manifest.provenance
    assert prov["parameters"]["augment"] == ["flips"]
    # two flips of each of the 10 bank images; the 2 held out to scale the score add none
    assert report.bank_images == 10 and report.holdout_images == 2
    assert prov["data"]["augmented_views"] == 10 * 2
    # a coreset larger than the patches keeps them all: the bank images' and their views' only
    assert report.bank_size == report.patches == 10 * 3 * 28 * 28


def test_cli_augment_keeps_calibration_images_out(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 30, seed=5)
    out = tmp_path / "gauss" / "1"
    args = ["fit-anomaly", "--good", str(good), "--backbone", str(BACKBONE), "--out", str(out)]
    args += ["--detector", "gaussian", "--projection-dim", "16", "--augment", "flips,shifts"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    prov = load_manifest(out / "model.onnx").provenance
    fitted = set(prov["fitted_images"]["ids"])
    _fit, kept, _record = calibration_split(good_images(good), 0.2, 0)
    kept_ids = {image_id(i.path) for i in kept.items}
    assert len(fitted) == 24 and len(kept_ids) == 6 and not fitted & kept_ids
    assert prov["data"]["augmented_views"] == 24 * 6  # views of the 24 fitted parts only
    assert prov["parameters"]["augment"] == ["flips", "shifts"]
    bad = CliRunner().invoke(app, [*args[:-1], "flops"])
    assert bad.exit_code == 1 and "'flops'" in bad.output
