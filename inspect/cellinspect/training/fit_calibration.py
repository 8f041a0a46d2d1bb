"""Thresholds a fitting command (`train`, `fit-anomaly`) writes on images it kept apart.

A freshly fitted model used to keep placeholder thresholds until someone ran `calibrate
thresholds`; the calibration part it is given here was never fitted (an image whose bytes are
among the fitted ones, a duplicate in the data, is left out and said so), so the rates printed
are honest estimates for new parts, with the image counts they rest on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import ResizeMode, TileSpec
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, Stage, no_stage
from cellinspect.training.fit_anomaly import AnomalyFitReport, fit_anomaly
from cellinspect.training.fitted_images import fitted_overlap, image_record
from cellinspect.training.scores import load_runner, score_dataset
from cellinspect.training.split import CALIBRATION_FRACTION, calibration_split
from cellinspect.training.threshold_files import write_to_manifest
from cellinspect.training.thresholds import ThresholdChoice, default_thresholds

DEFAULT_TARGET_ESCAPE = 0.01  # as `calibrate thresholds`
DEFAULT_TARGET_FALSE_REJECT = 0.05  # review_at on good parts only, when no defect is at hand
DEFECT = "defect"  # label given to fit-anomaly's --defects images


@dataclass(frozen=True, slots=True)
class CalibrationTargets:
    """What the written thresholds aim at (thresholds.py says how each is met)."""

    target_escape: float = DEFAULT_TARGET_ESCAPE
    target_false_reject: float = DEFAULT_TARGET_FALSE_REJECT
    target_false_fail: float = 0.01


def calibrate_fitted(
    model_path: Path,
    calibration: Dataset,
    reader: RoiReader,
    targets: CalibrationTargets,
    record: dict[str, Any],
    stage: Stage | None = None,
) -> ThresholdChoice:
    """Score the calibration part, choose thresholds, write them (sealed) into the manifest.

    `record` says where the part came from (split subset, or the seeded calibration split);
    the calibration images' ids are added to it.
    """
    runner = load_runner(model_path)
    # A part that is also in the fitting part (the same picture filed twice) is left out.
    twins = {id(i) for i in fitted_overlap(runner.manifest, calibration) or []}
    if twins:
        kept = [i for i in calibration.items if id(i) not in twins]
        calibration = Dataset(calibration.root, kept, calibration.skipped)
    scored = score_dataset(runner, calibration, reader, stage=stage)
    upper = 1.0 if runner.manifest.task is Task.CLASSIFICATION else None
    choice = default_thresholds(
        scored.scores,
        scored.is_defect,
        targets.target_escape,
        targets.target_false_reject,
        targets.target_false_fail,
        upper,
    )
    if twins:
        note = (
            f"{len(twins)} calibration image(s) left out: the same bytes are among the fitted "
            "images (duplicates in the data)"
        )
        choice = replace(choice, warnings=(note, *choice.warnings))
    data = {
        "root": str(calibration.root),
        "fingerprint": calibration.fingerprint(),
        **record,
        "images": image_record(calibration),
    }
    write_to_manifest(model_path, choice, data)
    return choice


@dataclass(frozen=True)
class CalibratedFit:
    report: AnomalyFitReport
    thresholds: ThresholdChoice
    calibration_good: int
    calibration_defects: int


def fit_anomaly_calibrated(
    good: Dataset,
    defects: Dataset | None,
    reader: RoiReader,
    backbone_path: Path,
    out_dir: Path,
    name: str,
    version: str,
    params: AnomalyFitParams = AnomalyFitParams(),
    fraction: float = CALIBRATION_FRACTION,
    targets: CalibrationTargets = CalibrationTargets(),
    stage: Stage = no_stage,
    resize: ResizeMode = ResizeMode.LETTERBOX,
    tile: TileSpec | None = None,
) -> CalibratedFit:
    """`fit-anomaly`: keep a seeded `fraction` of the good images apart, fit on the rest, and
    calibrate on the kept part plus `defects` (never fitted: an anomaly detector learns only
    good parts)."""
    fit_part, kept, record = calibration_split(good.with_labels(["good"]), fraction, params.seed)
    try:
        report = fit_anomaly(
            fit_part,
            reader,
            backbone_path,
            out_dir,
            name,
            version,
            params,
            stage,
            resize=resize,
            tile=tile,
        )
    except ModelError as err:
        raise ModelError(
            f"{err} ({len(kept.items)} of the {len(good.items)} good images are kept apart to "
            f"set the thresholds on: --calibration-fraction {fraction})"
        ) from err
    bad = [LabelledImage(i.path, DEFECT) for i in defects.items] if defects else []
    calibration = Dataset(kept.root, [*kept.items, *bad])
    where = {"calibration_split": record, "defects_root": str(defects.root) if defects else None}
    choice = calibrate_fitted(report.model_path, calibration, reader, targets, where, stage)
    return CalibratedFit(report, choice, len(kept.items), len(bad))
