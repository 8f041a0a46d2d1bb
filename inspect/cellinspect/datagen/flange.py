"""The sample part generator: one import for planning, rendering and writing labelled sets.

A machined flange (turned face, bore, six bolt holes) on a rubber conveyor belt, seen from
above through the project's virtual camera, with six kinds of defect. Everything is
deterministic by (seed, index): the same part renders to the same bytes on every run (across
machines, NumPy's CPU-specific float kernels may move an odd pixel by one grey level).

    from cellinspect.datagen.flange import plan_parts, render_part, generate_dataset
    specs = plan_parts(count=40, seed=0, defect_rate=0.4)
    image = render_part(specs[0])               # 320x320 BGR uint8, lens-distorted
    generate_dataset(Path("sample_images"), count=40, seed=0, defect_rate=0.4)
"""

from __future__ import annotations

from cellinspect.datagen.dataset import (
    LABEL_COLUMNS,
    LABELS_FILE,
    ImageFormat,
    Layout,
    distorted_point,
    generate_dataset,
    read_labels,
)
from cellinspect.datagen.part import (
    BOLT_CIRCLE_DIAMETER_MM,
    BOLT_HOLE_COUNT,
    BOLT_HOLE_DIAMETER_MM,
    BORE_DIAMETER_MM,
    DEFECT_CLASSES,
    GOOD,
    HUB_DIAMETER_MM,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    INDEX_MARK_DIAMETER_MM,
    INDEX_MARK_RADIUS_MM,
    LABELS,
    MM_PER_PX,
    OUTER_DIAMETER_MM,
    PX_PER_MM,
    THICKNESS_MM,
    TOLERANCE_MM,
    WORKING_DISTANCE_MM,
    DatagenError,
    PartSpec,
    make_spec,
    plan_parts,
)
from cellinspect.datagen.render import RenderedPart, render_part, render_part_truth

__all__ = [
    "BOLT_CIRCLE_DIAMETER_MM",
    "BOLT_HOLE_COUNT",
    "BOLT_HOLE_DIAMETER_MM",
    "BORE_DIAMETER_MM",
    "DEFECT_CLASSES",
    "GOOD",
    "HUB_DIAMETER_MM",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "INDEX_MARK_DIAMETER_MM",
    "INDEX_MARK_RADIUS_MM",
    "LABELS",
    "LABELS_FILE",
    "LABEL_COLUMNS",
    "MM_PER_PX",
    "OUTER_DIAMETER_MM",
    "PX_PER_MM",
    "THICKNESS_MM",
    "TOLERANCE_MM",
    "WORKING_DISTANCE_MM",
    "DatagenError",
    "ImageFormat",
    "Layout",
    "PartSpec",
    "RenderedPart",
    "distorted_point",
    "generate_dataset",
    "make_spec",
    "plan_parts",
    "read_labels",
    "render_part",
    "render_part_truth",
]
