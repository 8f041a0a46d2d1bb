"""The shipped elpv classifier: a logistic head on dihedral-view features, one ONNX graph.

Each training image contributes every view the graph builds (flips, and quarter turns with 8
views), which is augmentation for free; at run time the graph averages the views' features
before the head. The head's standardisation is folded into its weights, as in fit_classifier.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from benchmarks.elpv.graph import (
    VIEWS_OUTPUT,
    build_tta_classifier_graph,
    build_view_feature_graph,
)
from cellinspect.config import ClassThreshold
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    load_manifest,
    write_manifest,
)
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.fit_anomaly import backbone_provenance
from cellinspect.training.fit_classifier import classifier_manifest, fit_logistic_head

F32 = npt.NDArray[np.float32]
LABELS = ("good", "defective")
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ClassifyParams:
    views: int = 4
    regularisation_c: float = 0.1
    batch_size: int = 8
    max_iter: int = 3000
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def view_features(
    graph_path: Path,
    images: Sequence[ImageU8],
    backbone_path: Path,
    batch_size: int,
    progress: Progress | None = None,
) -> F32:
    """Per-view features (V, N, F) from the fit-time graph."""
    spec = load_manifest(backbone_path).input
    sess = session(graph_path)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = prepare_batch(images[start : start + batch_size], spec)
        chunks.append(np.asarray(sess.run([VIEWS_OUTPUT], {spec.name: batch})[0], np.float32))
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    return np.concatenate(chunks, axis=1)


def fit_head(
    features: F32, defective: npt.NDArray[np.bool_], params: ClassifyParams
) -> tuple[F32, F32, float]:
    """Class-balanced logistic regression on every view; returns folded (F,2) weights, bias."""
    views, count, dim = features.shape
    if count != defective.shape[0]:
        raise ModelError(f"{count} feature rows but {defective.shape[0]} labels")
    if defective.all() or not defective.any():
        raise ModelError("the training split needs both good and defective cells")
    x = features.reshape(views * count, dim)
    y = np.tile(defective.astype(np.int64), views)
    head = fit_logistic_head(x, y, params.regularisation_c, params.max_iter, params.seed)
    return head.weights, head.bias, head.train_accuracy


def fit_elpv_classifier(
    images: Sequence[ImageU8],
    defective: npt.NDArray[np.bool_],
    backbone_path: Path,
    out_dir: Path,
    params: ClassifyParams,
    provenance: dict[str, Any],
    progress: Progress | None = None,
) -> Path:
    """Fit the head on the training images and write model.onnx + manifest.json to `out_dir`."""
    backbone = load_manifest(backbone_path)
    with tempfile.TemporaryDirectory(prefix="cellinspect-elpv-") as tmp:
        graph = build_view_feature_graph(backbone_path, params.views, Path(tmp) / "views.onnx")
        feats = view_features(graph, images, backbone_path, params.batch_size, progress)
    weights, bias, train_acc = fit_head(feats, defective, params)
    model_path = build_tta_classifier_graph(
        backbone_path, params.views, weights, bias, out_dir / "model.onnx"
    )
    manifest = classifier_manifest(
        "elpv-classifier",
        out_dir.name,
        backbone.input,
        list(LABELS),
        ClassThreshold(review_at=0.5, fail_at=0.5),
        preprocess=preprocess_record(()),  # the cells as the dataset has them
        provenance={
            "method": (
                f"logistic regression (class-balanced) on pooled + stride-8/16 max features, "
                f"{params.views} dihedral views averaged in the graph"
            ),
            "backbone": backbone_provenance(backbone),
            "parameters": params.as_dict(),
            "train_accuracy_per_view": train_acc,
            "train_images": len(images),
            "train_counts": {"good": int((~defective).sum()), "defective": int(defective.sum())},
            **provenance,
        },
    )
    write_manifest(manifest, model_path)
    return model_path
