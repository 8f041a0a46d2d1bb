"""150 parts through the simulated cell at a realistic rate, with the real Inspector.

The check the issue asks for: the gate's action on every part matches the station's verdict for
that very part (no part passed or rejected by a tracking, timing or handshake error), and
escapes and false rejects are counted against the ground truth.

Why 150 parts are enough (500 took 2.5 minutes of the test run and checked nothing more): every
part is tracked on its own, so what a long run adds is the states it passes through, and 150
parts pass through all of them many times: about 5 parts always between photo-eye and gate
(1.5 s of travel at 3.3 parts/s), close pairs from the 30 % spacing jitter, the rendered-part
cache (64 parts) evicting twice over, the 40 sample images served round robin almost four
times, and about 45 defective parts. The 32-bit encoder does not wrap at 500 parts either
(tests/line/test_cell.py starts it just below the wrap); neither do the 16-bit trigger counters.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.line.cell import run_cell
from cellinspect.line.command import run_line
from cellinspect.line.config import LineConfig
from cellinspect.plc.sim_camera import FolderCatalog

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RECIPE = ROOT / "recipes" / "flange.yaml"
PARTS = 150
RATE_PER_MIN = 200.0  # 3.3 parts/s: a flange line (0.5 m/s at 150 mm pitch)


def _assert_line_is_exact(report: object) -> None:
    from cellinspect.line.audit import LineReport

    assert isinstance(report, LineReport)
    assert report.gated == PARTS
    assert report.mismatches == [], report.mismatches[:5]
    assert report.tracking_errors == 0
    # Late results and missed triggers depend on how busy this shared machine is (the line
    # benchmark measures the rate the station keeps up with); what must hold whatever the
    # timing is that each one is rejected at the gate, never passed.
    for entry in report.audit:
        if entry.station is None or entry.received is None or entry.received is not entry.station:
            assert entry.gate_reject, entry
        else:
            assert entry.gate_reject is entry.station.rejects, entry
    truth_defects = sum(1 for a in report.audit if a.label != "good")
    assert report.correct_rejects + report.escapes == truth_defects
    assert report.false_rejects == sum(
        1 for a in report.audit if a.label == "good" and a.gate_reject
    )


@pytest.mark.slow
def test_150_parts_on_the_shipped_recipe() -> None:
    models = [
        ROOT / "models" / n / "1" / "model.onnx" for n in ("flange-anomaly", "flange-classifier")
    ]
    missing = [str(m) for m in models if not m.exists()]
    if missing:
        pytest.skip(f"shipped models not built yet: {missing}")
    report = run_line(SHIPPED_RECIPE, parts=PARTS, rate_per_min=RATE_PER_MIN, seed=0)
    _assert_line_is_exact(report)


@pytest.mark.slow
def test_150_parts_with_a_real_inspector_on_a_real_model(
    tmp_path: Path, brightness_model: Path
) -> None:
    from cellinspect.runtime.inspector import Inspector

    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for i in range(40):
            label = "good" if rng.random() > 0.3 else "scratch"
            img = rng.integers(124, 132, (64, 64, 3), dtype=np.uint8)
            if label != "good":
                img[16:48, 16:48] = 255
            cv2.imwrite(str(folder / f"{i}.png"), img)
            w.writerow([f"{i}.png", label])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: line-150\nmodels:\n  - name: brightness\n    path: {brightness_model}\n",
        encoding="utf-8",
    )
    inspector = Inspector.from_recipe(recipe)
    report = run_cell(
        LineConfig(parts=PARTS, rate_per_min=3 * RATE_PER_MIN, seed=1),  # a ~1 ms model
        inspector,
        catalog=FolderCatalog(folder, seed=1),
    )
    _assert_line_is_exact(report)
    assert report.escapes == 0 and report.false_rejects == 0
