"""The preprocessing a model was fitted on: recorded in its manifest, checked where it runs.

A model sees parts only through the recipe's preprocessing. Fed images preprocessed another
way it still returns scores, just wrong ones: the elpv anomaly detector, fitted on grey-level
stretched cells and run on raw ones, falls from AUROC 0.9245 to 0.869 without a word. So the
fitting code records the recipe's ops (as configured; the camera calibration is the recipe's
own key, so recalibrating a camera keeps its models), and the station, `evaluate`,
`calibrate` and `quantize-model` refuse a model whose record differs from what they apply.
Manifests without a record (written before it existed) are not checked. The same holds for
the size of the ROI crops a model was fitted on: crops are resized to the model's input, so a
wider ROI shows the part smaller, and the scores drift just as silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from cellinspect.config import PreprocessOp, Recipe
from cellinspect.errors import ConfigError
from cellinspect.inference.manifest import Manifest

_OPS: TypeAdapter[list[PreprocessOp]] = TypeAdapter(list[PreprocessOp])


def preprocess_record(ops: Sequence[PreprocessOp]) -> list[dict[str, Any]]:
    """The manifest's `preprocess`: each op with all its settings, defaults included."""
    return [dict(op) for op in _OPS.dump_python(list(ops), mode="json")]


def describe_record(record: Sequence[dict[str, Any]]) -> str:
    """'undistort(alpha=0.0, scale=0.875), then stretch(...)', or 'no preprocessing'.

    No square brackets: the console would take them for markup."""
    if not record:
        return "no preprocessing"
    steps = []
    for op in record:
        settings = ", ".join(f"{k}={v}" for k, v in op.items() if k != "op")
        steps.append(f"{op.get('op')}({settings})")
    return ", then ".join(steps)


def check_preprocess(manifest: Manifest, ops: Sequence[PreprocessOp], where: str) -> None:
    """Refuse to run `manifest`'s model on images that `ops` prepare unlike its fitting images."""
    if manifest.preprocess is None:
        return
    applied = preprocess_record(ops)
    if applied != manifest.preprocess:
        raise ConfigError(
            f"model '{manifest.name}' v{manifest.version} was fitted on images prepared with "
            f"{describe_record(manifest.preprocess)}, but {where} applies "
            f"{describe_record(applied)}: use the recipe it was fitted with (the same "
            "'preprocess' ops), or fit it again on images prepared this way (if its fitting "
            "images were already prepared this way by another tool, say so in the manifest's "
            "'preprocess')"
        )


def check_roi_size(manifest: Manifest, size: Sequence[int] | None, where: str) -> None:
    """Refuse crops of another [width, height] than `manifest`'s model was fitted on."""
    if manifest.roi_size is None or size is None:
        return
    fitted = manifest.roi_size
    if fitted != list(size):
        raise ConfigError(
            f"model '{manifest.name}' v{manifest.version} was fitted on {fitted[0]}x{fitted[1]} "
            f"px ROI crops, but {where} is {size[0]}x{size[1]} px: the crop is resized to the "
            "model's input, so the part would appear at another scale. Keep the ROI's width "
            "and height (moving x and y is fine), or fit the model again on crops of this size"
        )


def check_recipe_fits(manifest: Manifest, recipe: Recipe, model_name: str) -> None:
    """`manifest`'s model under `recipe`: its preprocessing, and each ROI it runs on."""
    where = f"recipe '{recipe.name}'"
    check_preprocess(manifest, recipe.preprocess, where)
    for roi in recipe.rois:
        if roi.models is None or model_name in roi.models:
            check_roi_size(manifest, (roi.width, roi.height), f"{where} ROI '{roi.name}'")
