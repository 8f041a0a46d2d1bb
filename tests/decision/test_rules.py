"""Decision rules: thresholds, review band, aggregation, fail-safe."""

from __future__ import annotations

import pytest

from cellinspect.config import ClassThreshold, FailSafe, ModelThresholds
from cellinspect.decision.rules import (
    decide_part,
    decide_roi,
    fail_safe_decision,
    resolve_thresholds,
    worst,
)
from cellinspect.entities import ModelOutput, ModelRef, RoiDecision, Task, Verdict
from cellinspect.errors import ConfigError
from cellinspect.inference.manifest import InputSpec, Manifest, OutputSpec, Thresholds

REF = ModelRef("m", "1", "0" * 64)


def _manifest(task: Task, **thresholds: object) -> Manifest:
    labels = ["good", "scratch", "crack"] if task is Task.CLASSIFICATION else []
    meaning = "probabilities" if task is Task.CLASSIFICATION else "anomaly_score"
    return Manifest(
        name="m",
        version="1",
        task=task,
        sha256="0" * 64,
        input=InputSpec(name="image", shape=[None, 3, 8, 8]),
        outputs=[OutputSpec(name="out", meaning=meaning)],
        labels=labels,
        thresholds=Thresholds.model_validate(thresholds),
    )


def _anomaly(score: float) -> ModelOutput:
    return ModelOutput(model=REF, task=Task.ANOMALY, anomaly_score=score)


def _probs(good: float, scratch: float, crack: float) -> ModelOutput:
    scores = {"good": good, "scratch": scratch, "crack": crack}
    return ModelOutput(model=REF, task=Task.CLASSIFICATION, class_scores=scores)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, Verdict.PASS),
        (0.99, Verdict.PASS),
        (1.0, Verdict.REVIEW),
        (1.19, Verdict.REVIEW),
        (1.2, Verdict.FAIL),
        (50.0, Verdict.FAIL),
    ],
)
def test_anomaly_review_band(score: float, expected: Verdict) -> None:
    thr = resolve_thresholds("m", _manifest(Task.ANOMALY, review_at=1.0, fail_at=1.2), None)
    decision = decide_roi("part", [("m", _anomaly(score))], {"m": thr})
    assert decision.verdict is expected
    assert decision.scores == {"m:anomaly": score}
    assert bool(decision.reasons) == (expected is not Verdict.PASS)


def test_recipe_override_beats_manifest() -> None:
    override = ModelThresholds(fail_at=2.0, review_at=1.5)
    thr = resolve_thresholds("m", _manifest(Task.ANOMALY, review_at=1.0, fail_at=1.2), override)
    assert (thr.review_at, thr.fail_at) == (1.5, 2.0)
    assert decide_roi("p", [("m", _anomaly(1.3))], {"m": thr}).verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no fail_at"),
        ({"review_at": 2.0, "fail_at": 1.0}, "above fail_at"),
    ],
)
def test_anomaly_thresholds_must_exist_and_be_ordered(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_thresholds("m", _manifest(Task.ANOMALY, **kwargs), None)


def test_classifier_per_class_thresholds() -> None:
    manifest = _manifest(
        Task.CLASSIFICATION,
        default_class={"review_at": 0.4, "fail_at": 0.7},
        classes={"crack": {"review_at": 0.2, "fail_at": 0.3}},
    )
    thr = resolve_thresholds("m", manifest, None)
    assert decide_roi("p", [("m", _probs(0.8, 0.1, 0.1))], {"m": thr}).verdict is Verdict.PASS
    review = decide_roi("p", [("m", _probs(0.5, 0.45, 0.05))], {"m": thr})
    assert (review.verdict, review.defect_class) == (Verdict.REVIEW, "scratch")
    # crack has a stricter threshold: 0.35 fails it even though scratch is higher
    fail = decide_roi("p", [("m", _probs(0.2, 0.45, 0.35))], {"m": thr})
    assert (fail.verdict, fail.defect_class) == (Verdict.FAIL, "crack")


def test_classifier_needs_thresholds_for_every_defect_class() -> None:
    with pytest.raises(ConfigError, match="no thresholds"):
        resolve_thresholds("m", _manifest(Task.CLASSIFICATION), None)


def test_override_with_unknown_class_is_an_error() -> None:
    manifest = _manifest(Task.CLASSIFICATION, default_class={"review_at": 0.4, "fail_at": 0.7})
    override = ModelThresholds(classes={"dent": ClassThreshold(review_at=0.1, fail_at=0.2)})
    with pytest.raises(ConfigError, match="unknown classes"):
        resolve_thresholds("m", manifest, override)


def test_anomaly_fail_takes_class_from_classifier() -> None:
    anomaly = resolve_thresholds("a", _manifest(Task.ANOMALY, review_at=1.0, fail_at=1.2), None)
    cls = resolve_thresholds(
        "c", _manifest(Task.CLASSIFICATION, default_class={"review_at": 0.5, "fail_at": 0.9}), None
    )
    roi = decide_roi(
        "p", [("a", _anomaly(3.0)), ("c", _probs(0.6, 0.1, 0.3))], {"a": anomaly, "c": cls}
    )
    assert roi.verdict is Verdict.FAIL
    assert roi.defect_class == "crack"


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], Verdict.PASS),
        ([Verdict.PASS, Verdict.PASS], Verdict.PASS),
        ([Verdict.PASS, Verdict.REVIEW], Verdict.REVIEW),
        ([Verdict.REVIEW, Verdict.FAIL, Verdict.PASS], Verdict.FAIL),
    ],
)
def test_aggregation_worst_wins(verdicts: list[Verdict], expected: Verdict) -> None:
    assert worst(verdicts) is expected
    rois = [
        RoiDecision(f"r{i}", v, (f"r{i} reason",) if v is not Verdict.PASS else ())
        for i, v in enumerate(verdicts)
    ]
    assert decide_part(rois).verdict is expected


@pytest.mark.parametrize("mode", list(FailSafe))
def test_fail_safe_is_never_pass(mode: FailSafe) -> None:
    decision = fail_safe_decision(mode, "camera timeout")
    assert decision.verdict is not Verdict.PASS
    assert decision.reasons == ("camera timeout",)
