"""Rebuild the shipped default models from scratch: `cellinspect build-default-models`.

Training and validation parts are rendered by the project's own generator (different seeds,
so the validation parts are unseen), the anomaly detector is taught on the good training parts
only, the classifier on all of them, and both are evaluated on the validation parts. The
thresholds and the figures go into the manifests, so `models/` says how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellinspect.config import Recipe
from cellinspect.datagen.flange import generate_dataset
from cellinspect.inference.manifest import Thresholds, load_manifest, write_manifest
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import RoiReader, Stage, load_dataset, no_stage
from cellinspect.training.evaluate import EvaluationReport, evaluate_model
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_classifier import ClassifierFitParams, fit_classifier


@dataclass(frozen=True, slots=True)
class DefaultModelsPlan:
    train_count: int = 600
    train_seed: int = 1
    val_count: int = 300
    val_seed: int = 2
    defect_rate: float = 0.5
    anomaly: AnomalyFitParams = field(
        default_factory=lambda: AnomalyFitParams(coreset_size=2000, projection_dim=None)
    )
    classifier: ClassifierFitParams = field(
        default_factory=lambda: ClassifierFitParams(regularisation_c=0.1)
    )
    review_quantile: float = 0.95
    fail_margin: float = 1.10


@dataclass(frozen=True, slots=True)
class DefaultModelsReport:
    anomaly_path: Path
    classifier_path: Path
    anomaly_eval: EvaluationReport
    classifier_eval: EvaluationReport
    review_at: float
    fail_at: float


def _anomaly_thresholds(
    report: EvaluationReport, review_quantile: float, margin: float
) -> tuple[float, float]:
    """review_at at a quantile of the good validation parts (0.95: about 1 good part in 20
    goes to a person, which keeps escapes near 1%); fail_at `margin` above the worst good
    validation part, so a hard FAIL is kept for parts unlike any good one."""
    scores, defect = report.scores_and_defects()
    good = scores[~defect]  # the manifest's good_labels, as every other figure counts them
    review_at = float(np.quantile(good, review_quantile))
    fail_at = float(good.max()) * margin
    return round(review_at, 4), round(max(fail_at, review_at), 4)


def _record(model_path: Path, thresholds: Thresholds | None, metrics: dict[str, Any]) -> None:
    manifest = load_manifest(model_path)
    provenance = dict(manifest.provenance)
    provenance["metrics"] = {**provenance.get("metrics", {}), **metrics}
    update: dict[str, Any] = {"provenance": provenance}
    if thresholds is not None:
        update["thresholds"] = thresholds
    write_manifest(manifest.model_copy(update=update), model_path)


def build_default_models(
    recipe: Recipe,
    models_dir: Path,
    work_dir: Path,
    backbone_path: Path,
    plan: DefaultModelsPlan = DefaultModelsPlan(),
    stage: Stage = no_stage,
) -> DefaultModelsReport:
    """Render data, fit both models, evaluate on unseen parts, write models/ with figures."""

    train_dir, val_dir = work_dir / "train", work_dir / "val"
    generate_dataset(
        train_dir,
        plan.train_count,
        plan.train_seed,
        plan.defect_rate,
        progress=lambda d, t: stage("render train", d, t),
        overwrite=True,
    )
    generate_dataset(
        val_dir,
        plan.val_count,
        plan.val_seed,
        plan.defect_rate,
        progress=lambda d, t: stage("render validation", d, t),
        overwrite=True,
    )
    reader = RoiReader(recipe, recipe.rois[0].name if recipe.rois else None)
    train = load_dataset(train_dir)
    data_note = {
        "generator": "cellinspect.datagen.flange",
        "train": {"count": plan.train_count, "seed": plan.train_seed},
        "validation": {"count": plan.val_count, "seed": plan.val_seed},
        "defect_rate": plan.defect_rate,
        "recipe": recipe.name,
    }
    anomaly = fit_anomaly(
        train,
        reader,
        backbone_path,
        models_dir / "flange-anomaly" / "1",
        "flange-anomaly",
        "1",
        plan.anomaly,
        lambda w, d, t: stage(f"anomaly {w}", d, t),
        {"synthetic_data": data_note},
    )
    anomaly_eval = evaluate_model(
        anomaly.model_path,
        load_dataset(val_dir),
        reader,
        stage=lambda w, d, t: stage(f"evaluate anomaly {w}", d, t),
    )
    review_at, fail_at = _anomaly_thresholds(anomaly_eval, plan.review_quantile, plan.fail_margin)
    _record(
        anomaly.model_path,
        Thresholds(review_at=review_at, fail_at=fail_at),
        {"validation_auroc": anomaly_eval.auroc, "validation_images": anomaly_eval.images},
    )
    classifier = fit_classifier(
        train,
        reader,
        backbone_path,
        models_dir / "flange-classifier" / "1",
        "flange-classifier",
        "1",
        plan.classifier,
        lambda w, d, t: stage(f"classifier {w}", d, t),
        {"synthetic_data": data_note},
    )
    classifier_eval = evaluate_model(
        classifier.model_path,
        load_dataset(val_dir),
        reader,
        stage=lambda w, d, t: stage(f"evaluate classifier {w}", d, t),
    )
    _record(
        classifier.model_path,
        None,
        {
            "validation_accuracy": classifier_eval.accuracy,
            "validation_auroc_defect_vs_good": classifier_eval.auroc,
            "validation_confusion": classifier_eval.confusion,
            "labels": classifier_eval.labels,
        },
    )
    anomaly_eval = evaluate_model(anomaly.model_path, load_dataset(val_dir), reader)
    return DefaultModelsReport(
        anomaly_path=anomaly.model_path,
        classifier_path=classifier.model_path,
        anomaly_eval=anomaly_eval,
        classifier_eval=classifier_eval,
        review_at=review_at,
        fail_at=fail_at,
    )
