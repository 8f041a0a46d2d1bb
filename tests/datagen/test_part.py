"""Planning parts: label quotas, class spread, pose ranges and argument checks."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import pytest

from cellinspect.datagen.flange import (
    DEFECT_CLASSES,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    OUTER_DIAMETER_MM,
    TOLERANCE_MM,
    DatagenError,
    PartSpec,
    make_spec,
    plan_parts,
)


@pytest.mark.parametrize(
    ("count", "rate", "defective"),
    [
        (0, 0.5, 0),
        (1, 0.0, 0),
        (1, 1.0, 1),
        (10, 0.3, 3),
        (40, 0.4, 16),
        (7, 0.5, 4),
        (25, 1.0, 25),
    ],
)
def test_plan_has_the_asked_share_of_defects(count: int, rate: float, defective: int) -> None:
    specs = plan_parts(count, seed=3, defect_rate=rate)
    assert [s.index for s in specs] == list(range(count))
    assert sum(not s.is_good for s in specs) == defective


def test_classes_are_dealt_evenly_and_all_present() -> None:
    specs = plan_parts(40, seed=0, defect_rate=0.4)
    counts = Counter(s.label for s in specs if not s.is_good)
    assert set(counts) == set(DEFECT_CLASSES)
    assert min(counts.values()) >= 2
    assert max(counts.values()) - min(counts.values()) <= 1


def test_plan_uses_only_the_classes_given() -> None:
    specs = plan_parts(12, seed=1, defect_rate=1.0, classes=["dent", "stain"])
    assert Counter(s.label for s in specs) == {"dent": 6, "stain": 6}


def test_no_classes_is_fine_without_defects() -> None:
    specs = plan_parts(5, seed=1, defect_rate=0.0, classes=())
    assert all(s.is_good for s in specs)


def test_plan_is_deterministic_and_seed_dependent() -> None:
    assert plan_parts(20, seed=5, defect_rate=0.3) == plan_parts(20, seed=5, defect_rate=0.3)
    other = plan_parts(20, seed=6, defect_rate=0.3)
    assert [s.angle_deg for s in other] != [s.angle_deg for s in plan_parts(20, 5, 0.3)]


def test_defects_are_spread_not_bunched_at_the_start() -> None:
    specs = plan_parts(40, seed=0, defect_rate=0.4)
    first_half = sum(not s.is_good for s in specs[:20])
    assert 0 < first_half < 16


def test_pose_does_not_depend_on_label() -> None:
    good = make_spec(4, 9, "good")
    for label in DEFECT_CLASSES:
        assert dataclasses.replace(make_spec(4, 9, label), label="good") == good


def test_poses_and_dimensions_stay_in_range() -> None:
    for spec in plan_parts(60, seed=2, defect_rate=0.5):
        radius_px = spec.outer_diameter_mm / 2 * spec.px_per_mm
        assert spec.centre_x_px - radius_px > 30
        assert spec.centre_x_px + radius_px < IMAGE_WIDTH - 30
        assert spec.centre_y_px - radius_px > 30
        assert spec.centre_y_px + radius_px < IMAGE_HEIGHT - 30
        assert 0.0 <= spec.angle_deg < 360.0
        assert abs(spec.outer_diameter_mm - OUTER_DIAMETER_MM) <= TOLERANCE_MM
        assert spec.mm_per_px == pytest.approx(1.0 / spec.px_per_mm)


@pytest.mark.parametrize(
    ("count", "seed", "rate", "classes", "message"),
    [
        (-1, 0, 0.3, DEFECT_CLASSES, "count must be >= 0"),
        (2.5, 0, 0.3, DEFECT_CLASSES, "count must be an integer"),
        (True, 0, 0.3, DEFECT_CLASSES, "count must be an integer"),
        (5, -1, 0.3, DEFECT_CLASSES, "seed must be an integer >= 0"),
        (5, 0, -0.1, DEFECT_CLASSES, "defect_rate must be in [0, 1]"),
        (5, 0, 1.5, DEFECT_CLASSES, "defect_rate must be in [0, 1]"),
        (5, 0, float("nan"), DEFECT_CLASSES, "defect_rate must be in [0, 1]"),
        (5, 0, 0.3, ["scratch", "rust"], "unknown defect classes ['rust']"),
        (5, 0, 0.3, ["dent", "dent"], "more than once: ['dent']"),
        (5, 0, 0.3, "dent", "sequence of class names"),
        (5, 0, 0.5, [], "classes is empty"),
    ],
)
def test_bad_arguments_are_refused(
    count: int, seed: int, rate: float, classes: Sequence[str], message: str
) -> None:
    with pytest.raises(DatagenError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan_parts(count, seed, rate, classes)


def test_datagen_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="count"):
        plan_parts(-3, 0, 0.1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label": "bent"}, "label must be one of"),
        ({"index": -1}, "index must be >= 0"),
        ({"seed": -2}, "seed must be >= 0"),
        ({"scale": 3.0}, "scale must be in"),
    ],
)
def test_part_spec_checks_its_fields(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"index": 0, "seed": 0, "label": "good"}
    with pytest.raises(DatagenError, match=message):
        PartSpec(**(base | fields))  # type: ignore[arg-type]
