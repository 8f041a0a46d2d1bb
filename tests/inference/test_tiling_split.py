"""Tile fits split by image: every tile of a frame is on one side of each split.

Overlapping tiles of one frame share pixels; one in the bank and another held out would set the
score scale (and the thresholds) on a part the bank has nearly seen. The fit test runs a real
tile fit (shipped backbone, `fit-anomaly`'s calibrated path) on ten 448x224 frames (three tiles
each) and reads the recorded image ids back from the manifest.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.inference.manifest import ResizeMode, load_manifest
from cellinspect.inference.tiling import fit_units, plan_tiles
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import RoiReader, good_images
from cellinspect.training.detector_choice import held_back_split
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_calibration import fit_anomaly_calibrated
from cellinspect.training.fit_gaussian import cross_fit_maps
from cellinspect.training.fitted_images import image_id
from cellinspect.training.split import grouped_holdout, source_rank
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"
W, H = 448, 224  # three 224 tiles per frame at 25 % overlap
TILES = 3


def _sides(sources: np.ndarray, held: np.ndarray, kept: np.ndarray) -> None:
    assert sorted([*held, *kept]) == list(range(len(sources)))
    assert not set(sources[held]) & set(sources[kept])


def test_a_holdout_takes_whole_images_and_untiled_draws_are_unchanged() -> None:
    sources = np.repeat(np.arange(10), [3, 1, 4, 3, 3, 2, 3, 3, 3, 1])
    for seed in range(5):
        held, kept = grouped_holdout(sources, 2, seed)
        _sides(sources, held, kept)
        assert len(set(sources[held])) == 2
    # One row per image: the seeded permutation fits have always drawn (same models as before).
    held, kept = grouped_holdout(np.arange(12), 3, 4)
    order = np.random.default_rng(4).permutation(12)
    assert list(held) == list(order[:3]) and list(kept) == list(order[3:])
    # --detector auto's held-back frames, too.
    fit, back = held_back_split(len(sources), 0, sources)
    _sides(sources, back, fit)
    assert source_rank(np.array([5, 5, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]


def test_cross_fit_folds_deal_images_so_no_fold_fits_a_twin_of_a_part_it_scores() -> None:
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(12, 9, 6)).astype(np.float32)
    twins = np.repeat(frames, 2, axis=0)  # two near-identical tiles per frame
    twins += rng.normal(scale=0.01, size=twins.shape).astype(np.float32)
    sources = np.repeat(np.arange(12), 2)
    members = np.arange(24)
    by_image = cross_fit_maps(twins, members, 4, 0.1, sources=sources)
    by_row = cross_fit_maps(twins, members, 4, 0.1)  # the old dealing: twins split across folds
    # Scored by a fit that never saw its frame, a part sits far out, as a new part would.
    unseen = cross_fit_maps(frames, np.arange(12), 4, 0.1)
    # Measured (seed 0): by image 3.71, by row 2.50, unseen parts 3.60.
    assert by_image.mean() > 1.3 * by_row.mean()
    assert by_image.mean() == pytest.approx(unseen.mean(), rel=0.1)


@pytest.fixture(scope="module")
def tile_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tilesplit") / "good"
    root.mkdir()
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for i in range(10):
        grey = 110 + 30 * np.sin(xx / rng.uniform(9, 30) + rng.uniform(0, 6)) * (yy / H)
        grey = np.clip(grey + rng.normal(0, 4, (H, W)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"frame{i}.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    fitted = fit_anomaly_calibrated(
        good_images(root),
        None,
        RoiReader(None),
        BACKBONE,
        root.parent / "model" / "1",
        "tiles",
        "1",
        AnomalyFitParams(coreset_size=200, batch_size=16),
        resize=ResizeMode.TILE,
    )
    return fitted.report.model_path, root


def test_every_frame_is_on_one_side_of_each_split_of_a_tile_fit(
    tile_fit: tuple[Path, Path],
) -> None:
    model_path, root = tile_fit
    manifest = load_manifest(model_path)
    assert plan_tiles(W, H, manifest.input).count == TILES
    data = manifest.provenance["data"]
    fitted = set(manifest.provenance["fitted_images"]["ids"])
    calibration = set(manifest.provenance["thresholds"]["data"]["images"]["ids"])
    held = set(data["holdout_ids"])
    every = {image_id(p) for p in root.iterdir()}
    assert fitted | calibration == every and not fitted & calibration
    assert len(calibration) == 2 and len(held) == 2 and held < fitted
    # Every tile of a held-out frame is held out, and no tile of a bank frame: the counts
    # are whole frames' worth (a split by tile held out 5 of the 24 fitted tiles).
    assert data["good_images"] == TILES * len(fitted)
    assert data["holdout_images"] == TILES * len(held)
    assert data["bank_images"] == TILES * len(fitted - held)


def test_fit_units_name_each_tile_s_frame() -> None:
    spec = load_manifest(BACKBONE).input.model_copy(update={"resize": ResizeMode.TILE})
    frames = [np.zeros((H, W, 3), np.uint8), np.zeros((224, 224, 3), np.uint8)]
    units, sources = fit_units(frames, spec)
    assert len(units) == TILES + 1 and sources.tolist() == [0, 0, 0, 1]
    assert all(u.shape == (224, 224, 3) for u in units)


def test_a_cross_fitted_gaussian_tile_fit_holds_every_frame_out_once(tmp_path: Path) -> None:
    root = tmp_path / "good"
    root.mkdir()
    rng = np.random.default_rng(6)
    for i in range(12):
        grey = np.clip(110 + rng.normal(0, 6, (H, W)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"f{i}.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    report = fit_anomaly(
        good_images(root),
        RoiReader(None),
        BACKBONE,
        tmp_path / "model" / "1",
        "g",
        "1",
        AnomalyFitParams(detector="gaussian", batch_size=16),
        resize=ResizeMode.TILE,
    )
    data = load_manifest(report.model_path).provenance["data"]
    # five folds of frames: every tile fitted, and held out once with the rest of its frame
    assert report.bank_images == report.holdout_images == TILES * 12
    assert set(data["holdout_ids"]) == {image_id(p) for p in root.iterdir()}
