"""A defect classifier without torch: a logistic head on the backbone's pooled features.

The head (standardisation folded into the weights, then softmax) is appended to the backbone
graph, so the station runs one ONNX model with one session.run, exactly like any other model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from cellinspect.config import ClassThreshold
from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputMeaning,
    OutputSpec,
    ResizeMode,
    Thresholds,
    load_manifest,
    write_manifest,
)
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.inference.tiling import fit_inputs, fitted_input
from cellinspect.training.dataset import Dataset, RoiReader, Stage, no_stage, read_images
from cellinspect.training.fit_anomaly import backbone_provenance, run_batched

F32 = npt.NDArray[np.float32]
POOLED_OUTPUT = "pooled"
PROBS_OUTPUT = "probabilities"


@dataclass(frozen=True, slots=True)
class ClassifierFitParams:
    regularisation_c: float = 1.0
    review_at: float = 0.5
    fail_at: float = 0.8
    batch_size: int = 8
    max_iter: int = 2000
    seed: int = 0


@dataclass(frozen=True, slots=True)
class ClassifierFitReport:
    model_path: Path
    labels: tuple[str, ...]
    counts: dict[str, int]
    train_accuracy: float
    skipped: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LogisticHead:
    """A fitted head with the standardisation folded in: logits = x @ weights + bias."""

    weights: F32  # (F, K)
    bias: F32  # (K,)
    train_accuracy: float


def fit_logistic_head(
    features: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]],
    c: float,
    max_iter: int,
    seed: int,
) -> LogisticHead:
    """Class-balanced logistic regression on standardised features, folded for one Gemm.

    Binary problems get two symmetric rows (softmax of ±z/2 is the sigmoid of z), so every
    head is read the same way: softmax over K columns.
    """
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
    clf.fit((x - mean) / std, y)
    coef = np.asarray(clf.coef_, dtype=np.float64)  # (K, F), or (1, F) when binary
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return LogisticHead(
        weights=(coef / std).T.astype(np.float32),
        bias=(intercept - (coef * (mean / std)).sum(axis=1)).astype(np.float32),
        train_accuracy=float(clf.score((x - mean) / std, y)),
    )


def classifier_manifest(
    name: str,
    version: str,
    input_spec: InputSpec,
    labels: list[str],
    default_class: ClassThreshold,
    provenance: dict[str, Any],
    preprocess: list[dict[str, Any]],
    roi_size: list[int] | None = None,
) -> Manifest:
    """The manifest of a softmax classifier whose output is `probabilities`, good first."""
    return Manifest(
        name=name,
        version=version,
        task=Task.CLASSIFICATION,
        sha256="pending",
        input=input_spec,
        outputs=[
            OutputSpec(
                name=PROBS_OUTPUT,
                meaning=OutputMeaning.PROBABILITIES,
                shape=[None, len(labels)],
                description="Softmax class probabilities, in the order of `labels`.",
            )
        ],
        labels=labels,
        good_labels=["good"],
        thresholds=Thresholds(default_class=default_class),
        preprocess=preprocess,
        roi_size=roi_size,
        provenance=provenance,
    )


def _cut_to_pooled(backbone_path: Path) -> onnx.ModelProto:
    model = onnx.load(str(backbone_path))
    if POOLED_OUTPUT not in {o.name for o in model.graph.output}:
        raise ModelError(f"{backbone_path}: backbone has no '{POOLED_OUTPUT}' output")
    input_name = model.graph.input[0].name
    return onnx.utils.Extractor(model).extract_model([input_name], [POOLED_OUTPUT])


def build_classifier_graph(backbone_path: Path, weights: F32, bias: F32, out_path: Path) -> Path:
    """Backbone (to pooled features) + Gemm(weights (F,K), bias (K,)) + Softmax."""
    model = _cut_to_pooled(backbone_path)
    g = model.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(weights.astype(np.float32), "head_w"),
            numpy_helper.from_array(bias.astype(np.float32), "head_b"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Gemm", [POOLED_OUTPUT, "head_w", "head_b"], ["head_logits"]),
            helper.make_node("Softmax", ["head_logits"], [PROBS_OUTPUT], axis=1),
        ]
    )
    del g.output[:]
    g.output.append(
        helper.make_tensor_value_info(PROBS_OUTPUT, TensorProto.FLOAT, ["batch", weights.shape[1]])
    )
    model.producer_name = "cellinspect.classifier"
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def pooled_features(
    images: list[npt.NDArray[np.uint8]],
    backbone_path: Path,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> F32:
    """Pooled backbone features for a list of ROI images."""
    manifest = load_manifest(backbone_path)
    with tempfile.TemporaryDirectory(prefix="cellinspect-cls-") as tmp:
        path = Path(tmp) / "pooled.onnx"
        onnx.save(_cut_to_pooled(backbone_path), str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return run_batched(session, POOLED_OUTPUT, images, manifest, batch_size, progress)


def fit_classifier(
    dataset: Dataset,
    reader: RoiReader,
    backbone_path: Path,
    out_dir: Path,
    name: str,
    version: str,
    params: ClassifierFitParams = ClassifierFitParams(),
    stage: Stage = no_stage,
    extra_provenance: dict[str, object] | None = None,
    resize: ResizeMode = ResizeMode.LETTERBOX,
) -> ClassifierFitReport:
    """Fit a class-balanced logistic head and write backbone+head as one ONNX model.

    Images meet the input as `resize` says (recorded in the manifest). Tiling is refused:
    which tile of a defect image shows the defect is not labelled."""
    if resize is ResizeMode.TILE:
        raise ModelError(
            "a classifier cannot be fitted on tiles: the labels say which image has a defect, "
            "not which of its tiles; fit with --resize letterbox, or fit an anomaly detector "
            "with --resize tile"
        )
    backbone = load_manifest(backbone_path)
    model_input = fitted_input(backbone.input, resize)
    pairs = list(read_images(dataset, reader, lambda d, t: stage("read", d, t)))
    labels_seen = sorted({item.label for item, _ in pairs})
    if len(labels_seen) < 2:
        raise ModelError(
            f"{dataset.root}: a classifier needs at least two classes with readable images, "
            f"found {labels_seen}"
        )
    labels = (["good"] if "good" in labels_seen else []) + [
        lbl for lbl in labels_seen if lbl != "good"
    ]
    feats = pooled_features(
        fit_inputs([img for _, img in pairs], model_input),
        backbone_path,
        params.batch_size,
        lambda d, t: stage("features", d, t),
    )
    y = np.array([labels.index(item.label) for item, _ in pairs])
    head = fit_logistic_head(feats, y, params.regularisation_c, params.max_iter, params.seed)
    model_path = build_classifier_graph(
        backbone_path, head.weights, head.bias, out_dir / "model.onnx"
    )
    train_acc = head.train_accuracy
    counts = {lbl: int((y == i).sum()) for i, lbl in enumerate(labels)}
    manifest = classifier_manifest(
        name,
        version,
        model_input,
        labels,
        ClassThreshold(review_at=params.review_at, fail_at=params.fail_at),
        preprocess=preprocess_record(reader.ops),
        roi_size=reader.roi_size,
        provenance={
            "method": "logistic regression (class-balanced) on pooled backbone features",
            "backbone": backbone_provenance(backbone),
            "data": {
                "root": str(dataset.root),
                "fingerprint": dataset.fingerprint(),
                "counts": counts,
                "skipped": len(dataset.skipped),
            },
            "parameters": {"C": params.regularisation_c, "seed": params.seed},
            "metrics": {"train_accuracy": train_acc},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(extra_provenance or {}),
        },
    )
    write_manifest(manifest, model_path)
    return ClassifierFitReport(
        model_path=model_path,
        labels=tuple(labels),
        counts=counts,
        train_accuracy=train_acc,
        skipped=tuple((str(p), r) for p, r in dataset.skipped),
    )
