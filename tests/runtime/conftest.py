"""A small station: the brightness anomaly model, a recipe with one ROI, images on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import build_brightness_anomaly_model

RECIPE = """
name: grey-parts
source: {{type: folder, path: images}}
rois:
  - {{name: centre, x: 8, y: 8, width: 48, height: 48}}
models:
  - {{name: brightness, path: {model}}}
decision:
  fail_safe: {fail_safe}
runtime:
  deadline_ms: {deadline}
  warmup_runs: 1
"""


def grey_part(scratch: bool = False) -> np.ndarray:
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    if scratch:
        cv2.line(image, (15, 20), (50, 40), (0, 0, 0), 2)
    return image


@pytest.fixture
def station(tmp_path: Path) -> dict[str, Path]:
    model = build_brightness_anomaly_model(tmp_path / "models" / "brightness" / "1")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a_good.png"), grey_part())
    cv2.imwrite(str(images / "b_scratch.png"), grey_part(scratch=True))
    (images / "c_empty.png").write_bytes(b"")
    (images / "d_text.png").write_text("not an image")
    cv2.imwrite(str(images / "e_good.png"), grey_part())
    recipes = {}
    for name, fail_safe, deadline in (
        ("recipe", "fail", 5000),
        ("recipe_review", "review", 5000),
        ("recipe_deadline", "fail", 0.000001),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(RECIPE.format(model=model, fail_safe=fail_safe, deadline=deadline))
        recipes[name] = path
    return {"images": images, "model": model, **recipes}
