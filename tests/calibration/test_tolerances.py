"""Tolerance checks are pure: built measurements in, one verdict per feature out."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from cellinspect.calibration.measure import CircleMm, FlangeMeasurement
from cellinspect.calibration.measure_config import MeasurementSpec, Tolerance
from cellinspect.calibration.tolerances import (
    check_tolerances,
    failed_reasons,
    hole_position_errors,
)


def flange(
    outer: float = 60.0,
    bore: float | None = 20.0,
    bore_offset: float = 0.0,
    holes: int = 6,
    bcd: float = 44.0,
    nudge: tuple[int, float] = (0, 0.0),
) -> FlangeMeasurement:
    """A measurement as the image stage would give it; `nudge` moves one hole radially."""
    hole_list = []
    for k in range(holes):
        a = 2 * math.pi * k / 6 + 0.1
        r = bcd / 2 + (nudge[1] if k == nudge[0] else 0.0)
        hole_list.append(CircleMm((r * math.cos(a), r * math.sin(a)), 6.6, 0.01, 40))
    return FlangeMeasurement(
        outer=CircleMm((0.0, 0.0), outer, 0.01, 300),
        bore=CircleMm((bore_offset, 0.0), bore, 0.01, 100) if bore is not None else None,
        holes=tuple(hole_list),
        bolt_circle=CircleMm((0.0, 0.0), bcd, 0.0, holes) if holes else None,
        height_mm=0.0,
    )


SPEC = MeasurementSpec(
    outer_diameter_mm=Tolerance(nominal=60.0, tol=0.3),
    bore_diameter_mm=Tolerance(nominal=20.0, tol=0.2),
    bolt_circle_diameter_mm=Tolerance(nominal=44.0, tol=0.2),
    hole_count=6,
    hole_position_mm=0.4,
    bore_concentricity_mm=0.2,
)


def test_good_part_passes_every_check() -> None:
    results = check_tolerances(flange(), SPEC)
    assert all(r.ok for r in results)
    names = [r.feature for r in results]
    assert names[:4] == [
        "outer_diameter_mm",
        "bore_diameter_mm",
        "hole_count",
        "bolt_circle_diameter_mm",
    ]
    assert names.count("hole0_position_mm") == 1 and names[-1] == "bore_concentricity_mm"
    assert failed_reasons(results) == ()


@pytest.mark.parametrize(
    ("part", "feature", "reason"),
    [
        (flange(outer=60.62), "outer_diameter_mm", "outer_diameter_mm 60.62 outside 60.00 ± 0.30"),
        (flange(outer=59.65), "outer_diameter_mm", "outer_diameter_mm 59.65 outside 60.00 ± 0.30"),
        (flange(bore=20.25), "bore_diameter_mm", "bore_diameter_mm 20.25 outside 20.00 ± 0.20"),
        (
            flange(bore=None),
            "bore_diameter_mm",
            "bore_diameter_mm not measured (feature not found)",
        ),
        (
            flange(bore_offset=0.15),
            "bore_concentricity_mm",
            "bore_concentricity_mm bore centre off by 0.15 mm, outside position zone ⌀0.20",
        ),
        (
            flange(nudge=(2, 0.3)),
            "hole2_position_mm",
            "hole2_position_mm centre off by 0.30 mm, outside position zone ⌀0.40",
        ),
    ],
)
def test_out_of_tolerance_names_the_feature(
    part: FlangeMeasurement, feature: str, reason: str
) -> None:
    failed = [r for r in check_tolerances(part, SPEC) if not r.ok]
    assert failed[0].feature == feature
    assert failed[0].reason == reason
    # only the broken feature fails; a missing bore also leaves concentricity unmeasured
    assert {r.feature for r in failed[1:]} <= {"bore_concentricity_mm"}
    assert len(failed) == (2 if part.bore is None else 1)


def test_edges_of_the_band_pass() -> None:
    results = check_tolerances(flange(outer=60.3, bore_offset=0.1), SPEC)
    assert all(r.ok for r in results)
    (outer,) = [r for r in results if r.feature == "outer_diameter_mm"]
    assert (outer.measured, outer.nominal, outer.tol) == (60.3, 60.0, 0.3)
    assert outer.reason == "outer_diameter_mm 60.30 within 60.00 ± 0.30"


def test_missing_holes() -> None:
    results = {r.feature: r for r in check_tolerances(flange(holes=0), SPEC)}
    assert (
        not results["hole_count"].ok and results["hole_count"].reason == "hole_count 0, expected 6"
    )
    assert not results["bolt_circle_diameter_mm"].ok
    assert not results["hole_position_mm"].ok
    five = flange(holes=5)
    assert all(e < 1e-9 for e in hole_position_errors(five, 44.0, count=6))


def test_empty_spec_checks_nothing() -> None:
    assert check_tolerances(flange(outer=99.0), MeasurementSpec()) == []


def test_spec_schema() -> None:
    spec = MeasurementSpec.model_validate(
        {"outer_diameter_mm": {"nominal": 60.0, "tol": 0.3}, "hole_count": 6}
    )
    assert spec.outer_diameter_mm == Tolerance(nominal=60.0, tol=0.3)
    for model in (MeasurementSpec, Tolerance):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize(
    "data",
    [
        {"outer_diameter": {"nominal": 60.0, "tol": 0.3}},
        {"outer_diameter_mm": {"nominal": 60.0, "tol": 0.3, "unit": "mm"}},
        {"outer_diameter_mm": {"nominal": 60.0, "tol": -0.1}},
        {"outer_diameter_mm": {"nominal": 0, "tol": 0.1}},
        {"hole_count": -1},
        {"polarity": "grey"},
        {"hole_position_mm": 0},
    ],
)
def test_spec_rejects(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MeasurementSpec.model_validate(data)
