"""Honest evaluation of one model on a labelled set, through the same runner the station uses.

Both model kinds are judged on the decision score (see scores.py) against the manifest's
thresholds: escape rate (defects passed), good parts flagged, and the false-reject rate at the
lowest threshold that still catches every defect in the set. Classifiers also get accuracy,
per-class precision/recall and a confusion matrix over their labels; anomaly models get image
AUROC and good/defect precision/recall at review_at. AUROC and accuracy come with a 95 %
interval (intervals.py): on a few hundred images they are known only to a point or two.

Where the set names its defect types (class folders, labels), both kinds also get figures per
type on the decision score: AUROC of the good parts against that type alone, and the share of
that type caught at review_at (sent to review or failed) and at fail_at (failed outright). A
detector that finds stains but passes scratches shows it here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from cellinspect.entities import Task
from cellinspect.inference.manifest import Manifest
from cellinspect.training.dataset import Dataset, RoiReader
from cellinspect.training.intervals import accuracy_interval, auroc_interval
from cellinspect.training.scores import ScoredSet, load_runner, score_dataset

Stage = Callable[[str, int, int], None]
DEFECT = "defect"


@dataclass
class EvaluationReport:
    model: str
    version: str
    task: str
    images: int
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    auroc: float | None = None
    auroc_ci95: list[float] | None = None  # 95 % interval (training/intervals.py)
    accuracy: float | None = None
    accuracy_ci95: list[float] | None = None
    labels: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    # defect type -> count, auroc (goods vs that type), recall_at_review, recall_at_fail
    per_defect_type: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    threshold_review: float | None = None
    threshold_fail: float | None = None
    false_reject_rate_at_fail: float | None = None
    escape_rate_at_fail: float | None = None
    escape_rate_at_review: float | None = None
    good_flagged_rate_at_review: float | None = None
    false_reject_rate_catch_all: float | None = None
    subset: str | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The figures worth keeping in a manifest's provenance.metrics."""
        keys = (
            "auroc",
            "accuracy",
            "escape_rate_at_review",
            "good_flagged_rate_at_review",
            "false_reject_rate_catch_all",
        )
        return {k: float(v) for k in keys if (v := getattr(self, k)) is not None}

    def scores_and_defects(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Each image's decision score, and whether it is a defect (a label outside the
        model's good_labels, as ScoredSet.is_defect has it)."""
        scores = np.array([p["score"] for p in self.per_image], dtype=np.float64)
        defect = np.array([p["defect"] for p in self.per_image], dtype=bool)
        return scores, defect


def thresholds_of(manifest: Manifest) -> tuple[float | None, float | None]:
    """(review_at, fail_at) on the decision-score scale from the manifest."""
    thr = manifest.thresholds
    if manifest.task is Task.CLASSIFICATION:
        cls = thr.default_class
        return (cls.review_at, cls.fail_at) if cls is not None else (None, None)
    return thr.review_at, thr.fail_at


def _per_class(truth: list[str], predicted: list[str], labels: list[str]) -> dict[str, Any]:
    prec, rec, _, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return {
        lbl: {"precision": float(p), "recall": float(r), "support": int(s)}
        for lbl, p, r, s in zip(labels, prec, rec, support, strict=True)
    }


def _threshold_rates(report: EvaluationReport, scored: ScoredSet) -> None:
    scores, is_defect = scored.scores, scored.is_defect
    review_at, fail_at = thresholds_of(scored.manifest)
    report.threshold_review, report.threshold_fail = review_at, fail_at
    good, bad = scores[~is_defect], scores[is_defect]
    if fail_at is not None:
        if good.size:
            report.false_reject_rate_at_fail = float((good >= fail_at).mean())
        if bad.size:
            report.escape_rate_at_fail = float((bad < fail_at).mean())
    if review_at is not None:
        if bad.size:
            report.escape_rate_at_review = float((bad < review_at).mean())
        if good.size:
            report.good_flagged_rate_at_review = float((good >= review_at).mean())
    if bad.size and good.size:
        report.false_reject_rate_catch_all = float((good >= bad.min()).mean())
        report.auroc = float(roc_auc_score(is_defect, scores))
        report.auroc_ci95 = auroc_interval(is_defect, scores)


def per_defect_type(
    scores: npt.NDArray[np.float64],
    labels: list[str],
    good_labels: list[str],
    review_at: float | None,
    fail_at: float | None,
) -> dict[str, dict[str, float | int | None]]:
    """Per defect label: its count, AUROC against all good parts (None without good parts),
    and the share of it scoring at or above review_at / fail_at (None without a threshold)."""
    good = set(good_labels)
    truth = np.array(labels)
    good_scores = scores[np.isin(truth, list(good))]
    out: dict[str, dict[str, float | int | None]] = {}
    for kind in sorted(set(labels) - good):
        bad = scores[truth == kind]
        both = np.r_[np.zeros(good_scores.size), np.ones(bad.size)]
        out[kind] = {
            "count": int(bad.size),
            "auroc": float(roc_auc_score(both, np.r_[good_scores, bad]))
            if good_scores.size
            else None,
            "recall_at_review": None if review_at is None else float((bad >= review_at).mean()),
            "recall_at_fail": None if fail_at is None else float((bad >= fail_at).mean()),
        }
    return out


def _set_accuracy(report: EvaluationReport, right: list[bool]) -> None:
    report.accuracy = float(np.mean(right))
    report.accuracy_ci95 = accuracy_interval(sum(right), len(right))


def report_from_scores(scored: ScoredSet, dataset: Dataset) -> EvaluationReport:
    """All figures from one scored set (shared by `evaluate` and `train`)."""
    manifest, truth = scored.manifest, scored.truth
    report = EvaluationReport(
        model=manifest.name,
        version=manifest.version,
        task=manifest.task.value,
        images=len(truth),
        counts={lbl: truth.count(lbl) for lbl in sorted(set(truth))},
        skipped=[(str(p), r) for p, r in dataset.skipped],
    )
    _threshold_rates(report, scored)
    report.per_defect_type = per_defect_type(
        scored.scores,
        truth,
        list(manifest.good_labels),
        report.threshold_review,
        report.threshold_fail,
    )
    if manifest.task is Task.CLASSIFICATION:
        labels = list(manifest.labels)
        predicted = [max(o.class_scores, key=o.class_scores.__getitem__) for o in scored.outputs]
        report.labels = labels
        _set_accuracy(report, [p == t for p, t in zip(predicted, truth, strict=True)])
        report.confusion = confusion_matrix(truth, predicted, labels=labels).tolist()
        report.per_class = _per_class(truth, predicted, labels)
        report.per_image = [
            {
                "file": i.path.name,
                "label": i.label,
                "defect": bool(d),
                "predicted": p,
                "score": float(s),
            }
            for i, d, p, s in zip(
                scored.items, scored.is_defect, predicted, scored.scores, strict=True
            )
        ]
    else:
        binary_truth = [DEFECT if d else "good" for d in scored.is_defect]
        review_at = report.threshold_review
        if review_at is not None:
            flagged = [DEFECT if s >= review_at else "good" for s in scored.scores]
            report.labels = ["good", DEFECT]
            report.confusion = confusion_matrix(
                binary_truth, flagged, labels=report.labels
            ).tolist()
            report.per_class = _per_class(binary_truth, flagged, report.labels)
            _set_accuracy(report, [f == t for f, t in zip(flagged, binary_truth, strict=True)])
        report.per_image = [
            {"file": i.path.name, "label": i.label, "defect": bool(d), "score": float(s)}
            for i, d, s in zip(scored.items, scored.is_defect, scored.scores, strict=True)
        ]
    return report


def evaluate_model(
    model_path: Path,
    dataset: Dataset,
    reader: RoiReader,
    batch_size: int = 8,
    stage: Stage | None = None,
) -> EvaluationReport:
    """Score every readable image and compute the figures; unknown labels are an error."""
    scored = score_dataset(load_runner(model_path), dataset, reader, batch_size, stage)
    return report_from_scores(scored, dataset)
