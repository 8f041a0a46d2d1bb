"""INT8 copy of a deployed model (classifier or anomaly detector), judged before and after.

Static (calibrated, QDQ, per-channel) quantisation of the backbone's convolutions only: the
heads (Gemm, Softmax) and the anomaly detector's nearest-neighbour search stay in FP32, where
8 bits would blur exactly the distances the score is made of. Calibration images are cut the
way the station cuts them (recipe preprocessing and ROI) and meet the model as its manifest's
`input.resize` says, through the station's own preparer: a tile model is calibrated on the
tiles it runs on (native-resolution detail), never on whole frames shrunk into one input.
Both variants are then evaluated on the same labelled set and timed the same way (a tile
model: all of a part's tiles per run), and the figures go into the INT8 manifest.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from cellinspect.entities import FloatArray, ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    load_manifest,
    write_manifest,
)
from cellinspect.inference.tiling import fit_units, prepare_input, run_prepared
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.dataset import Dataset, RoiReader, Stage, no_stage, read_images
from cellinspect.training.evaluate import EvaluationReport, evaluate_model
from cellinspect.training.intervals import auroc_change_interval


def calibration_inputs(crops: Sequence[ImageU8], spec: InputSpec, limit: int) -> list[ImageU8]:
    """What the model is calibrated on: each crop as the line prepares it, at the input size
    (a tile model: every tile of every crop), at most `limit`, spread evenly over them all."""
    units = fit_units(crops, spec)[0]
    if len(units) <= limit:
        return units
    picked = np.linspace(0, len(units) - 1, limit).round().astype(int)
    return [units[int(i)] for i in picked]


class _CropFeed:
    """onnxruntime CalibrationDataReader over model inputs (calibration_inputs), one per
    batch."""

    def __init__(self, images: Sequence[ImageU8], spec: InputSpec) -> None:
        self._images = list(images)
        self._spec = spec
        self._next = 0

    def get_next(self) -> dict[str, FloatArray] | None:
        if self._next >= len(self._images):
            return None
        image = self._images[self._next]
        self._next += 1
        return {self._spec.name: prepare_batch([image], self._spec)}

    def rewind(self) -> None:
        self._next = 0


@dataclass(frozen=True)
class QuantizedModelReport:
    model_path: Path
    fp32: EvaluationReport
    int8: EvaluationReport
    fp32_ms: float
    int8_ms: float
    calibration_images: int
    auroc_change_ci95: list[float] | None = None  # INT8 - FP32, paired (intervals.py)


def _change_text(change: list[float] | None) -> str:
    if change is None:
        return ""
    return f"; AUROC change 95 % paired interval {change[0]:+.3f} to {change[1]:+.3f}"


def _auroc_change(fp32: EvaluationReport, int8: EvaluationReport) -> list[float] | None:
    """The paired 95 % interval of INT8's AUROC minus FP32's, on the same images."""
    if fp32.auroc is None or int8.auroc is None:
        return None
    before, defective = fp32.scores_and_defects()
    after, _ = int8.scores_and_defects()
    return auroc_change_interval(defective, before, after)


def median_run_ms(model_path: Path, images: Sequence[ImageU8], spec: InputSpec) -> float:
    """Median session.run time per image, one image at a time as the station runs it (2
    threads, no spin; a tile model runs all of the image's tiles, in its batch chunks)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    limit = None if spec.dynamic_batch else int(spec.shape[0] or 1)

    def run(batch: FloatArray) -> dict[str, FloatArray]:
        return dict(zip(outputs, session.run(outputs, {spec.name: batch}), strict=True))

    outputs = [o.name for o in session.get_outputs()]
    batches = [prepare_input([image], spec, tally=False) for image in images]
    for batch in batches[:3]:
        run_prepared(batch, run, spec, limit)
    times = []
    for batch in batches:
        start = time.perf_counter()
        run_prepared(batch, run, spec, limit)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _headline(report: EvaluationReport) -> dict[str, float | None]:
    return {
        "auroc": report.auroc,
        "accuracy": report.accuracy,
        "escape_rate_at_review": report.escape_rate_at_review,
        "false_reject_rate_at_review": report.good_flagged_rate_at_review,
    }


def _worse_by(fp32: EvaluationReport, int8: EvaluationReport) -> float:
    """How much the INT8 copy lost on the figure that matters for its task."""
    if fp32.auroc is not None and int8.auroc is not None:
        return fp32.auroc - int8.auroc
    return (fp32.accuracy or 0.0) - (int8.accuracy or 0.0)


def quantize_model(
    model_path: Path,
    out_dir: Path,
    calibration: Dataset,
    evaluation: Dataset,
    reader: RoiReader,
    max_calibration_images: int = 64,
    max_loss: float = 0.01,
    stage: Stage = no_stage,
) -> QuantizedModelReport:
    """Write `out_dir`/model.onnx (INT8 convs) with its manifest; evaluate both variants.

    A copy that loses more than `max_loss` AUROC (or accuracy) against its parent is deleted
    and refused with both figures: thresholds and heads fitted on FP32 features often do not
    survive 8-bit features, and a model must never silently get worse.
    """
    parent = load_manifest(model_path)
    reader.check_fitted_like(parent)  # before calibrating on such images
    if out_dir.resolve() == model_path.parent.resolve():
        raise ModelError(f"{out_dir}: the INT8 copy must not overwrite its FP32 parent")
    crops = [img for _, img in read_images(calibration, reader, lambda d, t: stage("read", d, t))]
    crops = crops[:max_calibration_images]
    if len(crops) < 8:
        raise ModelError(f"{calibration.root}: {len(crops)} readable calibration images; need 8")
    # a tile model: up to max_calibration_images tiles, from all (up to that many) crops
    inputs = calibration_inputs(crops, parent.input, max_calibration_images)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="cellinspect-int8-") as tmp:
        stage("quantise", 0, 1)
        quantize_static(
            str(model_path),
            str(Path(tmp) / "model.onnx"),
            _CropFeed(inputs, parent.input),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        out_path.write_bytes((Path(tmp) / "model.onnx").read_bytes())
        stage("quantise", 1, 1)
    manifest = Manifest.model_validate(
        {
            **parent.model_dump(),
            "version": out_dir.name,
            "sha256": "pending",
            "provenance": {
                **parent.provenance,
                "parent_version": parent.version,
                "parent_sha256": parent.sha256,
                "quantisation": "static INT8, QDQ, per-channel, Conv only, MinMax",
                "calibration": {
                    "root": str(calibration.root),
                    "images": len(crops),
                    "model_inputs": len(inputs),  # tiles, for a tile model
                    "resize": parent.input.resize_mode.value,
                    "fingerprint": calibration.fingerprint(),
                },
            },
        }
    )
    write_manifest(manifest, out_path)
    fp32 = evaluate_model(
        model_path, evaluation, reader, stage=lambda w, d, t: stage(f"FP32 {w}", d, t)
    )
    int8 = evaluate_model(
        out_path, evaluation, reader, stage=lambda w, d, t: stage(f"INT8 {w}", d, t)
    )
    timing_images = [img for _, img in read_images(evaluation, reader)][:100]
    fp32_ms = median_run_ms(model_path, timing_images, parent.input)
    int8_ms = median_run_ms(out_path, timing_images, parent.input)
    change = _auroc_change(fp32, int8)
    manifest = load_manifest(out_path)
    provenance = dict(manifest.provenance)
    provenance["metrics"] = {
        "int8_vs_fp32": {
            "evaluation_root": str(evaluation.root),
            "images": int8.images,
            "fp32": _headline(fp32),
            "int8": _headline(int8),
            "session_run_ms_fp32": fp32_ms,
            "session_run_ms_int8": int8_ms,
            "auroc_change_ci95": change,
        }
    }
    write_manifest(manifest.model_copy(update={"provenance": provenance}), out_path)
    loss = _worse_by(fp32, int8)
    if loss > max_loss:
        for leftover in (out_path, out_path.with_name("manifest.json")):
            leftover.unlink(missing_ok=True)
        raise ModelError(
            f"{model_path}: the INT8 copy loses {loss:.3f} (FP32 {_headline(fp32)}, INT8 "
            f"{_headline(int8)}{_change_text(change)}), more than {max_loss}; nothing written. "
            "Fit the head or bank "
            "on the INT8 backbone instead (fit-anomaly / fit-classifier --backbone "
            "models/efficientnet-lite0/1-int8/model.onnx)"
        )
    return QuantizedModelReport(out_path, fp32, int8, fp32_ms, int8_ms, len(crops), change)
