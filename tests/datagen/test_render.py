"""Rendering: determinism, every class, localised defects, the lens, measurable geometry."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.datagen.flange import (
    DEFECT_CLASSES,
    INDEX_MARK_RADIUS_MM,
    LABELS,
    PartSpec,
    distorted_point,
    make_spec,
    render_part,
    render_part_truth,
)
from cellinspect.entities import ImageU8


@pytest.mark.parametrize("label", LABELS)
def test_every_label_renders_a_camera_frame(label: str) -> None:
    image = render_part(make_spec(1, 0, label))
    assert image.shape == (DEFAULT_CAMERA.height, DEFAULT_CAMERA.width, 3)
    assert image.dtype == np.uint8
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    # A bright part on a dark belt, not a flat or saturated picture.
    assert grey[150:170, 20:40].mean() < 80  # belt, left of the part
    assert np.percentile(grey, 90) > 140  # the metal face
    assert (grey == 255).mean() < 0.01


@pytest.mark.parametrize("label", ["good", "crack", "stain"])
def test_same_spec_renders_identical_bytes(label: str) -> None:
    spec = make_spec(7, 11, label)
    assert render_part(spec).tobytes() == render_part(spec).tobytes()


def test_other_seed_or_index_renders_another_part() -> None:
    base = render_part(make_spec(0, 0, "good"))
    assert not np.array_equal(base, render_part(make_spec(0, 1, "good")))
    assert not np.array_equal(base, render_part(make_spec(1, 0, "good")))


@pytest.mark.parametrize("label", DEFECT_CLASSES)
@pytest.mark.parametrize("index", [0, 5])
def test_defect_changes_only_its_own_region(label: str, index: int) -> None:
    spec = make_spec(index, 2, label)
    defective = render_part_truth(spec)
    good = render_part(dataclasses.replace(spec, label="good"))
    diff = np.abs(defective.image.astype(np.int16) - good.astype(np.int16)).max(axis=2)
    changed = diff > 25
    region = cv2.dilate(defective.defect_mask, np.ones((7, 7), np.uint8)) > 0
    assert changed.sum() >= 40, "the defect must be visible"
    assert not (changed & ~region).any(), "pixels changed outside the defect's truth region"
    assert region.mean() < 0.03, "a defect is local, not a large part of the frame"
    bbox = defective.defect_bbox
    assert bbox is not None
    x, y, w, h = bbox
    assert min(x, y) >= 0
    assert x + w <= 320
    assert y + h <= 320
    assert max(w, h) <= 110


def test_good_part_has_no_defect_region() -> None:
    rendered = render_part_truth(make_spec(3, 0, "good"))
    assert not rendered.defect_mask.any()
    assert rendered.defect_bbox is None


def test_missing_hole_leaves_metal_where_the_hole_was() -> None:
    spec = make_spec(2, 4, "missing_hole")
    defective = render_part_truth(spec)
    good = render_part(dataclasses.replace(spec, label="good"))
    inside = defective.defect_mask > 0
    grey_def = cv2.cvtColor(defective.image, cv2.COLOR_BGR2GRAY)[inside]
    grey_good = cv2.cvtColor(good, cv2.COLOR_BGR2GRAY)[inside]
    assert grey_def.mean() > grey_good.mean() + 60  # bright metal instead of a dark hole


def test_chipped_edge_shows_belt_where_metal_was() -> None:
    spec = make_spec(6, 4, "chipped_edge")
    defective = render_part_truth(spec)
    good = render_part(dataclasses.replace(spec, label="good"))
    grey_def = cv2.cvtColor(defective.image, cv2.COLOR_BGR2GRAY).astype(int)
    grey_good = cv2.cvtColor(good, cv2.COLOR_BGR2GRAY).astype(int)
    assert ((grey_good - grey_def) > 60).sum() >= 20


def _outline(image: ImageU8) -> tuple[float, float, float]:
    """Centre (x, y) and mean diameter in px of the part's outer outline (Otsu + ellipse)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (cx, cy), (a, b), _ = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    return cx, cy, (a + b) / 2.0


@pytest.mark.parametrize("index", [0, 1, 2])
def test_undistorted_frame_measures_the_true_part(index: int) -> None:
    spec: PartSpec = make_spec(index, 0, "good")
    raw = render_part(spec)
    cam = DEFAULT_CAMERA
    ideal = np.asarray(cv2.undistort(raw, cam.camera_matrix, cam.dist_coeffs), dtype=np.uint8)
    cx, cy, diameter = _outline(ideal)
    assert cx == pytest.approx(spec.centre_x_px, abs=1.0)
    assert cy == pytest.approx(spec.centre_y_px, abs=1.0)
    # The contour runs through boundary pixel centres: about 1 px short of the true edge.
    assert diameter / spec.px_per_mm == pytest.approx(spec.outer_diameter_mm, abs=0.4)
    # The lens is really there: barrel distortion shrinks the raw outline by about 1 mm.
    raw_cx, raw_cy, raw_diameter = _outline(raw)
    assert diameter - raw_diameter > 2.5
    dx, dy = distorted_point(spec.centre_x_px, spec.centre_y_px)
    assert raw_cx == pytest.approx(dx, abs=1.0)
    assert raw_cy == pytest.approx(dy, abs=1.0)


@pytest.mark.parametrize("index", [0, 3, 8])
def test_index_mark_sits_at_angle_deg(index: int) -> None:
    spec = make_spec(index, 1, "good")
    cam = DEFAULT_CAMERA
    ideal = cv2.undistort(render_part(spec), cam.camera_matrix, cam.dist_coeffs)
    grey = cv2.cvtColor(ideal, cv2.COLOR_BGR2GRAY).astype(float)
    rho = INDEX_MARK_RADIUS_MM * spec.px_per_mm
    a = math.radians(spec.angle_deg)

    def patch_mean(angle: float) -> float:
        x = round(spec.centre_x_px + rho * math.cos(angle))
        y = round(spec.centre_y_px - rho * math.sin(angle))
        return float(grey[y - 1 : y + 2, x - 1 : x + 2].mean())

    # The turned face looks the same half a turn away; only the engraved dot is darker.
    assert patch_mean(a) < patch_mean(a + math.pi) - 30
