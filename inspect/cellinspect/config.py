"""Station recipes: what to capture, how to prepare it, which models judge it, and how.

A recipe is YAML validated by pydantic v2 with unknown keys rejected, so a typo is an error
with its key path instead of a silently ignored setting. Relative paths inside a recipe are
resolved against the recipe file's folder, so a recipe works from any working directory.
"""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cellinspect.calibration.measure_config import MeasurementSpec
from cellinspect.entities import Verdict
from cellinspect.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- sources


class FilesSource(_Strict):
    type: Literal["files"] = "files"
    paths: list[Path] = Field(description="Image files, inspected in the order given.")


class FolderSource(_Strict):
    type: Literal["folder"] = "folder"
    path: Path = Field(description="Folder of images, inspected in sorted name order.")
    pattern: str = Field(default="*", description="Glob pattern for file names.")
    recursive: bool = Field(default=False, description="Descend into sub-folders.")


class HotFolderSource(_Strict):
    type: Literal["hot_folder"] = "hot_folder"
    path: Path = Field(description="Folder watched for new images.")
    pattern: str = Field(default="*", description="Glob pattern for file names.")
    settle_ms: int = Field(
        default=200, ge=0, description="A file counts as fully written once its size stays put."
    )
    give_up_ms: int = Field(
        default=3000,
        ge=0,
        description=(
            "A settled file that does not decode (truncated: its writer may have stalled) is "
            "read again when it changes, and judged a failure only once it has stayed "
            "unchanged this long (never sooner than settle_ms)."
        ),
    )
    poll_ms: int = Field(default=100, ge=10, description="How often the folder is scanned.")
    include_existing: bool = Field(
        default=False, description="Also inspect files that were there before the start."
    )
    idle_timeout_s: float | None = Field(
        default=None, gt=0, description="Stop after this long without a new file (None: never)."
    )


class VideoSource(_Strict):
    type: Literal["video"] = "video"
    path: Path = Field(description="Video file readable by OpenCV.")
    every_nth: int = Field(default=1, ge=1, description="Keep one frame in every N.")


class CameraSource(_Strict):
    type: Literal["camera"] = "camera"
    device: int | str = Field(default=0, description="Camera index or device path (/dev/video0).")
    width: int | None = Field(default=None, gt=0, description="Requested frame width.")
    height: int | None = Field(default=None, gt=0, description="Requested frame height.")
    max_failures: int = Field(
        default=10, ge=1, description="Consecutive failed grabs before the source gives up."
    )


class StreamSource(_Strict):
    type: Literal["stream"] = "stream"
    url: str = Field(description="RTSP or HTTP stream URL opened by OpenCV VideoCapture.")
    reconnect_initial_s: float = Field(default=0.5, gt=0, description="First reconnect wait.")
    reconnect_max_s: float = Field(default=10.0, gt=0, description="Longest reconnect wait.")
    max_reconnects: int | None = Field(
        default=None, ge=0, description="Give up after this many reconnects (None: never)."
    )


class SyntheticSource(_Strict):
    type: Literal["synthetic"] = "synthetic"
    count: int = Field(default=20, ge=0, description="How many parts to render.")
    seed: int = Field(default=0, description="Seed: the same seed renders the same parts.")
    defect_rate: float = Field(default=0.3, ge=0, le=1, description="Share of defective parts.")


SourceConfig = Annotated[
    FilesSource
    | FolderSource
    | HotFolderSource
    | VideoSource
    | CameraSource
    | StreamSource
    | SyntheticSource,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- preprocessing


class UndistortOp(_Strict):
    op: Literal["undistort"] = "undistort"
    alpha: float = Field(
        default=0.0, ge=0, le=1, description="0 keeps only valid pixels, 1 keeps all source pixels."
    )
    scale: float = Field(
        default=1.0,
        ge=0.05,
        le=4.0,
        description="Output size as a share of the input: undistorts and resizes in one remap.",
    )


class RotateOp(_Strict):
    op: Literal["rotate"] = "rotate"
    degrees: float = Field(description="Counter-clockwise rotation; 90/180/270 are lossless.")


class FlipMode(enum.StrEnum):
    HORIZONTAL = "horizontal"
    VERTICAL = "vertical"
    BOTH = "both"


class FlipOp(_Strict):
    op: Literal["flip"] = "flip"
    mode: FlipMode = Field(description="Mirror axis.")


class ResizeOp(_Strict):
    op: Literal["resize"] = "resize"
    width: int = Field(gt=0, description="Output width in pixels.")
    height: int = Field(gt=0, description="Output height in pixels.")


class LetterboxOp(_Strict):
    op: Literal["letterbox"] = "letterbox"
    width: int = Field(gt=0, description="Output width; the image is scaled to fit, then padded.")
    height: int = Field(gt=0, description="Output height.")
    pad_value: int = Field(default=114, ge=0, le=255, description="Grey level of the padding.")


class ColourMode(enum.StrEnum):
    GRAY = "gray"
    EQUALIZE = "equalize"
    CLAHE = "clahe"


class ColourOp(_Strict):
    op: Literal["colour"] = "colour"
    mode: ColourMode = Field(description="gray: grey replicated to 3 channels; equalize/clahe.")


class BlurOp(_Strict):
    op: Literal["blur"] = "blur"
    kernel: int = Field(default=3, ge=1, description="Odd Gaussian kernel size.")


class StretchOp(_Strict):
    op: Literal["stretch"] = "stretch"
    low_percentile: float = Field(
        default=1.0, ge=0, lt=50, description="Grey level at this percentile becomes 0."
    )
    high_percentile: float = Field(
        default=99.0, gt=50, le=100, description="Grey level at this percentile becomes 255."
    )


PreprocessOp = Annotated[
    UndistortOp | RotateOp | FlipOp | ResizeOp | LetterboxOp | ColourOp | BlurOp | StretchOp,
    Field(discriminator="op"),
]


class Roi(_Strict):
    name: str = Field(min_length=1, description="Name used in results and reasons.")
    x: int = Field(ge=0, description="Left edge in pixels of the preprocessed frame.")
    y: int = Field(ge=0, description="Top edge in pixels.")
    width: int = Field(gt=0, description="Width in pixels.")
    height: int = Field(gt=0, description="Height in pixels.")
    models: list[str] | None = Field(
        default=None, description="Models run on this ROI (None: all models of the recipe)."
    )


# --------------------------------------------------------------------------- models


class Provider(enum.StrEnum):
    CPU = "CPUExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    TENSORRT = "TensorrtExecutionProvider"
    OPENVINO = "OpenVINOExecutionProvider"


class ModelConfig(_Strict):
    name: str = Field(min_length=1, description="Name used in thresholds, ROIs and results.")
    path: Path = Field(description="The .onnx file; its manifest.json lies beside it.")
    judge: bool = Field(
        default=True,
        description="False: the model only names the defect class of parts that other "
        "models flag; it never changes a verdict by itself.",
    )


class ClassThreshold(_Strict):
    review_at: float = Field(ge=0, le=1, description="Probability from which a class is REVIEW.")
    fail_at: float = Field(ge=0, le=1, description="Probability from which a class is FAIL.")

    @model_validator(mode="after")
    def _ordered(self) -> ClassThreshold:
        if self.review_at > self.fail_at:
            raise ValueError(f"review_at ({self.review_at}) must be <= fail_at ({self.fail_at})")
        return self


class ModelThresholds(_Strict):
    """Overrides of a manifest's default thresholds (unset keys keep the manifest's value)."""

    review_at: float | None = Field(
        default=None, description="Anomaly score from which a part goes to REVIEW."
    )
    fail_at: float | None = Field(default=None, description="Anomaly score from which it FAILs.")
    classes: dict[str, ClassThreshold] = Field(
        default_factory=dict, description="Per defect class probability thresholds."
    )


class FailSafe(enum.StrEnum):
    FAIL = "fail"
    REVIEW = "review"

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.value)


class DecisionConfig(_Strict):
    fail_safe: FailSafe = Field(
        default=FailSafe.FAIL,
        description="Verdict for unreadable frames, model errors and missed deadlines.",
    )
    thresholds: dict[str, ModelThresholds] = Field(
        default_factory=dict, description="Per model name: overrides of manifest thresholds."
    )


class RuntimeConfig(_Strict):
    providers: list[Provider] = Field(
        default_factory=lambda: [Provider.CPU],
        description="onnxruntime execution providers in order of preference.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="Threads inside one operator (0: onnxruntime's default)."
    )
    inter_op_threads: int = Field(default=1, ge=0, description="Threads across operators.")
    allow_spinning: bool = Field(
        default=False,
        description="onnxruntime worker threads busy-wait between operators: faster runs, "
        "but they compete with decoding and preprocessing for the cores.",
    )
    share_trunk: bool = Field(
        default=True,
        description="Models fitted on the same backbone (same sha256, input and ROIs) run the "
        "backbone once per ROI in one merged session; checked against the full graphs at load.",
    )
    batch_size: int = Field(default=1, ge=1, description="ROIs per session.run where possible.")
    deadline_ms: float = Field(
        default=1000.0, gt=0, description="A part not decided in this time gets the fail-safe."
    )
    warmup_runs: int = Field(default=2, ge=0, description="session.run calls at load.")


class OutputsConfig(_Strict):
    results_jsonl: Path | None = Field(default=None, description="Append results as JSON Lines.")
    results_csv: Path | None = Field(default=None, description="Write results as CSV.")
    overlays_dir: Path | None = Field(
        default=None, description="Write heatmap overlays for non-PASS parts here."
    )
    overlays_for_pass: bool = Field(default=False, description="Also write PASS overlays.")


class Recipe(_Strict):
    name: str = Field(min_length=1, description="Recipe name, recorded in every result.")
    version: int = Field(default=1, ge=1, description="Recipe revision.")
    description: str = Field(default="", description="Free text for people.")
    source: SourceConfig = Field(
        default_factory=lambda: FolderSource(path=Path("sample_images")),
        description="Where frames come from (the CLI's PATH arguments replace it).",
    )
    calibration: Path | None = Field(
        default=None, description="OpenCV YAML camera calibration (needed by undistort)."
    )
    plane_calibration: Path | None = Field(
        default=None,
        description="Conveyor-plane calibration (pixels -> mm), needed by `measurements`.",
    )
    handeye_calibration: Path | None = Field(
        default=None,
        description="Eye-to-hand calibration (camera -> robot base): pick poses in the base frame.",
    )
    part_height_mm: float = Field(
        default=0.0,
        ge=0,
        description="Height of the part's top face above the belt, for pick poses in mm.",
    )
    measurements: MeasurementSpec | None = Field(
        default=None,
        description="Dimensions in mm checked on the undistorted frame; out of tolerance FAILs.",
    )
    preprocess: list[PreprocessOp] = Field(
        default_factory=list, description="Operations on the whole frame, in order."
    )
    rois: list[Roi] = Field(
        default_factory=list, description="Regions judged separately (none: the whole frame)."
    )
    models: list[ModelConfig] = Field(min_length=1, description="Models judging every ROI.")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="Verdict rules.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Execution.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="Result files.")

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models: duplicate model names {dupes}")
        roi_names = [r.name for r in self.rois]
        if len(set(roi_names)) != len(roi_names):
            raise ValueError("rois: ROI names must be unique")
        for roi in self.rois:
            unknown = sorted(set(roi.models or []) - set(names))
            if unknown:
                raise ValueError(f"rois.{roi.name}.models: unknown models {unknown}")
        unknown_thr = sorted(set(self.decision.thresholds) - set(names))
        if unknown_thr:
            raise ValueError(f"decision.thresholds: unknown models {unknown_thr}")
        undistorts = any(op.op == "undistort" for op in self.preprocess)
        if undistorts and self.calibration is None:
            raise ValueError("preprocess: 'undistort' needs a 'calibration' file in the recipe")
        if self.handeye_calibration is not None and self.plane_calibration is None:
            raise ValueError("handeye_calibration: needs a 'plane_calibration' file too")
        if self.plane_calibration is not None and not undistorts:
            raise ValueError(
                "plane_calibration: the preprocess chain must undistort, since the plane maps "
                "undistorted pixels"
            )
        if self.measurements is not None:
            if self.plane_calibration is None:
                raise ValueError("measurements: need a 'plane_calibration' file in the recipe")
            if not undistorts or len(self.preprocess) != 1:
                raise ValueError(
                    "measurements: the preprocess chain must be exactly one 'undistort' op, "
                    "so that the measured pixels are the plane calibration's pixels"
                )
        return self


# --------------------------------------------------------------------------- loading


def format_validation_error(err: ValidationError, file: Path | str) -> list[str]:
    """One line per error: file, dotted key path, message (what `validate` prints)."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"{file}: {loc}: {item['msg']}")
    return lines


class RecipeInvalidError(ConfigError):
    """A recipe failed validation; `problems` holds one line per error with its key path."""

    def __init__(self, file: Path, problems: list[str]) -> None:
        super().__init__(f"{file}: invalid recipe\n" + "\n".join(problems))
        self.file = file
        self.problems = problems


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, Path) and not value.is_absolute():
        return (base / value).resolve()
    if isinstance(value, BaseModel):
        updates = {k: _resolve(base, getattr(value, k)) for k in type(value).model_fields}
        return value.model_copy(update=updates)
    if isinstance(value, list):
        return [_resolve(base, v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(base, v) for k, v in value.items()}
    return value


def load_recipe(path: Path | str) -> Recipe:
    """Read, validate and resolve a recipe; paths inside become absolute."""
    file = Path(path)
    try:
        raw_text = file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{file}: recipe file not found") from err
    except OSError as err:
        raise ConfigError(f"{file}: cannot read recipe: {err}") from err
    try:
        data = yaml.safe_load(raw_text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise RecipeInvalidError(file, [f"{file}: <root>: expected a mapping of recipe keys"])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeInvalidError(file, format_validation_error(err, file)) from err
    resolved: Recipe = _resolve(file.resolve().parent, recipe)
    return resolved


def recipe_sha256(path: Path | str) -> str:
    """Hash of the recipe file's bytes, recorded in every result."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
