"""The recipe's `preprocess:` list turned into a chain of callables, checked once at build.

Each op name maps to a builder in a registry dict; a builder validates its recipe values and
returns a :class:`Step`. Problems a recipe can have (undistort without calibration or not
first, an even blur kernel, a non-finite angle) are ConfigErrors at build time, so a bad
recipe fails at station start, not on the first part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2

from cellinspect.calibration.camera_file import CameraCalibration, load_camera_calibration
from cellinspect.config import (
    BlurOp,
    ColourOp,
    FlipOp,
    LetterboxOp,
    PreprocessOp,
    Recipe,
    ResizeOp,
    Roi,
    RotateOp,
    StretchOp,
    UndistortOp,
)
from cellinspect.entities import ImageU8
from cellinspect.errors import ConfigError, PreprocessError
from cellinspect.preprocess import ops
from cellinspect.preprocess.undistort import Undistorter

ImageFn = Callable[[ImageU8], ImageU8]


@dataclass(frozen=True, slots=True)
class Step:
    """One preprocessing step: a readable name and the function that does it."""

    name: str
    fn: ImageFn


def _undistort(op: UndistortOp, calibration: CameraCalibration | None) -> Step:
    if calibration is None:
        raise ConfigError("'undistort' needs a camera calibration (recipe key 'calibration')")
    undistorter = Undistorter(calibration, op.alpha, op.scale)
    return Step(
        f"undistort(alpha={op.alpha:g}, scale={op.scale:g}, "
        f"calibration={calibration.calibration_id})",
        undistorter,
    )


def _rotate(op: RotateOp, _: CameraCalibration | None) -> Step:
    degrees = op.degrees
    if not math.isfinite(degrees):
        raise ConfigError(f"rotate: degrees must be a finite number, got {degrees}")
    return Step(f"rotate({degrees:g} deg ccw)", lambda image: ops.rotate(image, degrees))


def _flip(op: FlipOp, _: CameraCalibration | None) -> Step:
    mode = op.mode
    return Step(f"flip({mode.value})", lambda image: ops.flip(image, mode))


def _resize(op: ResizeOp, _: CameraCalibration | None) -> Step:
    w, h = op.width, op.height
    return Step(f"resize({w}x{h})", lambda image: ops.resize(image, w, h))


def _letterbox(op: LetterboxOp, _: CameraCalibration | None) -> Step:
    w, h, pad = op.width, op.height, op.pad_value
    return Step(
        f"letterbox({w}x{h}, pad={pad})", lambda image: ops.letterbox(image, w, h, pad).image
    )


def _colour(op: ColourOp, _: CameraCalibration | None) -> Step:
    mode = op.mode
    return Step(f"colour({mode.value})", lambda image: ops.colour(image, mode))


def _blur(op: BlurOp, _: CameraCalibration | None) -> Step:
    kernel = op.kernel
    try:
        ops.check_blur_kernel(kernel)
    except PreprocessError as err:
        raise ConfigError(str(err)) from err
    return Step(f"blur(kernel={kernel})", lambda image: ops.blur(image, kernel))


def _stretch(op: StretchOp, _: CameraCalibration | None) -> Step:
    low, high = op.low_percentile, op.high_percentile
    try:
        ops.check_stretch(low, high)
    except PreprocessError as err:
        raise ConfigError(str(err)) from err
    return Step(f"stretch({low:g}-{high:g} %)", lambda image: ops.stretch(image, low, high))


# Builders take their own op type; the registry key guarantees the match.
_Builder = Callable[[Any, CameraCalibration | None], Step]
BUILDERS: dict[str, _Builder] = {
    "undistort": _undistort,
    "rotate": _rotate,
    "flip": _flip,
    "resize": _resize,
    "letterbox": _letterbox,
    "colour": _colour,
    "blur": _blur,
    "stretch": _stretch,
}


@dataclass(frozen=True, slots=True)
class PreprocessChain:
    """The recipe's preprocessing, applied in order to whole frames."""

    steps: tuple[Step, ...]
    undistorter: Undistorter | None = None

    def __call__(self, image: ImageU8) -> ImageU8:
        image = ops.ensure_image(image, "preprocess input")
        for index, step in enumerate(self.steps):
            try:
                image = step.fn(image)
            except cv2.error as err:
                raise PreprocessError(
                    f"preprocess[{index}] {step.name}: OpenCV failed on a "
                    f"{image.shape[1]}x{image.shape[0]} image: {err}"
                ) from err
        return image

    def __len__(self) -> int:
        return len(self.steps)

    def describe(self) -> list[str]:
        """Step names in order, for logs, `validate` and the review page."""
        return [step.name for step in self.steps]


def build_chain(
    op_configs: Sequence[PreprocessOp], calibration: CameraCalibration | None = None
) -> PreprocessChain:
    """Turn recipe op configs into a chain; every problem names its `preprocess[i]` entry."""
    steps: list[Step] = []
    undistorter: Undistorter | None = None
    for index, op in enumerate(op_configs):
        name = getattr(op, "op", None)
        builder = BUILDERS.get(name) if isinstance(name, str) else None
        if builder is None:
            known = ", ".join(BUILDERS)
            raise ConfigError(f"preprocess[{index}]: unknown op {name!r} (known: {known})")
        if name == "undistort" and index != 0:
            raise ConfigError(
                f"preprocess[{index}]: 'undistort' must be the first op, because the "
                "calibration describes the raw camera frame"
            )
        try:
            step = builder(op, calibration)
        except ConfigError as err:
            raise ConfigError(f"preprocess[{index}]: {err}") from err
        if isinstance(step.fn, Undistorter):
            undistorter = step.fn
        steps.append(step)
    return PreprocessChain(steps=tuple(steps), undistorter=undistorter)


def build_chain_for_recipe(recipe: Recipe) -> PreprocessChain:
    """The recipe's chain, loading its calibration file when it names one."""
    calibration = (
        load_camera_calibration(recipe.calibration) if recipe.calibration is not None else None
    )
    return build_chain(recipe.preprocess, calibration)


def roi_crops(image: ImageU8, rois: Sequence[Roi]) -> list[tuple[str, ImageU8]]:
    """(name, crop) per ROI, each a view into `image`; the whole frame when there are none."""
    if not rois:
        return [("frame", ops.ensure_image(image, "frame"))]
    return [(roi.name, ops.crop_roi(image, roi)) for roi in rois]
