"""fit-anomaly on rendered parts: real backbone, real fit, real scores, honest errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.inference.runner import ModelRunner
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import DatasetError, RoiReader, good_images
from cellinspect.training.fit_anomaly import fit_anomaly
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def _fit_args(out: Path) -> tuple[RoiReader, Path, Path, str, str]:
    """Whole-frame reader, the shipped backbone, `out`, name "m", version "1"."""
    return RoiReader(None), BACKBONE, out, "m", "1"


def _write_parts(folder: Path, count: int, seed: int, defect_rate: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for spec in plan_parts(count, seed, defect_rate):
        cv2.imwrite(str(folder / f"p{spec.index:03d}_{spec.label}.png"), render_part(spec))
        labels.append(spec.label)
    return labels


def test_fit_on_good_parts_scores_defects_higher(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 12, seed=11, defect_rate=0.0)
    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    params = AnomalyFitParams(coreset_size=300, projection_dim=None, batch_size=4)
    report = fit_anomaly(
        good_images(good), RoiReader(None), BACKBONE, tmp_path / "m" / "1", "m", "1", params
    )
    assert report.images_used == 12 and report.bank_size == 300
    assert [Path(p).name for p, _ in report.skipped] == ["broken.png"]
    manifest = load_manifest(report.model_path)
    assert manifest.sha256 == sha256_file(report.model_path)
    assert manifest.provenance["data"]["good_images"] == 12
    assert max(report.holdout_scores) == pytest.approx(1.0)
    runner = ModelRunner.load("m", report.model_path)
    test = tmp_path / "test"
    labels = _write_parts(test, 12, seed=99, defect_rate=0.5)
    outs = runner.predict([cv2.imread(str(p)) for p in sorted(test.glob("*.png"))])
    good_scores = [o.anomaly_score for o, lbl in zip(outs, labels, strict=True) if lbl == "good"]
    bad_scores = [o.anomaly_score for o, lbl in zip(outs, labels, strict=True) if lbl != "good"]
    assert sum(b > max(good_scores) for b in bad_scores if b is not None) >= len(bad_scores) // 2


def _half_busy_part(rng: np.random.Generator, faint_scratch: bool) -> ImageU8:
    """Busy texture (new every part) on the left, flat grey on the right; maybe a faint scratch
    on the flat side: what a fixture-held part with a printed or grained area looks like."""
    grey = np.full((224, 224), 128, np.uint8)
    grey[:, :112] = rng.integers(40, 216, (224, 112))
    grey = cv2.GaussianBlur(grey, (3, 3), 0)
    if faint_scratch:
        y, x = int(rng.integers(40, 184)), int(rng.integers(140, 200))
        cv2.line(grey, (x - 15, y), (x + 15, y + 4), (118,), 1)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _margin(model: Path, good: list[ImageU8], scratched: list[ImageU8]) -> float:
    """Lowest scratched score over highest good score: above 1 means every scratch is caught."""
    runner = ModelRunner.load("m", model)
    good_scores = [o.anomaly_score for o in runner.predict(good)]
    bad_scores = [o.anomaly_score for o in runner.predict(scratched)]
    return min(s or 0.0 for s in bad_scores) / max(s or 0.0 for s in good_scores)


def test_position_norm_brings_out_a_faint_scratch_beside_busy_texture(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(44):
        cv2.imwrite(str(folder / f"g{i:02d}.png"), _half_busy_part(rng, faint_scratch=False))
    good = [_half_busy_part(rng, faint_scratch=False) for _ in range(10)]
    scratched = [_half_busy_part(rng, faint_scratch=True) for _ in range(10)]
    margins = {}
    for position_norm in (False, True):
        params = AnomalyFitParams(
            coreset_size=300,
            projection_dim=None,
            holdout_fraction=0.5,  # 22 held-out parts, above the 20 position statistics need
            position_norm=position_norm,
        )
        out = tmp_path / f"m{position_norm}" / "1"
        report = fit_anomaly(good_images(folder), RoiReader(None), BACKBONE, out, "m", "1", params)
        assert max(report.holdout_scores) == pytest.approx(1.0)
        provenance = load_manifest(report.model_path).provenance
        assert provenance["parameters"]["position_norm"] is position_norm
        margins[position_norm] = _margin(report.model_path, good, scratched)
    # The busy half sets the plain score's scale, so a faint scratch barely clears it; scored
    # against its own position the scratch stands far above every good part.
    assert margins[True] > 1.0
    assert margins[True] > 2.0 * margins[False]


def test_bags_score_the_mean_of_the_single_fits_they_repeat(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 12, seed=11, defect_rate=0.0)
    test = tmp_path / "test"
    _write_parts(test, 8, seed=99, defect_rate=0.5)
    images = [cv2.imread(str(p)) for p in sorted(test.glob("*.png"))]

    def scores(seed: int, bags: int) -> list[float]:
        params = AnomalyFitParams(coreset_size=200, projection_dim=64, seed=seed, bags=bags)
        out = tmp_path / f"s{seed}b{bags}" / "1"
        report = fit_anomaly(good_images(good), RoiReader(None), BACKBONE, out, "m", "1", params)
        if bags > 1:
            assert load_manifest(report.model_path).provenance["parameters"]["bags"] == bags
        return [
            o.anomaly_score or 0.0
            for o in ModelRunner.load("m", out / "model.onnx").predict(images)
        ]

    single = np.array([scores(0, 1), scores(1, 1)])
    assert np.ptp(single[0] - single[1]) > 1e-3  # the two draws really differ
    np.testing.assert_allclose(scores(0, 2), single.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_position_norm_needs_enough_held_out_parts(tmp_path: Path) -> None:
    _write_parts(tmp_path / "good", 12, seed=1, defect_rate=0.0)
    params = AnomalyFitParams(coreset_size=50, position_norm=True)
    with pytest.raises(ModelError, match=r"20 held-out good images; there are 12 .* give 2\."):
        fit_anomaly(good_images(tmp_path / "good"), *_fit_args(tmp_path / "o"), params)
    cross_fitted = AnomalyFitParams(detector="gaussian", position_norm=True)
    with pytest.raises(ModelError, match=r"there are 12 good image.*holds out each of them once"):
        fit_anomaly(good_images(tmp_path / "good"), *_fit_args(tmp_path / "o"), cross_fitted)


def test_too_few_good_images(tmp_path: Path) -> None:
    _write_parts(tmp_path / "good", 3, seed=1, defect_rate=0.0)
    with pytest.raises(ModelError, match="at least 5"):
        fit_anomaly(
            good_images(tmp_path / "good"), RoiReader(None), BACKBONE, tmp_path / "o", "m", "1"
        )


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        good_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not found"):
        good_images(tmp_path / "missing")


def _two_kind_part(rng: np.random.Generator, grained: bool, faint_scratch: bool) -> ImageU8:
    """Grained (new grain every part) or flat grey, like poly- and monocrystalline cells;
    each part a little brighter or darker, with a little sensor noise."""
    level = 128 + rng.normal(0.0, 3.0) + rng.normal(0.0, 1.5, (224, 224))
    grey = np.clip(level, 0, 255).astype(np.uint8)
    if grained:
        grey = cv2.GaussianBlur(rng.integers(40, 216, (224, 224)).astype(np.uint8), (3, 3), 0)
    if faint_scratch:
        y, x = int(rng.integers(40, 184)), int(rng.integers(40, 184))
        cv2.line(grey, (x - 15, y), (x + 15, y + 4), (118,), 1)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def test_gaussian_groups_keep_a_flat_kind_sharp_beside_a_grained_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(60):
        part = _two_kind_part(rng, grained=i % 2 == 0, faint_scratch=False)
        cv2.imwrite(str(folder / f"g{i:02d}.png"), part)
    good = [_two_kind_part(rng, grained=i % 2 == 0, faint_scratch=False) for i in range(10)]
    scratched = [_two_kind_part(rng, grained=False, faint_scratch=True) for _ in range(10)]
    margins = {}
    for groups in (1, 2):
        params = AnomalyFitParams(  # the margins below were measured with one held-out split
            detector="gaussian", projection_dim=32, groups=groups, top_k=1, cross_fit=False
        )
        out = tmp_path / f"m{groups}" / "1"
        report = fit_anomaly(good_images(folder), RoiReader(None), BACKBONE, out, "m", "1", params)
        assert max(report.holdout_scores) == pytest.approx(1.0)
        manifest = load_manifest(report.model_path)
        assert manifest.provenance["parameters"]["groups"] == groups
        if groups == 2:  # the grained and the flat parts, found without any label
            assert [sum(g) for g in manifest.provenance["group_sizes"]] == [30, 30]
            assert len(manifest.provenance["group_scales_raw"]) == 2
            assert "texture group" in manifest.provenance["method"]
        margins[groups] = _margin(report.model_path, good, scratched)
    # One Gaussian per position must cover grain and flat alike and grows wide; per group the
    # flat parts' Gaussians stay narrow and the faint scratch stands out.
    assert margins[2] > 1.0
    assert margins[2] > 1.5 * margins[1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (AnomalyFitParams(detector="gaussian", bags=2), "bags are for the patchcore"),
        (AnomalyFitParams(groups=2), "groups, top_k and shrinkage are for the gaussian"),
        (AnomalyFitParams(detector="knn"), "detector must be one of"),
        (AnomalyFitParams(detector="gaussian", shrinkage=1.0), "shrinkage must be in"),
        (AnomalyFitParams(shrinkage=0.5), "shrinkage are for the gaussian"),
        (AnomalyFitParams(detector="gaussian"), "at least 20 good images per group"),
        (AnomalyFitParams(detector="gaussian", groups=3), "for 3 group"),
        (AnomalyFitParams(cross_fit=True), "cross-fitting is for the gaussian detector"),
    ],
)
def test_detector_settings_are_checked_before_any_work(
    tmp_path: Path, params: AnomalyFitParams, message: str
) -> None:
    _write_parts(tmp_path / "good", 12, seed=1, defect_rate=0.0)
    with pytest.raises(ModelError, match=message):
        fit_anomaly(good_images(tmp_path / "good"), *_fit_args(tmp_path / "o"), params)
    assert not (tmp_path / "o").exists()


def test_gaussian_group_with_too_few_held_out_parts_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(110):  # 22 held out in all, about 11 per group: below the 20 it needs
        part = _two_kind_part(rng, grained=i % 2 == 0, faint_scratch=False)
        cv2.imwrite(str(folder / f"g{i:03d}.png"), part)
    params = AnomalyFitParams(
        detector="gaussian", projection_dim=16, groups=2, position_norm=True, cross_fit=False
    )
    with pytest.raises(ModelError, match=r"texture group \d of 2 has \d+ held-out good image"):
        fit_anomaly(
            good_images(folder), RoiReader(None), BACKBONE, tmp_path / "o", "m", "1", params
        )


def test_cross_fitted_gaussian_holds_every_good_part_out_once(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write_parts(good, 30, seed=5, defect_rate=0.0)
    params = AnomalyFitParams(
        detector="gaussian", projection_dim=32, position_norm=True, top_k=5
    )  # cross-fitted by default for the gaussian detector
    report = fit_anomaly(good_images(good), *_fit_args(tmp_path / "m" / "1"), params)
    assert report.bank_images == report.holdout_images == 30
    assert len(report.holdout_scores) == 30 and max(report.holdout_scores) == pytest.approx(1.0)
    assert "each held out once over 5 folds" in report.summary
    manifest = load_manifest(report.model_path)
    assert manifest.provenance["parameters"]["cross_fit_folds"] == 5
    assert manifest.provenance["method"].endswith("5-fold cross-fitted z-scores and scale")
    assert "held out by cross-fitting" in manifest.outputs[0].description
    # The final Gaussians were fitted on these very parts, so they score them closer than the
    # fold models that never saw them did: the z-scores and scale come from the latter.
    runner = ModelRunner.load("m", report.model_path)
    outs = runner.predict([cv2.imread(str(p)) for p in sorted(good.glob("*.png"))])
    in_sample = [o.anomaly_score for o in outs if o.anomaly_score is not None]
    assert len(in_sample) == 30
    assert np.mean(in_sample) < np.mean(report.holdout_scores)
    assert max(in_sample) < 1.0


def test_fit_anomaly_cli_cross_fits_the_gaussian_detector_unless_told_not_to(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from cellinspect.cli import app

    good = tmp_path / "good"
    _write_parts(good, 32, seed=6, defect_rate=0.0)  # 6 kept apart for the thresholds, 26 fitted
    base = ["fit-anomaly", "--good", str(good), "--backbone", str(BACKBONE)]
    base += ["--detector", "gaussian", "--projection-dim", "16"]
    folds = {}
    for flag in ([], ["--no-cross-fit"]):
        out = tmp_path / ("split" if flag else "default") / "1"
        res = CliRunner().invoke(app, [*base, *flag, "--out", str(out)])
        assert res.exit_code == 0, res.output
        folds[bool(flag)] = load_manifest(out / "model.onnx").provenance["parameters"][
            "cross_fit_folds"
        ]
        held = "26 held out" if not flag else "5 held out"
        assert "26 good images (" in res.output and held in res.output
    assert folds == {False: 5, True: None}
