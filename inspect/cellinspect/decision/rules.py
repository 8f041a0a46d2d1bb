"""Pure decision rules: model outputs + thresholds -> verdict with reasons.

No I/O and no clocks here, so every verdict can be replayed from a stored result. A score at or
above `fail_at` fails, at or above `review_at` goes to review, below passes; when several models
or ROIs judge one part the worst verdict wins (FAIL > REVIEW > PASS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cellinspect.config import ClassThreshold, FailSafe, ModelThresholds
from cellinspect.entities import ModelOutput, RoiDecision, Task, Verdict
from cellinspect.errors import ConfigError
from cellinspect.inference.manifest import Manifest

_SEVERITY = {Verdict.PASS: 0, Verdict.REVIEW: 1, Verdict.FAIL: 2}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """FAIL beats REVIEW beats PASS; no verdicts at all is PASS."""
    return max(verdicts, key=_SEVERITY.__getitem__, default=Verdict.PASS)


@dataclass(frozen=True, slots=True)
class ResolvedThresholds:
    """A model's thresholds after the recipe's overrides were laid over the manifest's."""

    model: str
    task: Task
    review_at: float | None = None
    fail_at: float | None = None
    classes: dict[str, ClassThreshold] = field(default_factory=dict)
    good_labels: frozenset[str] = frozenset({"good"})
    judge: bool = True

    def for_class(self, label: str) -> ClassThreshold:
        try:
            return self.classes[label]
        except KeyError:
            raise ConfigError(f"{self.model}: no thresholds for class '{label}'") from None


def resolve_thresholds(
    name: str, manifest: Manifest, override: ModelThresholds | None, judge: bool = True
) -> ResolvedThresholds:
    """Merge recipe overrides onto manifest defaults and check nothing needed is missing."""
    base = manifest.thresholds
    review_at = base.review_at
    fail_at = base.fail_at
    classes: dict[str, ClassThreshold] = {}
    defect_labels = [lbl for lbl in manifest.labels if lbl not in manifest.good_labels]
    for label in defect_labels:
        thr = base.classes.get(label, base.default_class)
        if thr is not None:
            classes[label] = thr
    if override is not None:
        review_at = override.review_at if override.review_at is not None else review_at
        fail_at = override.fail_at if override.fail_at is not None else fail_at
        unknown = sorted(set(override.classes) - set(defect_labels))
        if unknown:
            raise ConfigError(
                f"decision.thresholds.{name}.classes: unknown classes {unknown} "
                f"(the model's defect classes are {defect_labels})"
            )
        classes.update(override.classes)
    if manifest.task is Task.ANOMALY:
        if fail_at is None:
            raise ConfigError(
                f"decision.thresholds.{name}: no fail_at in the recipe nor in the manifest"
            )
        review_at = fail_at if review_at is None else review_at
        if review_at > fail_at:
            raise ConfigError(
                f"decision.thresholds.{name}: review_at {review_at} is above fail_at {fail_at}"
            )
    if manifest.task is Task.CLASSIFICATION:
        missing = [lbl for lbl in defect_labels if lbl not in classes]
        if missing:
            raise ConfigError(
                f"decision.thresholds.{name}.classes: no thresholds for {missing} in the recipe "
                "nor in the manifest"
            )
    return ResolvedThresholds(
        model=name,
        task=manifest.task,
        review_at=review_at,
        fail_at=fail_at,
        classes=classes,
        good_labels=frozenset(manifest.good_labels),
        judge=judge,
    )


@dataclass(frozen=True, slots=True)
class ModelJudgement:
    """One model's verdict on one ROI."""

    verdict: Verdict
    reasons: tuple[str, ...]
    defect_class: str | None
    top_defect: str | None
    scores: dict[str, float]


def _judge_anomaly(name: str, out: ModelOutput, thr: ResolvedThresholds) -> ModelJudgement:
    score = out.anomaly_score
    assert score is not None and thr.fail_at is not None and thr.review_at is not None
    scores = {f"{name}:anomaly": score}
    if score >= thr.fail_at:
        reason = f"{name}: anomaly score {score:.3f} >= fail threshold {thr.fail_at:.3f}"
        return ModelJudgement(Verdict.FAIL, (reason,), None, None, scores)
    if score >= thr.review_at:
        reason = f"{name}: anomaly score {score:.3f} >= review threshold {thr.review_at:.3f}"
        return ModelJudgement(Verdict.REVIEW, (reason,), None, None, scores)
    return ModelJudgement(Verdict.PASS, (), None, None, scores)


def _judge_classification(name: str, out: ModelOutput, thr: ResolvedThresholds) -> ModelJudgement:
    scores = {f"{name}:{label}": p for label, p in out.class_scores.items()}
    defects = {k: v for k, v in out.class_scores.items() if k not in thr.good_labels}
    if not defects:
        return ModelJudgement(Verdict.PASS, (), None, None, scores)
    verdicts: list[tuple[Verdict, float, str]] = []
    for label, p in defects.items():
        cls = thr.for_class(label)
        if p >= cls.fail_at:
            verdicts.append((Verdict.FAIL, p, label))
        elif p >= cls.review_at:
            verdicts.append((Verdict.REVIEW, p, label))
    top_defect = max(defects, key=defects.__getitem__)
    if not verdicts:
        return ModelJudgement(Verdict.PASS, (), None, top_defect, scores)
    verdict, p, label = max(verdicts, key=lambda v: (_SEVERITY[v[0]], v[1]))
    cls = thr.for_class(label)
    limit = cls.fail_at if verdict is Verdict.FAIL else cls.review_at
    reason = f"{name}: {label} p={p:.3f} >= {verdict.value} threshold {limit:.3f}"
    return ModelJudgement(verdict, (reason,), label, top_defect, scores)


_JUDGES = {Task.ANOMALY: _judge_anomaly, Task.CLASSIFICATION: _judge_classification}


def judge(name: str, out: ModelOutput, thr: ResolvedThresholds) -> ModelJudgement:
    """One model's verdict on one ROI, by the model's task."""
    try:
        judge_fn = _JUDGES[out.task]
    except KeyError:
        raise ConfigError(f"{name}: cannot judge parts with a '{out.task.value}' model") from None
    return judge_fn(name, out, thr)


def decide_roi(
    roi: str, outputs: Sequence[tuple[str, ModelOutput]], thresholds: dict[str, ResolvedThresholds]
) -> RoiDecision:
    """Combine every model's judgement of one ROI: worst verdict, all reasons, one class.

    Models with `judge=False` only name the defect class of a ROI that judging models flagged.
    """
    judgements = [(judge(name, out, thresholds[name]), thresholds[name]) for name, out in outputs]
    deciding = [j for j, thr in judgements if thr.judge]
    verdict = worst(j.verdict for j in deciding)
    reasons = tuple(f"{roi}: {r}" for j in deciding for r in j.reasons)
    scores = {k: v for j, _ in judgements for k, v in j.scores.items()}
    defect_class: str | None = None
    if verdict is not Verdict.PASS:
        # A classifier's class beats "anomaly": it says what the defect is.
        flagged = [j.defect_class for j, _ in judgements if j.defect_class]
        tops = [j.top_defect for j, _ in judgements if j.top_defect]
        defect_class = (flagged or tops or ["anomaly"])[0]
    return RoiDecision(
        roi=roi, verdict=verdict, reasons=reasons, defect_class=defect_class, scores=scores
    )


@dataclass(frozen=True, slots=True)
class PartDecision:
    verdict: Verdict
    reasons: tuple[str, ...]
    defect_class: str | None


def decide_part(rois: Sequence[RoiDecision]) -> PartDecision:
    """Any FAIL is FAIL, else any REVIEW is REVIEW; the class comes from the worst ROI."""
    verdict = worst(r.verdict for r in rois)
    reasons = tuple(reason for r in rois for reason in r.reasons)
    defect_class = next(
        (r.defect_class for r in rois if r.verdict is verdict and r.defect_class), None
    )
    return PartDecision(verdict=verdict, reasons=reasons, defect_class=defect_class)


def fail_safe_decision(fail_safe: FailSafe, reason: str) -> PartDecision:
    """What a part gets when it could not be judged: never PASS."""
    return PartDecision(verdict=fail_safe.verdict, reasons=(reason,), defect_class=None)
