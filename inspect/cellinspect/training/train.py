"""`cellinspect train`: split, fit (head, fine-tune or anomaly), calibrate thresholds on the
val split, evaluate on the test split.

One entry point so that every model version carries the same record: the split file beside the
model (its hash in the manifest), data fingerprint and counts, parameters, the parent version,
the images it was fitted on (fitted_images.py), thresholds set on the val split (never fitted:
the anomaly detector fits the train split's good images only, fine-tuning stops early on val but
fits train) and the test-split metrics in provenance.metrics, which `cellinspect models` lists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import ResizeMode, TileSpec, load_manifest, write_manifest
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, RoiReader, Stage, no_stage
from cellinspect.training.evaluate import EvaluationReport, evaluate_model
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_calibration import CalibrationTargets, calibrate_fitted
from cellinspect.training.fitted_images import RECORD_KEY, image_record
from cellinspect.training.split import SPLIT_FILE, load_split, make_split, save_split
from cellinspect.training.thresholds import ThresholdChoice


class Kind(enum.StrEnum):
    CLASSIFIER = "classifier"
    ANOMALY = "anomaly"


class Method(enum.StrEnum):
    HEAD = "head"
    FINETUNE = "finetune"


@dataclass(frozen=True, slots=True)
class TrainPlan:
    kind: Kind = Kind.CLASSIFIER
    method: Method = Method.HEAD
    epochs: int = 15
    seed: int = 0
    parent: str | None = None
    split_file: Path | None = None
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    coreset_size: int = 2000
    schedule: str = "constant"  # fine-tuning learning rate: constant or cosine
    image_size: int | None = None  # fine-tuning input size; None: the backbone's
    ema_decay: float | None = None  # fine-tuning: validate and export a weight average
    pooling: str = "mean"  # fine-tuning: mean or gem (learned generalised mean)
    position_norm: bool = False  # anomaly: z-score each patch position (fit_anomaly)
    bags: int = 1  # anomaly: draws of bank and held-out parts, scores averaged (fit_anomaly)
    detector: str = "patchcore"  # anomaly: patchcore or gaussian (fit_anomaly)
    groups: int = 1  # anomaly, gaussian: texture groups
    top_k: int = 1  # anomaly, gaussian: image score = mean of the k highest patch scores
    cross_fit: bool | None = None  # anomaly: None = on for gaussian (fit_anomaly)
    augment: tuple[str, ...] = ()  # anomaly: flips / shifts of the fitted parts (bank_augment)
    resize: ResizeMode = ResizeMode.LETTERBOX  # how images meet the input (manifest input.resize)
    tile_scale: float = 1.0  # resize tile: images are resized by this before they are cut
    targets: CalibrationTargets = field(default_factory=CalibrationTargets)  # set on val

    def anomaly_params(self) -> AnomalyFitParams:
        """What fit_anomaly gets for --kind anomaly, checked (so a bad mix fails up front)."""
        params = AnomalyFitParams(
            coreset_size=self.coreset_size,
            seed=self.seed,
            position_norm=self.position_norm,
            bags=self.bags,
            detector=self.detector,
            groups=self.groups,
            top_k=self.top_k,
            cross_fit=self.cross_fit,
            augment=self.augment,
        )
        params.check()
        return params


@dataclass
class TrainResult:
    model_path: Path
    split_path: Path
    split_counts: dict[str, dict[str, int]]
    test: EvaluationReport
    skipped: list[tuple[str, str]]
    thresholds: ThresholdChoice  # set on the val split


def record_metrics(model_path: Path, metrics: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge metrics and provenance keys into the manifest (the .onnx is unchanged)."""
    manifest = load_manifest(model_path)
    provenance = {**manifest.provenance, **extra}
    provenance["metrics"] = {**manifest.provenance.get("metrics", {}), **metrics}
    write_manifest(manifest.model_copy(update={"provenance": provenance}), model_path)


def _parent(plan: TrainPlan, backbone_path: Path) -> str:
    if plan.parent:
        return plan.parent
    backbone = load_manifest(backbone_path)
    return f"{backbone.name}/{backbone.version}"


def train_model(
    dataset: Dataset,
    reader: RoiReader,
    backbone_path: Path,
    out_dir: Path,
    name: str,
    plan: TrainPlan = TrainPlan(),
    stage: Stage = no_stage,
) -> TrainResult:
    """Fit on the train split (fine-tuning stops early on val), set thresholds on val,
    evaluate on test, record everything."""
    anomaly_params = plan.anomaly_params() if plan.kind is Kind.ANOMALY else None
    split = load_split(plan.split_file) if plan.split_file else None
    split = split or make_split(dataset, plan.seed, plan.fractions)
    split_path = out_dir / SPLIT_FILE
    split_hash = save_split(split, split_path)
    train, val, test = (split.subset(dataset, s) for s in ("train", "val", "test"))
    version = out_dir.name
    extra: dict[str, Any] = {
        "parent_version": _parent(plan, backbone_path),
        "split": {
            "file": SPLIT_FILE,
            "sha256": split_hash,
            "seed": split.seed,
            "counts": split.counts(),
        },
    }
    if anomaly_params is None:  # fit_anomaly records its own (the good images only)
        extra[RECORD_KEY] = image_record(train)
    if anomaly_params is not None:
        # Only train's good images: val is where the thresholds are set, so it stays unseen.
        try:
            model_path = fit_anomaly(
                train,
                reader,
                backbone_path,
                out_dir,
                name,
                version,
                anomaly_params,
                stage,
                extra,
                resize=plan.resize,
                tile=TileSpec(scale=plan.tile_scale),
            ).model_path
        except ModelError as err:
            raise ModelError(f"{err} (the split's train part; val, test kept apart)") from err
        skipped = train.skipped
    elif plan.method is Method.HEAD:
        from cellinspect.training.fit_classifier import ClassifierFitParams, fit_classifier

        model_path = fit_classifier(
            train,
            reader,
            backbone_path,
            out_dir,
            name,
            version,
            ClassifierFitParams(seed=plan.seed),
            stage,
            extra,
            resize=plan.resize,
        ).model_path
        skipped = train.skipped
    else:
        try:
            from cellinspect.training.finetune import FinetuneParams, finetune_classifier
        except ImportError as err:
            raise ModelError(f"fine-tuning needs torch: pip install -e '.[train]' ({err})") from err
        params_ft = FinetuneParams(
            epochs=plan.epochs,
            seed=plan.seed,
            schedule=plan.schedule,
            image_size=plan.image_size,
            ema_decay=plan.ema_decay,
            pooling=plan.pooling,
            resize=plan.resize,
        )
        model_path = finetune_classifier(
            train, val, reader, backbone_path, out_dir, name, version, params_ft, stage, extra
        ).model_path
        skipped = [*train.skipped, *val.skipped]
    where = {"subset": "val", "split_sha256": split_hash}
    choice = calibrate_fitted(model_path, val, reader, plan.targets, where, stage)
    report = evaluate_model(model_path, test, reader, stage=stage)
    report.subset = "test"
    record_metrics(model_path, {f"test_{k}": v for k, v in report.headline().items()}, {})
    seen = dict.fromkeys((str(p), r) for p, r in [*skipped, *val.skipped, *test.skipped])
    return TrainResult(model_path, split_path, split.counts(), report, list(seen), choice)
