"""`evaluate` per defect type, checked against figures worked out by hand on a tiny set.

The brightness model scores a flat image of grey level 128 + k at exactly k / 128, so every
score, and therefore every per-type AUROC and recall, is known before the model runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.training.dataset import RoiReader, load_labelled
from cellinspect.training.evaluate import evaluate_model

# label -> k of each flat image (score k / 128); brightness model: review_at 0.3, fail_at 0.5
LEVELS = {"good": [6, 13, 45], "scratch": [26, 51, 77], "stain": [70, 90]}


def _flat_set(root: Path, levels: dict[str, list[tuple[int, int, int]]]) -> Path:
    for label, colours in levels.items():
        (root / label).mkdir(parents=True)
        for i, bgr in enumerate(colours):
            cv2.imwrite(str(root / label / f"{i}.png"), np.full((16, 16, 3), bgr, np.uint8))
    return root


def _grey(ks: list[int]) -> list[tuple[int, int, int]]:
    return [(128 + k, 128 + k, 128 + k) for k in ks]


def test_anomaly_model_per_type_matches_hand_figures(
    brightness_model: Path, tmp_path: Path
) -> None:
    data = _flat_set(tmp_path / "data", {lbl: _grey(ks) for lbl, ks in LEVELS.items()})
    rep = evaluate_model(brightness_model, load_labelled(data), RoiReader(None))
    # scratch 0.203, 0.398, 0.602 against goods 0.047, 0.102, 0.352:
    # 0.203 beats two goods, the others all three -> 8 of 9 pairs
    assert rep.per_defect_type["scratch"] == {
        "count": 3,
        "auroc": pytest.approx(8 / 9),
        "recall_at_review": pytest.approx(2 / 3),  # 0.398, 0.602 >= 0.3
        "recall_at_fail": pytest.approx(1 / 3),  # only 0.602 >= 0.5
    }
    assert rep.per_defect_type["stain"] == {
        "count": 2,
        "auroc": 1.0,
        "recall_at_review": 1.0,
        "recall_at_fail": 1.0,  # 0.547 and 0.703
    }
    assert set(rep.per_defect_type) == {"scratch", "stain"}  # good is no defect type


def _softmax_defect(bgr: tuple[int, int, int]) -> float:
    """The colour classifier by hand: softmax(8 * mean BGR / 255), highest defect class."""
    logits = 8.0 * np.array(bgr) / 255.0
    p = np.exp(logits) / np.exp(logits).sum()
    return float(max(p[1], p[2]))


def _pairs_auroc(good: list[float], bad: list[float]) -> float:
    wins = sum((b > g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(good) * len(bad))


def test_classifier_per_type_and_cli_output(colour_model: Path, tmp_path: Path) -> None:
    colours = {
        "good": [(230, 20, 20), (200, 90, 40), (120, 110, 20)],
        "scratch": [(40, 230, 20), (100, 140, 60), (110, 100, 30)],
        "stain": [(20, 40, 230), (90, 60, 160)],
    }
    data = _flat_set(tmp_path / "data", colours)
    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["evaluate", str(colour_model), str(data), "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    good = [_softmax_defect(c) for c in colours["good"]]
    for kind in ("scratch", "stain"):
        bad = [_softmax_defect(c) for c in colours[kind]]
        fig = report["per_defect_type"][kind]
        assert fig["count"] == len(bad)
        assert fig["auroc"] == pytest.approx(_pairs_auroc(good, bad))
        assert fig["recall_at_review"] == pytest.approx(np.mean([b >= 0.5 for b in bad]))
        assert fig["recall_at_fail"] == pytest.approx(np.mean([b >= 0.8 for b in bad]))
        shown = " / ".join(f"{fig[k]:.3f}" for k in ("auroc", "recall_at_review", "recall_at_fail"))
        assert f"{kind} (n={len(bad)})" in res.output  # the printed row, maybe wrapped
        assert shown in res.output
    # the set is built so that the figures are not all trivially 0 or 1
    assert 0 < report["per_defect_type"]["scratch"]["recall_at_review"] < 1
    assert "per_class" in report and report["per_class"]["scratch"]["support"] == 3
