"""The sample part (a turned flange with a bolt circle) and the plan of which parts to render.

Everything a later stage may want to check against (pose, true dimensions, the pixel scale) is
decided here, before any pixel is drawn, so measurements can be compared with the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.errors import CellInspectError

GOOD = "good"
DEFECT_CLASSES: tuple[str, ...] = (
    "scratch",
    "crack",
    "dent",
    "missing_hole",
    "chipped_edge",
    "stain",
)
# Defects the shipped models never saw: the simulated line brings them in on demand
# (`cellinspect line --new-defect`); plans and sample sets draw only DEFECT_CLASSES.
NEW_DEFECT_CLASSES: tuple[str, ...] = ("hairline", "haze")
LABELS: tuple[str, ...] = (GOOD, *DEFECT_CLASSES, *NEW_DEFECT_CLASSES)

# Nominal drawing of the part (mm).
OUTER_DIAMETER_MM = 60.0
BOLT_CIRCLE_DIAMETER_MM = 44.0
BORE_DIAMETER_MM = 20.0
BOLT_HOLE_DIAMETER_MM = 6.6  # clearance for M6
BOLT_HOLE_COUNT = 6
HUB_DIAMETER_MM = 30.0  # raised hub around the bore, seen as a turned step
THICKNESS_MM = 8.0
INDEX_MARK_RADIUS_MM = 12.5  # engraved dot in line with hole 0: makes the angle unambiguous
INDEX_MARK_DIAMETER_MM = 1.0
TOLERANCE_MM = 0.1  # manufacturing variation of each diameter, uniform +-

# Imaging: the top face of the part lies WORKING_DISTANCE_MM from the pinhole, where one mm
# covers PX_PER_MM pixels of the ideal (undistorted) image; a part's `scale` multiplies it.
PX_PER_MM = 4.0
MM_PER_PX = 1.0 / PX_PER_MM
WORKING_DISTANCE_MM = DEFAULT_CAMERA.fx / PX_PER_MM
IMAGE_WIDTH = DEFAULT_CAMERA.width
IMAGE_HEIGHT = DEFAULT_CAMERA.height

# Pose variation on the belt.
MAX_SHIFT_PX = 6.0
SCALE_JITTER = 0.0  # parts of one type lie at one height: no distance change

# Independent random streams per part, so a part's texture, pose and noise stay the same
# whatever its label (a good and a defective rendering of one part differ only at the defect).
STREAM_PLAN = 0
STREAM_POSE = 1
STREAM_TEXTURE = 2
STREAM_DEFECT = 3
STREAM_NOISE = 4


class DatagenError(CellInspectError, ValueError):
    """Arguments to the sample generator are invalid (count, rate, classes, output folder)."""


@dataclass(frozen=True)
class PartSpec:
    """One part to render: its identity, label, pose on the belt and true dimensions.

    Pose is given in the ideal (undistorted) image whose camera matrix is the virtual camera's:
    `centre_x_px`, `centre_y_px` is the part's axis, `angle_deg` the direction of bolt hole 0
    (and the index mark), counter-clockwise on screen from the +x axis, and `scale` multiplies
    the nominal PX_PER_MM (the part lies a little nearer or farther).
    """

    index: int
    seed: int
    label: str
    centre_x_px: float = IMAGE_WIDTH / 2.0
    centre_y_px: float = IMAGE_HEIGHT / 2.0
    angle_deg: float = 0.0
    scale: float = 1.0
    outer_diameter_mm: float = OUTER_DIAMETER_MM
    bolt_circle_diameter_mm: float = BOLT_CIRCLE_DIAMETER_MM
    bore_diameter_mm: float = BORE_DIAMETER_MM
    hole_diameter_mm: float = BOLT_HOLE_DIAMETER_MM

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise DatagenError(
                f"part {self.index}: label must be one of {LABELS}, got {self.label!r}"
            )
        if self.index < 0:
            raise DatagenError(f"part index must be >= 0, got {self.index}")
        if self.seed < 0:
            raise DatagenError(f"seed must be >= 0, got {self.seed}")
        if not 0.5 <= self.scale <= 1.5:
            raise DatagenError(f"part {self.index}: scale must be in [0.5, 1.5], got {self.scale}")

    @property
    def px_per_mm(self) -> float:
        """Pixels per mm on the part's top face in the ideal image."""
        return PX_PER_MM * self.scale

    @property
    def mm_per_px(self) -> float:
        return 1.0 / self.px_per_mm

    @property
    def is_good(self) -> bool:
        return self.label == GOOD


def part_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random stream `stream` of part `index` under `seed` (independent of the others)."""
    return np.random.default_rng([seed, index, stream])


def make_spec(index: int, seed: int, label: str) -> PartSpec:
    """Draw the pose and dimensions of part `index`; they do not depend on its label."""
    if index < 0 or seed < 0:
        raise DatagenError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = part_rng(seed, index, STREAM_POSE)
    dx, dy = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, size=2)
    angle = rng.uniform(0.0, 360.0)
    scale = 1.0 + rng.uniform(-SCALE_JITTER, SCALE_JITTER)
    tol = rng.uniform(-TOLERANCE_MM, TOLERANCE_MM, size=4)
    return PartSpec(
        index=index,
        seed=seed,
        label=label,
        centre_x_px=round(IMAGE_WIDTH / 2.0 + float(dx), 3),
        centre_y_px=round(IMAGE_HEIGHT / 2.0 + float(dy), 3),
        angle_deg=round(float(angle), 3),
        scale=round(float(scale), 5),
        outer_diameter_mm=round(OUTER_DIAMETER_MM + float(tol[0]), 4),
        bolt_circle_diameter_mm=round(BOLT_CIRCLE_DIAMETER_MM + float(tol[1]), 4),
        bore_diameter_mm=round(BORE_DIAMETER_MM + float(tol[2]), 4),
        hole_diameter_mm=round(BOLT_HOLE_DIAMETER_MM + float(tol[3]), 4),
    )


def check_plan_args(count: int, seed: int, defect_rate: float, classes: Sequence[str]) -> None:
    """Refuse arguments that cannot make a plan, saying what was expected."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise DatagenError(f"count must be an integer, got {count!r}")
    if count < 0:
        raise DatagenError(f"count must be >= 0, got {count}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatagenError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(defect_rate, int | float) or not 0.0 <= float(defect_rate) <= 1.0:
        raise DatagenError(f"defect_rate must be in [0, 1], got {defect_rate!r}")
    if isinstance(classes, str):
        raise DatagenError(f"classes must be a sequence of class names, got the string {classes!r}")
    unknown = [c for c in classes if c not in DEFECT_CLASSES]
    if unknown:
        raise DatagenError(f"unknown defect classes {unknown}; known: {list(DEFECT_CLASSES)}")
    dupes = sorted({c for c in classes if list(classes).count(c) > 1})
    if dupes:
        raise DatagenError(f"defect classes listed more than once: {dupes}")


def defect_count(count: int, defect_rate: float) -> int:
    """How many of `count` parts are defective: the rate, rounded half up."""
    return math.floor(count * float(defect_rate) + 0.5)


def plan_parts(
    count: int, seed: int, defect_rate: float, classes: Sequence[str] = DEFECT_CLASSES
) -> list[PartSpec]:
    """Decide label, pose and dimensions of `count` parts.

    Exactly round(count * defect_rate) parts are defective, the classes dealt out in turn (so
    their counts differ by at most one), and the defective parts are spread at random positions.
    """
    check_plan_args(count, seed, defect_rate, classes)
    n_defect = defect_count(count, defect_rate)
    if n_defect > 0 and not classes:
        raise DatagenError(
            f"defect_rate {defect_rate} asks for {n_defect} defects but classes is empty"
        )
    rng = np.random.default_rng([seed, STREAM_PLAN])
    order = rng.permutation(len(classes)) if classes else np.zeros(0, dtype=np.int64)
    labels = [classes[int(order[i % len(classes)])] for i in range(n_defect)]
    labels += [GOOD] * (count - n_defect)
    placed = [labels[int(i)] for i in rng.permutation(count)]
    return [make_spec(i, seed, label) for i, label in enumerate(placed)]
