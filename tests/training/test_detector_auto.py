"""`--detector auto`: real candidates fitted on real features, chosen by synthetic anomalies.

The constructed case: a bright ring anywhere on a dark grainy plate. Per-position Gaussians
cannot learn a part that moves (every position is sometimes ring, sometimes plate), a
position-free PatchCore bank can, so auto must keep PatchCore, and PatchCore must indeed be the
better one on real (not synthetic) defects of that part.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.runner import ModelRunner
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, RoiReader, good_images
from cellinspect.training.detector_choice import (
    TIE_AUROC,
    CandidateResult,
    _pick,
    candidates,
)
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fitted_images import fitted_ids, image_id
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"
SMALL = ["--coreset", "200", "--projection-dim", "64"]


def _ring_part(rng: np.random.Generator, defect: bool = False) -> ImageU8:
    plate = cv2.GaussianBlur(rng.integers(30, 90, (224, 224)).astype(np.uint8), (0, 0), 2)
    centre = (int(rng.integers(40, 184)), int(rng.integers(40, 184)))
    cv2.circle(plate, centre, 30, (220,), -1)
    cv2.circle(plate, centre, 10, (40,), -1)
    if defect:  # a dark crack through the ring, or a bright chip on the plate
        if rng.random() < 0.5:
            a = (centre[0] - 25, centre[1] + int(rng.integers(-20, 20)))
            cv2.line(plate, a, (centre[0] + 25, centre[1] + int(rng.integers(-20, 20))), (30,), 3)
        else:
            spot = (int(rng.integers(15, 209)), int(rng.integers(15, 209)))
            cv2.circle(plate, spot, 7, (200,), -1)
    return np.asarray(cv2.cvtColor(plate, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


@pytest.fixture(scope="module")
def auto_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("auto")
    good = root / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i in range(42):
        cv2.imwrite(str(good / f"g{i:03d}.png"), _ring_part(rng))
    out = root / "models" / "ring" / "1"
    args = ["fit-anomaly", "--good", str(good), "--out", str(out), "--backbone", str(BACKBONE)]
    res = CliRunner().invoke(app, [*args, *SMALL])
    assert res.exit_code == 0, res.output
    return good, out / "model.onnx", res.output


def test_auto_is_the_default_and_records_why(auto_fit: tuple[Path, Path, str]) -> None:
    good, model, output = auto_fit
    prov = load_manifest(model).provenance
    record = prov["detector_choice"]
    assert record["requested"] == "auto"
    names = [c["name"] for c in record["candidates"]]
    assert names == [c.name for c in candidates(AnomalyFitParams())]
    assert record["chosen"] in names and record["chosen"] in record["reason"]
    assert prov["parameters"]["detector"] == record["chosen"].split("-")[0]
    fitted = [c for c in record["candidates"] if c["synthetic_auroc"] is not None]
    assert len(fitted) >= 2  # patchcore and one gaussian at least
    assert all(0.0 <= c["synthetic_auroc"] <= 1.0 for c in fitted)
    assert record["held_back_good"] >= 4 and record["fit_images"] > record["held_back_good"]
    # the printed table names every candidate and the reason
    assert "--detector auto" in output and all(n in output for n in names)
    assert "chose " + record["chosen"] in output
    # honest thresholds: the calibration images were never fitted, and both are recorded
    calibration = prov["thresholds"]["data"]["images"]["ids"]
    all_ids = {image_id(p) for p in good.glob("*.png")}
    fitted_set = fitted_ids(load_manifest(model)) or set()
    assert fitted_set and calibration
    assert not fitted_set & set(calibration)
    assert fitted_set | set(calibration) == all_ids
    json.dumps(record)  # the record is plain JSON


def test_auto_keeps_patchcore_where_it_is_clearly_better(
    auto_fit: tuple[Path, Path, str], tmp_path: Path
) -> None:
    good, model, _ = auto_fit
    record = load_manifest(model).provenance["detector_choice"]
    by_name = {c["name"]: c["synthetic_auroc"] for c in record["candidates"]}
    assert record["chosen"] == "patchcore"
    assert by_name["patchcore"] > by_name["gaussian"] + 0.05  # not a tie
    # ...and real defects agree: fit the gaussian the same way, score new parts with both
    fitted = load_manifest(model).provenance["fitted_images"]["ids"]
    fit_items = [i for i in good_images(good).items if image_id(i.path) in set(fitted)]
    gaussian = fit_anomaly(
        Dataset(good, fit_items),
        RoiReader(None),
        BACKBONE,
        tmp_path / "g" / "1",
        "g",
        "1",
        AnomalyFitParams(detector="gaussian", projection_dim=64),
    ).model_path
    assert "detector_choice" not in load_manifest(gaussian).provenance  # explicit: no choice
    rng = np.random.default_rng(99)
    parts = [_ring_part(rng, defect=i % 2 == 1) for i in range(24)]
    truth = [i % 2 == 1 for i in range(24)]
    real = {}
    for name, path in (("patchcore", model), ("gaussian", gaussian)):
        scores = [o.anomaly_score for o in ModelRunner.load(name, path).predict(parts)]
        real[name] = roc_auc_score(truth, scores)
    assert real["patchcore"] > real["gaussian"], real


def test_ties_go_to_the_first_listed_candidate_and_errors_are_named() -> None:
    results = [
        CandidateResult("gaussian", "gaussian", {}, 0.90),
        CandidateResult("gaussian-groups3", "gaussian", {}, None, "too few images"),
        CandidateResult("patchcore", "patchcore", {}, 0.90 + TIE_AUROC / 2),
    ]
    winner, reason = _pick(results)
    assert winner.name == "gaussian" and "tied" in reason and "gaussian-groups3" in reason
    results[2] = CandidateResult("patchcore", "patchcore", {}, 0.90 + 2 * TIE_AUROC)
    winner, reason = _pick(results)
    assert winner.name == "patchcore" and "highest synthetic AUROC" in reason


def test_auto_on_too_few_parts_says_what_to_do(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(7):
        cv2.imwrite(str(tmp_path / f"g{i}.png"), _ring_part(rng))
    with pytest.raises(ModelError, match=r"--detector auto needs at least 9 .* --detector"):
        fit_anomaly(
            good_images(tmp_path),
            RoiReader(None),
            BACKBONE,
            tmp_path / "m" / "1",
            "m",
            "1",
            AnomalyFitParams(detector="auto", coreset_size=100),
        )
