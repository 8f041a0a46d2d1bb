"""Write a rendered set of parts to disk: PNG images plus labels.csv with the ground truth.

labels.csv is what training, evaluation and the measurement checks read: one row per image
with its label, seed, index, pose in the ideal image, true dimensions and the defect's box.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.datagen.part import (
    BOLT_HOLE_COUNT,
    DEFECT_CLASSES,
    DatagenError,
    PartSpec,
    plan_parts,
)
from cellinspect.datagen.render import RenderedPart, render_part_truth
from cellinspect.entities import ImageU8

Layout = Literal["flat", "class_folders"]
ImageFormat = Literal["png", "bmp"]
LABELS_FILE = "labels.csv"
LABEL_COLUMNS: tuple[str, ...] = (
    "file",
    "label",
    "seed",
    "index",
    "centre_x_px",
    "centre_y_px",
    "centre_x_distorted_px",
    "centre_y_distorted_px",
    "angle_deg",
    "scale",
    "px_per_mm",
    "mm_per_px",
    "outer_diameter_mm",
    "bolt_circle_diameter_mm",
    "bore_diameter_mm",
    "hole_diameter_mm",
    "hole_count",
    "defect_x_px",
    "defect_y_px",
    "defect_w_px",
    "defect_h_px",
)
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]


def distorted_point(x: float, y: float) -> tuple[float, float]:
    """Where an ideal-image point appears in the camera frame (the lens model applied)."""
    cam = DEFAULT_CAMERA
    ray = np.array([[[(x - cam.cx) / cam.fx, (y - cam.cy) / cam.fy, 1.0]]], dtype=np.float64)
    zero = np.zeros(3, dtype=np.float64)
    pts, _ = cv2.projectPoints(ray, zero, zero, cam.camera_matrix, cam.dist_coeffs)
    return float(pts[0, 0, 0]), float(pts[0, 0, 1])


def image_name(spec: PartSpec, layout: Layout, image_format: ImageFormat = "png") -> str:
    """Path of a part's image relative to the dataset folder."""
    if layout == "class_folders":
        return f"{spec.label}/part_{spec.index:04d}.{image_format}"
    return f"part_{spec.index:04d}_{spec.label}.{image_format}"


def label_row(rendered: RenderedPart, file: str) -> dict[str, str]:
    """The labels.csv row of one rendered part (truth in the units the column names say)."""
    spec = rendered.spec
    dx, dy = distorted_point(spec.centre_x_px, spec.centre_y_px)
    bbox = rendered.defect_bbox
    box = [str(v) for v in bbox] if bbox is not None else ["", "", "", ""]
    return {
        "file": file,
        "label": spec.label,
        "seed": str(spec.seed),
        "index": str(spec.index),
        "centre_x_px": str(spec.centre_x_px),
        "centre_y_px": str(spec.centre_y_px),
        "centre_x_distorted_px": f"{dx:.3f}",
        "centre_y_distorted_px": f"{dy:.3f}",
        "angle_deg": str(spec.angle_deg),
        "scale": str(spec.scale),
        "px_per_mm": f"{spec.px_per_mm:.6f}",
        "mm_per_px": f"{spec.mm_per_px:.6f}",
        "outer_diameter_mm": str(spec.outer_diameter_mm),
        "bolt_circle_diameter_mm": str(spec.bolt_circle_diameter_mm),
        "bore_diameter_mm": str(spec.bore_diameter_mm),
        "hole_diameter_mm": str(spec.hole_diameter_mm),
        "hole_count": str(BOLT_HOLE_COUNT - (1 if spec.label == "missing_hole" else 0)),
        "defect_x_px": box[0],
        "defect_y_px": box[1],
        "defect_w_px": box[2],
        "defect_h_px": box[3],
    }


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatagenError(f"{out}: output folder is an existing file, expected a folder")
    labels = out / LABELS_FILE
    if labels.exists() and not overwrite:
        raise DatagenError(
            f"{out}: already holds a generated set ({LABELS_FILE}); "
            "pass overwrite=True to replace it, or choose another folder"
        )


def _remove_previous(out: Path) -> None:
    """Delete the images an earlier run listed in labels.csv (and nothing else)."""
    labels = out / LABELS_FILE
    if not labels.exists():
        return
    root = out.resolve()
    with labels.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row.get("file") or ""
            target = (out / name).resolve()
            if name and target.is_relative_to(root) and target.is_file():
                target.unlink()


def _write_image(path: Path, image: ImageU8) -> None:
    params = _PNG_PARAMS if path.suffix == ".png" else []
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise DatagenError(f"{path}: OpenCV could not encode the image as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def generate_dataset(
    out_dir: Path,
    count: int,
    seed: int,
    defect_rate: float,
    layout: Layout = "flat",
    progress: Callable[[int, int], None] | None = None,
    classes: Sequence[str] = DEFECT_CLASSES,
    overwrite: bool = False,
    image_format: ImageFormat = "png",
) -> Path:
    """Render `count` parts into `out_dir` and return the path of its labels.csv.

    `flat` puts every image in `out_dir` (part_0007_scratch.png); `class_folders` puts them in
    one sub-folder per label (good/, scratch/, ...), the layout training reads. `progress` is
    called with (done, count) after each image. An existing set is replaced only with
    `overwrite`, and then only the files its labels.csv lists are removed. `image_format`
    `bmp` writes uncompressed frames, as a camera delivers them: about 300 KB each, but they
    decode in ~0.02 ms where a compressed PNG takes ~2 ms.
    """
    out = Path(out_dir)
    if layout not in get_args(Layout):
        raise DatagenError(f"layout must be one of {get_args(Layout)}, got {layout!r}")
    if image_format not in get_args(ImageFormat):
        raise DatagenError(
            f"image_format must be one of {get_args(ImageFormat)}, got {image_format!r}"
        )
    specs = plan_parts(count, seed, defect_rate, classes)
    _check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    rows = []
    for done, spec in enumerate(specs, start=1):
        rendered = render_part_truth(spec)
        name = image_name(spec, layout, image_format)
        _write_image(out / name, rendered.image)
        rows.append(label_row(rendered, name))
        if progress is not None:
            progress(done, len(specs))
    labels = out / LABELS_FILE
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(LABEL_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return labels


def read_labels(path: Path) -> list[dict[str, str]]:
    """Rows of a labels.csv written by generate_dataset (checks the header)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("file", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise DatagenError(f"{path}: labels file lacks columns {missing}")
            return list(reader)
    except OSError as err:
        raise DatagenError(f"{path}: cannot read labels file: {err}") from err
