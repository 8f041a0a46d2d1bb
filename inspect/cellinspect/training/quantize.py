"""Static INT8 quantisation of a features model, shipped only when it stays faithful.

Calibrated (static) QDQ quantisation with per-channel weights runs the backbone faster on CPU
than FP32; dynamic quantisation was slower and less faithful on this network, so it is not
offered. The quantised model is compared with its FP32 parent on held-out images that took no
part in calibration; below `min_cosine` on any output nothing is written. No torch needed.

Run: ``python -m cellinspect.training.quantize --model models/efficientnet-lite0/1
--images sample_images --out models/efficientnet-lite0/1-int8``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from cellinspect.entities import FloatArray, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    load_manifest,
    sha256_file,
    write_manifest,
)
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.sources.decode import decode_image_file
from cellinspect.training.feed import list_images

Progress = Callable[[str], None]
MODEL_FILE = "model.onnx"
DEFAULT_MIN_COSINE = 0.97
DEFAULT_HELD_OUT_EVERY = 4


class ImageFeed:
    """Calibration data reader: one image per batch, prepared as the manifest says."""

    def __init__(self, paths: Sequence[Path], spec: InputSpec) -> None:
        self._paths = list(paths)
        self._spec = spec
        self._next = 0

    def get_next(self) -> dict[str, FloatArray] | None:
        if self._next >= len(self._paths):
            return None
        path = self._paths[self._next]
        self._next += 1
        return {self._spec.name: prepare_batch([decode_image_file(path)], self._spec)}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> ImageFeed:
        return self

    def __next__(self) -> dict[str, FloatArray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def split_images(paths: Sequence[Path], held_out_every: int) -> tuple[list[Path], list[Path]]:
    """Every `held_out_every`-th image (by sorted name) is held out from calibration."""
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be >= 2, got {held_out_every}")
    ordered = sorted(paths)
    held_out = ordered[held_out_every - 1 :: held_out_every]
    calibration = [p for p in ordered if p not in set(held_out)]
    if not calibration or not held_out:
        raise ModelError(
            f"need at least {held_out_every} images to calibrate and hold some out, "
            f"got {len(ordered)}"
        )
    return calibration, held_out


def images_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the names and contents of the images, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode("utf-8") + b"\0" + sha256_file(path).encode("ascii"))
    return digest.hexdigest()


def linear_conv_names(model_path: Path) -> list[str]:
    """Convs whose output feeds no Clip: the linear bottleneck projections.

    Their outputs are wide (tens of units) yet mostly small, so 8 bits resolve them coarsely;
    keeping them in FP32 buys fidelity for little time.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    clipped = {i for node in model.graph.node if node.op_type == "Clip" for i in node.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in clipped]


def _shared_folder(paths: Sequence[Path]) -> str:
    """The folder all `paths` lie in, as given (relative stays relative), or '' if several."""
    parents = {str(p.parent) for p in paths}
    return parents.pop() if len(parents) == 1 else ""


def cpu_session(path: Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def output_cosines(
    reference: ort.InferenceSession,
    candidate: ort.InferenceSession,
    paths: Sequence[Path],
    spec: InputSpec,
) -> dict[str, dict[str, float]]:
    """Per output: mean and minimum over images of the cosine between flattened outputs."""
    names = [o.name for o in reference.get_outputs()]
    per_output: dict[str, list[float]] = {name: [] for name in names}
    for path in paths:
        batch = {spec.name: prepare_batch([decode_image_file(path)], spec)}
        want = reference.run(names, batch)
        got = candidate.run(names, batch)
        for name, a, b in zip(names, want, got, strict=True):
            a_flat = np.asarray(a, dtype=np.float64).ravel()
            b_flat = np.asarray(b, dtype=np.float64).ravel()
            norm = float(np.linalg.norm(a_flat) * np.linalg.norm(b_flat))
            per_output[name].append(float(a_flat @ b_flat) / norm if norm > 0 else 0.0)
    return {
        name: {"mean": float(np.mean(values)), "min": float(np.min(values))}
        for name, values in per_output.items()
    }


def median_latency_ms(
    model_path: Path, spec: InputSpec, runs: int = 30, threads: int = 2, seed: int = 0
) -> float:
    """Median wall time of one batch-1 run, after a warm-up, in one session."""
    session = cpu_session(model_path, threads)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)
    feed = {spec.name: prepare_batch([image], spec)}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def quantize_features(
    model_dir: Path,
    out_dir: Path,
    images: Sequence[Path],
    min_cosine: float = DEFAULT_MIN_COSINE,
    held_out_every: int = DEFAULT_HELD_OUT_EVERY,
    keep_projections_fp32: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Quantise ``model_dir/model.onnx`` to INT8 into `out_dir`, if faithful; returns the model.

    With `keep_projections_fp32`, the linear projection convs (see :func:`linear_conv_names`)
    stay in FP32. Raises :class:`ModelError` (writing nothing) when the mean cosine of any
    output against FP32 on the held-out images falls below `min_cosine`.
    """
    say = progress or (lambda _line: None)
    parent_path = Path(model_dir) / MODEL_FILE
    parent = load_manifest(parent_path)
    if parent.task is not Task.FEATURES:
        raise ModelError(f"{parent_path}: task is {parent.task.value!r}, expected 'features'")
    if sha256_file(parent_path) != parent.sha256:
        raise ModelError(f"{parent_path}: sha256 does not match its manifest")
    calibration, held_out = split_images(images, held_out_every)
    excluded = linear_conv_names(parent_path) if keep_projections_fp32 else []
    say(
        f"calibrating on {len(calibration)} images, holding out {len(held_out)}, "
        f"{len(excluded)} convs kept in FP32"
    )
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        candidate = Path(tmp) / MODEL_FILE
        quantize_static(
            parent_path,
            candidate,
            ImageFeed(calibration, parent.input),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
        cosines = output_cosines(
            cpu_session(parent_path), cpu_session(candidate), held_out, parent.input
        )
        for name, figures in cosines.items():
            say(f"cosine vs FP32 {name}: mean {figures['mean']:.4f}, min {figures['min']:.4f}")
        unfaithful = {n: f["mean"] for n, f in cosines.items() if f["mean"] < min_cosine}
        if unfaithful:
            raise ModelError(
                f"{parent_path}: INT8 model not faithful, mean cosine below {min_cosine} "
                f"for {unfaithful}; nothing written to {out_dir}"
            )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / MODEL_FILE
        shutil.copyfile(candidate, model_path)
    provenance: dict[str, Any] = {
        "source": parent.provenance.get("source", ""),
        "parent_version": parent.version,
        "parent_sha256": parent.sha256,
        "quantizer": "cellinspect.training.quantize",
        "quantization": {
            "method": "onnxruntime quantize_static",
            "format": "QDQ",
            "per_channel": True,
            "activations": "uint8",
            "weights": "int8",
            "calibration": "MinMax",
            "fp32_nodes": excluded,
            "onnxruntime_version": str(ort.__version__),
        },
        "calibration_folder": _shared_folder(calibration),
        "calibration_images": len(calibration),
        "calibration_sha256": images_digest(calibration),
        "held_out_images": len(held_out),
        "held_out_sha256": images_digest(held_out),
        "cosine_vs_fp32": cosines,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "parent_provenance": parent.provenance,
    }
    manifest = Manifest(
        **{
            **parent.model_dump(),
            "version": out_dir.name,
            "sha256": "",
            "provenance": provenance,
        }
    )
    write_manifest(manifest, model_path)
    say(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB) and its manifest")
    return model_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cellinspect.training.quantize",
        description="Static INT8 (QDQ, per-channel) quantisation of a features model.",
    )
    parser.add_argument("--model", type=Path, required=True, help="FP32 model folder")
    parser.add_argument("--images", type=Path, required=True, help="Folder of images")
    parser.add_argument("--out", type=Path, required=True, help="Output model folder")
    parser.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE)
    parser.add_argument("--held-out-every", type=int, default=DEFAULT_HELD_OUT_EVERY)
    parser.add_argument(
        "--keep-projections-fp32",
        action="store_true",
        help="Leave the linear projection convs in FP32 (more faithful, slightly slower)",
    )
    parser.add_argument("--latency-runs", type=int, default=0, help="Also time FP32 vs INT8")
    args = parser.parse_args(argv)
    try:
        model_path = quantize_features(
            args.model,
            args.out,
            list_images(args.images),
            min_cosine=args.min_cosine,
            held_out_every=args.held_out_every,
            keep_projections_fp32=args.keep_projections_fp32,
            progress=print,
        )
    except (ModelError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    if args.latency_runs > 0:
        spec = load_manifest(model_path).input
        for label, path in (("FP32", args.model / MODEL_FILE), ("INT8", model_path)):
            ms = median_latency_ms(path, spec, runs=args.latency_runs)
            print(f"{label} median latency, batch 1, 2 threads: {ms:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
