"""Conformal threshold choice: the stated bound holds, unreachable targets are refused."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.errors import ModelError
from cellinspect.training.thresholds import binomial_allowed, choose_thresholds, crc_allowed
from tests.conftest import build_brightness_anomaly_model


@pytest.mark.parametrize(
    ("n", "target", "allowed"),
    [(9, 0.1, 0), (99, 0.01, 0), (98, 0.01, -1), (199, 0.05, 9), (10, 0.5, 4), (3, 0.99, 2)],
)
def test_crc_allowed_escapes(n: int, target: float, allowed: int) -> None:
    k = crc_allowed(n, target)
    assert k == allowed
    if k >= 0:
        assert (k + 1) / (n + 1) <= target + 1e-12


def test_binomial_needs_more_defects_than_crc() -> None:
    assert binomial_allowed(298, 0.01, 0.05) == -1
    assert binomial_allowed(299, 0.01, 0.05) == 0
    assert binomial_allowed(1000, 0.05, 0.05) > 30


def _scores(rng: np.random.Generator, n_good: int, n_bad: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([rng.normal(0.0, 1.0, n_good), rng.normal(3.0, 1.0, n_bad)])
    return scores, np.array([False] * n_good + [True] * n_bad)


def test_choice_respects_target_and_orders_thresholds() -> None:
    scores, defect = _scores(np.random.default_rng(0), 400, 199)
    choice = choose_thresholds(scores, defect, target_escape=0.05)
    assert choice.escapes_allowed == 9
    assert (scores[defect] < choice.review_at).sum() <= 9
    assert choice.escape_bound <= 0.05
    assert choice.review_at <= choice.fail_at
    assert (scores[~defect] >= choice.fail_at).mean() <= 0.01
    assert 0 < choice.false_reject_rate < 1
    assert choice.review_rate + choice.fail_rate <= 1


def test_expected_escape_on_fresh_parts_stays_under_target() -> None:
    rng = np.random.default_rng(5)
    fresh_bad = rng.normal(3.0, 1.0, 20000)
    escapes = []
    for _ in range(200):
        scores, defect = _scores(rng, 50, 39)
        choice = choose_thresholds(scores, defect, target_escape=0.1)
        escapes.append(float((fresh_bad < choice.review_at).mean()))
    assert np.mean(escapes) <= 0.1


@pytest.mark.parametrize(
    ("n_bad", "target", "alpha", "message"),
    [
        (5, 0.01, None, "unreachable with 5 defective"),
        (50, 0.01, 0.05, "at least 299 are needed"),
        (0, 0.1, None, "needs good and defective"),
        (5, 0.0, None, "target escape must lie"),
        (5, 0.2, 1.5, "alpha must lie"),
    ],
)
def test_refusals(n_bad: int, target: float, alpha: float | None, message: str) -> None:
    scores, defect = _scores(np.random.default_rng(1), 20, n_bad)
    with pytest.raises(ModelError, match=message):
        choose_thresholds(scores, defect, target, alpha)


def test_classifier_scores_are_capped_at_one() -> None:
    scores = np.array([0.01, 0.02, 0.03, 0.9, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0])
    defect = np.array([False] * 3 + [True] * 7)
    choice = choose_thresholds(scores, defect, 0.5, upper=1.0)
    assert choice.fail_at <= 1.0 and choice.review_at <= choice.fail_at


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


def test_thresholds_are_short_decimals_on_the_safe_side() -> None:
    # scores whose rounding to the 1e-6 grid by k * 1e-6 would print 1.1024729999999998
    bad = np.array([1.1024731, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0])
    good = np.array([0.5, 0.6, 0.7, 0.8, 1.2024739999])
    choice = choose_thresholds(
        np.concatenate([good, bad]), np.array([False] * 5 + [True] * 10), target_escape=0.1
    )
    assert choice.review_at == 1.102473 and repr(choice.review_at) == "1.102473"
    assert choice.fail_at == 1.202474 and repr(choice.fail_at) == "1.202474"
    rng = np.random.default_rng(3)
    for _ in range(200):
        scores, defect = _scores(rng, 60, 40)
        choice = choose_thresholds(scores, defect, target_escape=0.1)
        assert _decimals(choice.review_at) <= 6 and _decimals(choice.fail_at) <= 6
        k = choice.escapes_allowed
        assert choice.review_at <= np.sort(scores[defect])[k]  # never above the chosen defect
        assert (scores[~defect] >= choice.fail_at).mean() <= 0.02  # goods stay below fail_at


def _grey_set(root: Path) -> Path:
    """Good grey parts and darker defective ones, with noise so scores are arbitrary floats."""
    rng = np.random.default_rng(7)
    for label, count, level in (("good", 12, 128), ("scratch", 12, 60)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            image = np.full((16, 16, 3), level, np.float64) + rng.normal(0, 9.0, (16, 16, 3))
            if label == "scratch":
                image[4 + i % 8, :, :] = rng.uniform(0, 40)
            cv2.imwrite(str(root / label / f"{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return root


def test_calibrate_thresholds_writes_short_decimals(tmp_path: Path) -> None:
    model = build_brightness_anomaly_model(tmp_path / "models" / "brightness" / "1")
    data = _grey_set(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: grey\nmodels:\n  - {{name: brightness, path: {model}}}\n")
    base = ["calibrate", "thresholds", str(model), str(data), "--target-escape", "0.2"]
    res = CliRunner().invoke(app, [*base, "--write", "manifest"])
    assert res.exit_code == 0, res.output
    written = json.loads((model.parent / "manifest.json").read_text())
    values = [written["thresholds"][k] for k in ("review_at", "fail_at")]
    values += [written["provenance"]["thresholds"][k] for k in ("review_at", "fail_at")]
    text = (model.parent / "manifest.json").read_text()
    for value in values:
        assert _decimals(value) <= 6 and f": {value!r}" in text
    assert values[0] != round(values[0], 2)  # a real score, not a round number by chance
    res = CliRunner().invoke(app, [*base, "--write", "recipe", "--recipe", str(recipe)])
    assert res.exit_code == 0, res.output
    calibrated = recipe.with_name("recipe-calibrated.yaml").read_text()
    pair = yaml.safe_load(calibrated)["decision"]["thresholds"]["brightness"]
    assert pair == {"review_at": values[0], "fail_at": values[1]}
    for line in calibrated.splitlines():
        if "_at:" in line:
            assert len(line.split(":", 1)[1].strip().split(".", 1)[-1]) <= 6, line
