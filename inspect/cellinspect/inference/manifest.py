"""Model manifests: the contract that travels beside every .onnx file.

The manifest says how to feed the model (input name, shape, layout, colour order, scaling),
how to read it (output names and their meaning, labels), where its default thresholds lie
(outside the graph, so QA can move them without re-exporting) and where it came from.
"""

from __future__ import annotations

import enum
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cellinspect.config import ClassThreshold, format_validation_error
from cellinspect.entities import Task
from cellinspect.errors import ModelError

MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layout(enum.StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class ColourOrder(enum.StrEnum):
    RGB = "RGB"
    BGR = "BGR"


class InputSpec(_Strict):
    name: str = Field(description="Graph input name.")
    shape: list[int | None] = Field(
        description="Input shape; None (or a negative number) marks a dynamic batch axis."
    )
    layout: Layout = Field(default=Layout.NCHW, description="Axis order of the tensor.")
    colour: ColourOrder = Field(default=ColourOrder.RGB, description="Channel order.")
    scale: float = Field(default=1.0, description="Pixels (0..255) are multiplied by this first.")
    mean: list[float] = Field(default=[0.0, 0.0, 0.0], description="Subtracted per channel.")
    std: list[float] = Field(default=[1.0, 1.0, 1.0], description="Divided per channel.")

    @property
    def height(self) -> int:
        value = self.shape[2] if self.layout is Layout.NCHW else self.shape[1]
        return int(value or 0)

    @property
    def width(self) -> int:
        value = self.shape[3] if self.layout is Layout.NCHW else self.shape[2]
        return int(value or 0)

    @property
    def dynamic_batch(self) -> bool:
        first = self.shape[0]
        return first is None or first < 0


class OutputMeaning(enum.StrEnum):
    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    ANOMALY_SCORE = "anomaly_score"
    ANOMALY_MAP = "anomaly_map"
    FEATURES = "features"


class OutputSpec(_Strict):
    name: str = Field(description="Graph output name.")
    meaning: OutputMeaning = Field(description="How the cellinspect runner reads this output.")
    shape: list[int | None] = Field(default_factory=list, description="Shape, None for dynamic.")
    description: str = Field(default="", description="Free text for people.")


class Thresholds(_Strict):
    review_at: float | None = Field(default=None, description="Anomaly score: REVIEW from here.")
    fail_at: float | None = Field(default=None, description="Anomaly score: FAIL from here.")
    classes: dict[str, ClassThreshold] = Field(
        default_factory=dict, description="Per defect class probability thresholds."
    )
    default_class: ClassThreshold | None = Field(
        default=None, description="Thresholds for defect classes not listed in `classes`."
    )


class Manifest(_Strict):
    schema_version: int = Field(default=1, description="Manifest format revision.")
    name: str = Field(description="Model name.")
    version: str = Field(description="Model version (folder name under models/<name>/).")
    task: Task = Field(description="classification | anomaly | features.")
    file: str = Field(default="model.onnx", description="The ONNX file, beside the manifest.")
    sha256: str = Field(description="SHA-256 of the ONNX file's bytes.")
    input: InputSpec = Field(description="The single image input.")
    outputs: list[OutputSpec] = Field(min_length=1, description="Outputs the runner reads.")
    labels: list[str] = Field(default_factory=list, description="Class labels, in output order.")
    good_labels: list[str] = Field(
        default_factory=lambda: ["good"], description="Labels that mean a good part."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Default thresholds.")
    preprocess: list[dict[str, Any]] | None = Field(
        default=None,
        description="The recipe 'preprocess' ops the model was fitted on, with their settings; "
        "where it runs must apply the same (preprocess_contract.py). None: not recorded.",
    )
    roi_size: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[width, height] in pixels of the ROI crops the model was fitted on; the "
        "ROIs it runs on must have this size (crops are resized to the input, so another size "
        "shows the part at another scale). None: whole images, or not recorded.",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Source, data hash and counts, parameters, metrics."
    )

    def output(self, meaning: OutputMeaning) -> OutputSpec | None:
        """The first output with that meaning, if any."""
        return next((o for o in self.outputs if o.meaning is meaning), None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path_for(model_path: Path) -> Path:
    return model_path.with_name(MANIFEST_NAME)


def load_manifest(model_path: Path) -> Manifest:
    """Read the manifest beside `model_path`; errors name the file and the key."""
    path = manifest_path_for(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: manifest not found beside {model_path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read manifest: {err}") from err
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise ModelError(
            f"{path}: invalid manifest\n" + "\n".join(format_validation_error(err, path))
        ) from err


def write_manifest(manifest: Manifest, model_path: Path) -> Path:
    """Write the manifest beside the model, with the model's current hash filled in."""
    manifest = manifest.model_copy(
        update={"sha256": sha256_file(model_path), "file": model_path.name}
    )
    path = manifest_path_for(model_path)
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
