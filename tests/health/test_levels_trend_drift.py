"""Hysteresis, the KS drift statistic and the trend prediction on seeded data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cellinspect.health.config import Levels
from cellinspect.health.levels import Level, next_level
from cellinspect.health.score_drift import ks_statistic, manifest_reference
from cellinspect.health.trend import predict, theil_sen

LEVELS = Levels(warn=0.10, alarm=0.20)


def _walk(severities: list[float], clear: float = 0.7) -> list[Level]:
    level, out = Level.OK, []
    for s in severities:
        level = next_level(level, s, LEVELS, clear)
        out.append(level)
    return out


def test_hysteresis_does_not_flap_around_a_level() -> None:
    rng = np.random.default_rng(1)
    around_warn = list(0.10 + rng.normal(0, 0.01, 200))  # crosses 0.10 again and again
    levels = _walk(around_warn)
    changes = sum(a is not b for a, b in itertools.pairwise(levels))
    assert levels[-1] is Level.WARN and changes <= 1  # entered once, never left
    without = [Level.WARN if s >= 0.10 else Level.OK for s in around_warn]
    flaps = sum(a is not b for a, b in itertools.pairwise(without))
    assert flaps > 20  # the same data with a bare threshold flaps


def test_levels_rise_and_clear_only_below_the_fraction() -> None:
    assert _walk([0.05, 0.12, 0.25, 0.15, 0.13, 0.08, 0.06]) == [
        Level.OK,
        Level.WARN,
        Level.ALARM,
        Level.ALARM,  # 0.15 >= 0.7 * 0.20
        Level.WARN,
        Level.WARN,  # 0.08 >= 0.7 * 0.10
        Level.OK,
    ]


def test_levels_config_names_the_bad_key() -> None:
    from pydantic import ValidationError

    from cellinspect.health.config import HealthConfig

    with pytest.raises(ValidationError, match="alarm"):
        Levels(warn=0.3, alarm=0.1)
    with pytest.raises(ValidationError, match="sharpness"):
        HealthConfig.model_validate({"levels": {"sharpness": {"warn": 0.1, "alarm": 0.2}}})


def test_ks_flags_a_shifted_distribution_and_not_an_unshifted_one() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0.94, 0.02, 60)
    same = rng.normal(0.94, 0.02, 40)
    shifted = rng.normal(0.97, 0.02, 40)
    assert ks_statistic(same, reference) < 0.3
    assert ks_statistic(shifted, reference) > 0.5
    assert ks_statistic([], reference) == 0.0
    assert ks_statistic([1.0, 2.0], [3.0, 4.0]) == 1.0


def test_manifest_reference_needs_held_out_scores() -> None:
    assert manifest_reference({}) is None
    assert manifest_reference({"holdout_scores": [0.9] * 5}) is None
    assert manifest_reference({"holdout_scores": ["x"] * 20}) is None
    assert manifest_reference({"holdout_scores": [0.9] * 20}) == [0.9] * 20


def test_theil_sen_ignores_outliers_that_pull_least_squares() -> None:
    x = np.arange(50.0)
    y = 2.0 * x + 1.0
    y[[5, 17, 30]] += 80.0
    slope, intercept = theil_sen(x, y)
    assert slope == pytest.approx(2.0, abs=1e-9) and intercept == pytest.approx(1.0, abs=1e-9)
    assert np.polyfit(x, y, 1)[0] != pytest.approx(2.0, abs=0.05)


def test_prediction_of_a_seeded_linear_trend() -> None:
    rng = np.random.default_rng(3)
    parts = np.arange(100.0, 300.0)
    seconds = parts * 0.5  # two parts a second
    change = -0.0005 * (parts - 100) + rng.normal(0, 0.002, parts.size)  # -5 % per 100 parts
    pred = predict(list(seconds), list(parts), list(change), alarm_at=0.25)
    assert pred is not None
    assert pred.per_part == pytest.approx(-0.0005, rel=0.1)
    assert pred.per_hour == pytest.approx(-0.0005 * 7200, rel=0.1)
    # now about -0.10, alarm at -0.25: about 300 parts, 150 s
    assert pred.parts_to_alarm == pytest.approx(300, rel=0.15)
    assert pred.hours_to_alarm == pytest.approx(150 / 3600, rel=0.15)
    assert "alarm level in" in pred.describe("focus", "%")


def test_no_prediction_when_heading_away_or_too_few_points() -> None:
    parts = list(np.arange(50.0))
    assert predict(parts, parts, [0.1] * 5, 0.2) is None
    recovering = [0.15 - 0.002 * p for p in parts]
    pred = predict(parts, parts, recovering, 0.2)
    assert pred is not None and pred.parts_to_alarm is None
