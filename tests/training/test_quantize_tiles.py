"""INT8 copies of tile models are calibrated on the tiles the line runs, not on whole frames.

A small real tile model (16 px input; a Laplacian convolution, its largest response is the
score) meets 48 x 16 frames of fine pixel texture as four native-resolution tiles. Shrunk
whole into one letterboxed input, the same frame loses its texture (INTER_AREA averages it
away): ranges calibrated on that are far too narrow for the tiles, and the INT8 copy saturates.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from cellinspect.entities import Task
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputSpec,
    ResizeMode,
    Thresholds,
    TileSpec,
    load_manifest,
)
from cellinspect.inference.tiling import cut_tiles
from cellinspect.training.dataset import RoiReader, load_dataset
from cellinspect.training.quantize_model import calibration_inputs, quantize_model
from tests.conftest import save_test_model

SIZE = 16
W = 48  # four 16 px tiles at 25 % overlap


def _edge_tile_model(folder: Path) -> Path:
    laplacian = -np.ones((1, 3, 3, 3), np.float32)
    laplacian[0, :, 1, 1] = 8.0
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])
    score = helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", SIZE, SIZE])
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["edges"], pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["edges"], ["strength"]),
        helper.make_node("ReduceMax", ["strength"], ["map3"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["map3"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["map3"], ["anomaly_score"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "edges", [x], [score, amap], initializer=[numpy_helper.from_array(laplacian, "w")]
    )
    manifest = Manifest(
        name="edges",
        version=folder.name,
        task=Task.ANOMALY,
        sha256="pending",
        input=InputSpec(
            name="image",
            shape=[None, 3, SIZE, SIZE],
            colour="BGR",
            mean=[128.0] * 3,
            std=[128.0] * 3,
            resize=ResizeMode.TILE,
            tile=TileSpec(),
        ),
        outputs=[
            OutputSpec(name="anomaly_score", meaning="anomaly_score", shape=[None]),
            OutputSpec(name="anomaly_map", meaning="anomaly_map", shape=[None, SIZE, SIZE]),
        ],
        thresholds=Thresholds(review_at=1.0, fail_at=2.0),
    )
    return save_test_model(folder, graph, manifest)


def _frames(root: Path, per_label: int) -> Path:
    """Good: a fine +-20 checker everywhere; defect: also a 3 x 3 patch at +-70."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:W]
    checker = np.where((xx + yy) % 2 == 0, 1.0, -1.0)
    for label in ("good", "defect"):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            grey = 128 + 20 * checker + rng.normal(0, 2, checker.shape)
            if label == "defect":
                x, y = int(rng.integers(2, W - 5)), int(rng.integers(2, SIZE - 5))
                grey[y : y + 3, x : x + 3] = 128 + 70 * checker[y : y + 3, x : x + 3]
            image = np.clip(grey, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    return root


def test_calibration_inputs_are_the_tiles_the_line_runs(tmp_path: Path) -> None:
    spec = load_manifest(_edge_tile_model(tmp_path / "m" / "1")).input
    frames = [np.full((SIZE, W, 3), i * 10, np.uint8) for i in range(3)]
    inputs = calibration_inputs(frames, spec, 64)
    expected = [t for f in frames for t in cut_tiles(f, spec)]
    assert len(inputs) == 4 * 3 == len(expected)
    for got, want in zip(inputs, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    capped = calibration_inputs(frames, spec, 5)
    assert len(capped) == 5  # spread over all: the first and the last tile are among them
    np.testing.assert_array_equal(capped[0], inputs[0])
    np.testing.assert_array_equal(capped[-1], inputs[-1])


def test_an_int8_tile_model_calibrated_on_tiles_keeps_its_auroc(tmp_path: Path) -> None:
    model = _edge_tile_model(tmp_path / "models" / "edges" / "1")
    data = load_dataset(_frames(tmp_path / "data", 8))
    out = tmp_path / "models" / "edges" / "1-int8"
    # Calibrated on letterboxed whole frames, this copy saturated and was refused (AUROC 1.0
    # -> about 0.5); on tiles it ranks the defects as the FP32 model does.
    report = quantize_model(model, out, data, data, RoiReader(None))
    assert report.fp32.auroc == 1.0 and report.int8.auroc == 1.0
    calibration = load_manifest(out / "model.onnx").provenance["calibration"]
    assert calibration["images"] == 16 and calibration["model_inputs"] == 16 * 4
    assert calibration["resize"] == "tile"
