"""Honest evaluation of one model on a labelled set, through the same runner the station uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.training.dataset import Dataset, RoiReader, read_images

Stage = Callable[[str, int, int], None]


@dataclass
class EvaluationReport:
    model: str
    version: str
    task: str
    images: int
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    auroc: float | None = None
    accuracy: float | None = None
    labels: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    threshold_review: float | None = None
    threshold_fail: float | None = None
    false_reject_rate_at_fail: float | None = None
    escape_rate_at_fail: float | None = None
    escape_rate_at_review: float | None = None
    good_flagged_rate_at_review: float | None = None
    false_reject_rate_catch_all: float | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_model(
    model_path: Path,
    dataset: Dataset,
    reader: RoiReader,
    batch_size: int = 8,
    stage: Stage | None = None,
) -> EvaluationReport:
    """Score every readable image; AUROC for anomaly models, accuracy for classifiers."""
    runner = ModelRunner.load(model_path.parent.name, model_path, SessionOptions(warmup_runs=1))
    manifest = runner.manifest
    pairs = list(
        read_images(dataset, reader, (lambda d, t: stage("read", d, t)) if stage else None)
    )
    if not pairs:
        raise ModelError(f"{dataset.root}: no readable images to evaluate")
    outputs = []
    for start in range(0, len(pairs), batch_size):
        outputs.extend(runner.predict([img for _, img in pairs[start : start + batch_size]]))
        if stage is not None:
            stage("score", min(start + batch_size, len(pairs)), len(pairs))
    truth = [item.label for item, _ in pairs]
    report = EvaluationReport(
        model=manifest.name,
        version=manifest.version,
        task=manifest.task.value,
        images=len(pairs),
        counts={lbl: truth.count(lbl) for lbl in sorted(set(truth))},
        skipped=[(str(p), r) for p, r in dataset.skipped],
    )
    is_defect = np.array([lbl not in manifest.good_labels for lbl in truth])
    if manifest.task is Task.ANOMALY:
        scores = np.array([o.anomaly_score for o in outputs], dtype=np.float64)
        if is_defect.all() or not is_defect.any():
            raise ModelError(f"{dataset.root}: AUROC needs both good and defective images")
        report.auroc = float(roc_auc_score(is_defect, scores))
        fail_at = manifest.thresholds.fail_at
        report.threshold_review = manifest.thresholds.review_at
        report.threshold_fail = fail_at
        if fail_at is not None:
            flagged = scores >= fail_at
            report.false_reject_rate_at_fail = float(flagged[~is_defect].mean())
            report.escape_rate_at_fail = float((~flagged[is_defect]).mean())
        review_at = manifest.thresholds.review_at
        if review_at is not None:
            passed = scores < review_at
            report.escape_rate_at_review = float(passed[is_defect].mean())
            report.good_flagged_rate_at_review = float((~passed[~is_defect]).mean())
        catch_all = scores[is_defect].min()
        report.false_reject_rate_catch_all = float((scores[~is_defect] >= catch_all).mean())
        report.per_image = [
            {"file": item.path.name, "label": item.label, "score": float(s)}
            for (item, _), s in zip(pairs, scores, strict=True)
        ]
    elif manifest.task is Task.CLASSIFICATION:
        labels = manifest.labels
        unknown = sorted(set(truth) - set(labels))
        if unknown:
            raise ModelError(
                f"{dataset.root}: labels {unknown} are not known to the model {manifest.name} "
                f"(it knows {labels})"
            )
        predicted = [max(o.class_scores, key=o.class_scores.__getitem__) for o in outputs]
        report.labels = list(labels)
        report.accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
        report.confusion = confusion_matrix(truth, predicted, labels=labels).tolist()
        good_prob = np.array(
            [sum(o.class_scores[g] for g in manifest.good_labels) for o in outputs]
        )
        if is_defect.any() and (~is_defect).any():
            report.auroc = float(roc_auc_score(is_defect, 1.0 - good_prob))
        report.per_image = [
            {"file": item.path.name, "label": item.label, "predicted": p}
            for (item, _), p in zip(pairs, predicted, strict=True)
        ]
    else:
        raise ModelError(f"{model_path}: cannot evaluate a '{manifest.task.value}' model")
    return report
