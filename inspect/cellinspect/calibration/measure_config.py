"""What a recipe checks in millimetres: nominal sizes, tolerances, and how to find the part.

Meant to sit in a recipe as ``measurements: MeasurementSpec | None``:

    measurements:
      part_height_mm: 8.0
      outer_diameter_mm: {nominal: 60.0, tol: 0.3}
      bore_diameter_mm: {nominal: 20.0, tol: 0.2}
      bolt_circle_diameter_mm: {nominal: 44.0, tol: 0.2}
      hole_count: 6
      hole_position_mm: 0.5
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Polarity(enum.StrEnum):
    """Whether the part looks brighter or darker than the belt."""

    AUTO = "auto"
    BRIGHT = "bright"
    DARK = "dark"


class Tolerance(_Strict):
    """A symmetric tolerance: the value must lie within nominal +- tol."""

    nominal: float = Field(gt=0, description="Nominal size from the drawing, mm.")
    tol: float = Field(ge=0, description="Allowed deviation either way, mm (nominal +- tol).")

    def contains(self, value: float) -> bool:
        return abs(value - self.nominal) <= self.tol + 1e-12


class MeasurementSpec(_Strict):
    """Dimensions checked on a round part with a bore and a bolt circle (None: not checked)."""

    part_height_mm: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Height of the measured top face above the belt (the part's thickness), mm: "
            "features are corrected for perspective, since the plane calibration is on the belt."
        ),
    )
    polarity: Polarity = Field(
        default=Polarity.AUTO,
        description="Whether the part is brighter or darker than the belt (auto: per image).",
    )
    outer_diameter_mm: Tolerance | None = Field(
        default=None, description="Outer diameter of the part."
    )
    bore_diameter_mm: Tolerance | None = Field(
        default=None, description="Diameter of the central bore (largest hole near the centre)."
    )
    hole_diameter_mm: Tolerance | None = Field(
        default=None, description="Diameter of every bolt hole."
    )
    bolt_circle_diameter_mm: Tolerance | None = Field(
        default=None, description="Diameter of the circle through the bolt-hole centres."
    )
    hole_count: int | None = Field(
        default=None, ge=0, description="Number of bolt holes the part must have."
    )
    hole_position_mm: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Position tolerance of each bolt hole, mm, as a diameter zone (GD&T style): the hole "
            "centre must lie within half this distance of its place on the nominal bolt circle, "
            "holes equally spaced, pattern centred on the outer diameter and turned to fit best."
        ),
    )
    bore_concentricity_mm: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Concentricity of the bore to the outer diameter, mm, as a diameter zone: the bore "
            "centre must lie within half this distance of the outer circle's centre."
        ),
    )
    min_part_diameter_mm: float = Field(
        default=10.0, gt=0, description="Blobs smaller than this are not taken for the part."
    )
