"""Pure checks of measured dimensions against a MeasurementSpec, one result per feature.

The decision layer turns every failed result's `reason` into a FAIL reason, e.g.
"outer_diameter_mm 60.62 outside 60.00 ± 0.30". A feature the spec asks for but the
measurement lacks (no bore found, too few holes for a bolt circle) fails too: a dimension
that could not be measured is never passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cellinspect.calibration.measure import FlangeMeasurement
from cellinspect.calibration.measure_config import MeasurementSpec, Tolerance


@dataclass(frozen=True)
class ToleranceResult:
    """One checked feature: what was measured, what was allowed, and whether it passed."""

    feature: str
    measured: float | None
    nominal: float
    tol: float
    ok: bool
    reason: str


def _band(feature: str, value: float | None, tol: Tolerance) -> ToleranceResult:
    if value is None:
        return ToleranceResult(
            feature,
            None,
            tol.nominal,
            tol.tol,
            False,
            f"{feature} not measured (feature not found)",
        )
    ok = tol.contains(value)
    verb = "within" if ok else "outside"
    return ToleranceResult(
        feature,
        value,
        tol.nominal,
        tol.tol,
        ok,
        f"{feature} {value:.2f} {verb} {tol.nominal:.2f} ± {tol.tol:.2f}",
    )


def _zone(feature: str, offset: float | None, zone: float, what: str) -> ToleranceResult:
    """A position tolerance as a diameter zone: the offset may be at most zone / 2."""
    if offset is None:
        return ToleranceResult(feature, None, 0.0, zone, False, f"{feature} not measured ({what})")
    ok = 2 * offset <= zone + 1e-12
    verb = "within" if ok else "outside"
    return ToleranceResult(
        feature,
        offset,
        0.0,
        zone,
        ok,
        f"{feature} {what} off by {offset:.2f} mm, {verb} position zone ⌀{zone:.2f}",
    )


def hole_position_errors(
    m: FlangeMeasurement, bolt_circle_diameter_mm: float, count: int | None = None
) -> list[float]:
    """Distance of each hole from its place in an equally spaced pattern on the given circle.

    The pattern has `count` slots (default: as many as holes were found), is centred on the
    outer circle and turned to fit the holes best.
    """
    n = count if count else m.hole_count
    if n == 0 or not m.holes:
        return []
    ox, oy = m.outer.centre_mm
    angles = [math.atan2(h.centre_mm[1] - oy, h.centre_mm[0] - ox) for h in m.holes]
    step = 2 * math.pi / n
    # circular mean of each hole's angle minus its slot: the pattern's best rotation
    s = sum(math.sin(n * a) for a in angles)
    c = sum(math.cos(n * a) for a in angles)
    phase = math.atan2(s, c) / n
    radius = bolt_circle_diameter_mm / 2
    errors = []
    for hole, angle in zip(m.holes, angles, strict=True):
        slot = phase + round((angle - phase) / step) * step
        ideal = (ox + radius * math.cos(slot), oy + radius * math.sin(slot))
        errors.append(math.dist(hole.centre_mm, ideal))
    return errors


def check_tolerances(m: FlangeMeasurement, spec: MeasurementSpec) -> list[ToleranceResult]:
    """Every dimension the spec names, checked; an empty list when it names none."""
    results: list[ToleranceResult] = []
    if spec.outer_diameter_mm is not None:
        results.append(_band("outer_diameter_mm", m.outer_diameter_mm, spec.outer_diameter_mm))
    if spec.bore_diameter_mm is not None:
        results.append(_band("bore_diameter_mm", m.bore_diameter_mm, spec.bore_diameter_mm))
    if spec.hole_count is not None:
        ok = m.hole_count == spec.hole_count
        results.append(
            ToleranceResult(
                "hole_count",
                float(m.hole_count),
                float(spec.hole_count),
                0.0,
                ok,
                f"hole_count {m.hole_count}" + ("" if ok else f", expected {spec.hole_count}"),
            )
        )
    if spec.hole_diameter_mm is not None:
        if not m.holes:
            results.append(_band("hole_diameter_mm", None, spec.hole_diameter_mm))
        for i, hole in enumerate(m.holes):
            results.append(_band(f"hole{i}_diameter_mm", hole.diameter_mm, spec.hole_diameter_mm))
    if spec.bolt_circle_diameter_mm is not None:
        bcd = m.bolt_circle_diameter_mm if m.hole_count >= 3 else None
        results.append(_band("bolt_circle_diameter_mm", bcd, spec.bolt_circle_diameter_mm))
    if spec.hole_position_mm is not None:
        nominal_bcd = (
            spec.bolt_circle_diameter_mm.nominal
            if spec.bolt_circle_diameter_mm is not None
            else m.bolt_circle_diameter_mm
        )
        if nominal_bcd is None or not m.holes:
            results.append(_zone("hole_position_mm", None, spec.hole_position_mm, "no holes"))
        else:
            errors = hole_position_errors(m, nominal_bcd, spec.hole_count)
            for i, err in enumerate(errors):
                results.append(_zone(f"hole{i}_position_mm", err, spec.hole_position_mm, "centre"))
    if spec.bore_concentricity_mm is not None:
        results.append(
            _zone(
                "bore_concentricity_mm",
                m.bore_offset_mm,
                spec.bore_concentricity_mm,
                "bore centre" if m.bore is not None else "no bore",
            )
        )
    return results


def failed_reasons(results: list[ToleranceResult]) -> tuple[str, ...]:
    """The reasons of the failed checks, for a FAIL verdict."""
    return tuple(r.reason for r in results if not r.ok)
