"""Reproduce the shipped methods' figures on the real elpv solar cells: the `eval-elpv` job.

One run makes the fixed split (recorded with its hash), fits the classifier and/or the anomaly
detector on the training part, scores the test part through ModelRunner (what the station
runs), times the exact ONNX model at batch 1 and writes models, manifests and a JSON report
into the output folder. Models taught on elpv inherit its non-commercial licence, so they go
there and never into models/.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from benchmarks.elpv.classify import ClassifyParams, fit_elpv_classifier, session
from benchmarks.elpv.data import (
    LICENCE,
    ElpvItem,
    Split,
    data_root,
    load_items,
    read_images,
    stratified_split,
)
from benchmarks.elpv.graph import VIEW_COUNTS
from cellinspect.config import PreprocessOp, StretchOp
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.intervals import accuracy_interval, auroc_interval

if TYPE_CHECKING:
    from benchmarks.elpv.finetune import ElpvFinetuneParams
    from benchmarks.elpv.synthetic import SyntheticParams
    from cellinspect.training.finetune import FinetuneReport

Say = Callable[[str], None]
Stage = Callable[[str, int, int], None]
TASKS = ("classification", "anomaly", "both")
CLASSIFICATION_METHODS = ("logistic-tta", "finetune")
ANOMALY_METHODS = ("gaussian", "patchcore", "synthetic")
DEFAULT_CLASSIFIER_BACKBONE = Path("models/efficientnet-lite0/1-int8/model.onnx")
DEFAULT_ANOMALY_BACKBONE = Path("models/efficientnet-lite0/1/model.onnx")
REFERENCES = {
    "deitsch2019_vgg19_gpu_accuracy": 0.8842,
    "deitsch2019_svm_accuracy": 0.8244,
    "goal_accuracy": 0.90,
    "goal_latency_ms": 25.0,
    "goal_auroc": 0.92,
}


def default_anomaly_params(method: str) -> AnomalyFitParams:
    """What eval-elpv fits for each detector unless told otherwise (README, elpv tables)."""
    if method == "patchcore":
        return AnomalyFitParams(coreset_size=4000, projection_dim=96, position_norm=True, bags=3)
    return AnomalyFitParams(
        detector="gaussian",
        projection_dim=None,  # all 152 channels: no projection drawn (README, elpv table)
        position_norm=True,
        groups=2,
        top_k=20,
    )


@dataclass(frozen=True)
class ElpvEvalParams:
    out: Path
    task: str = "both"
    classification_method: str = CLASSIFICATION_METHODS[0]
    classifier: ClassifyParams = field(default_factory=ClassifyParams)
    anomaly: AnomalyFitParams | None = None  # None: default_anomaly_params(anomaly_method)
    classifier_backbone: Path = DEFAULT_CLASSIFIER_BACKBONE
    anomaly_backbone: Path = DEFAULT_ANOMALY_BACKBONE
    finetune: ElpvFinetuneParams | None = None  # None: the defaults (needs torch)
    finetune_backbone: Path = DEFAULT_ANOMALY_BACKBONE
    anomaly_method: str = ANOMALY_METHODS[0]
    synthetic: SyntheticParams | None = None  # None: the defaults (needs torch)
    # Applied to every cell the anomaly detector sees (fit and test), as a recipe would.
    # The grey-level stretch, as `eval-elpv` does unless --no-stretch: without it the
    # default detector scores 0.896 instead of 0.9245 (README, elpv table).
    anomaly_preprocess: tuple[PreprocessOp, ...] = (StretchOp(),)
    limit: int | None = None
    seed: int = 0
    test_fraction: float = 0.25
    latency_runs: int = 100

    def check(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.classification_method not in CLASSIFICATION_METHODS:
            raise ModelError(
                f"classification method must be one of {CLASSIFICATION_METHODS}, "
                f"got {self.classification_method!r}"
            )
        if self.anomaly_method not in ANOMALY_METHODS:
            raise ModelError(
                f"anomaly method must be one of {ANOMALY_METHODS}, got {self.anomaly_method!r}"
            )
        if self.anomaly is not None and self.anomaly.detector != self.anomaly_method:
            raise ModelError(
                f"anomaly parameters are for the {self.anomaly.detector} detector, "
                f"the method is {self.anomaly_method}"
            )
        if self.finetune is not None and self.finetune.views not in VIEW_COUNTS:
            raise ModelError(f"views must be one of {VIEW_COUNTS}, got {self.finetune.views}")
        if self.finetune is not None and self.finetune.fits < 1:
            raise ModelError(f"fits must be >= 1, got {self.finetune.fits}")
        if self.latency_runs < 1:
            raise ModelError(f"latency_runs must be >= 1, got {self.latency_runs}")


def _no_stage(what: str, done: int, total: int) -> None:
    """Report nothing."""


def latency_ms(model_path: Path, images: Sequence[ImageU8], runs: int) -> dict[str, float]:
    """Batch-1 session.run times (2 threads, no spinning) over `runs` images, cycling if few."""
    spec = load_manifest(model_path).input
    sess = session(model_path, threads=2)
    feeds = [{spec.name: prepare_batch([img], spec)} for img in images[: min(len(images), runs)]]
    for feed in feeds[:3]:
        sess.run(None, feed)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds[i % len(feeds)])
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "p99_ms": float(np.percentile(times, 99)),
        "runs": float(runs),
        "distinct_images": float(len(feeds)),
    }


def _runner(model_path: Path) -> ModelRunner:
    return ModelRunner.load("elpv", model_path, SessionOptions(intra_op_threads=2, warmup_runs=1))


def _predict(
    runner: ModelRunner, images: Sequence[ImageU8], stage: Stage, what: str, batch: int = 16
) -> list[Any]:
    outputs: list[Any] = []
    for start in range(0, len(images), batch):
        outputs.extend(runner.predict(images[start : start + batch]))
        stage(what, min(start + batch, len(images)), len(images))
    return outputs


def _auroc(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> float | None:
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def classification_metrics(
    test: Sequence[ElpvItem], p_defective: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """Accuracy at p >= 0.5 with its 95 % interval, confusion (rows true good/defective),
    per class, per type and per expert probability (which cells the errors are)."""
    defective = np.array([i.defective for i in test])
    predicted = p_defective >= 0.5
    right = predicted == defective
    cm = confusion_matrix(defective, predicted, labels=[False, True])
    precision, recall, _f, support = precision_recall_fscore_support(
        defective, predicted, labels=[False, True], zero_division=0
    )
    return {
        "accuracy": float(right.mean()),
        "accuracy_ci95": accuracy_interval(int(right.sum()), right.size),
        "labels": ["good", "defective"],
        "confusion": cm.tolist(),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(("good", "defective"))
        },
        "per_type": _accuracy_by(right, [i.cell_type for i in test]),
        # The experts' probability: 0 and 1 are clear cells, 1/3 and 2/3 the doubtful ones.
        "per_expert_probability": _accuracy_by(right, [f"{i.probability:.2f}" for i in test]),
        "auroc_of_probability": _auroc(defective, p_defective),
    }


def _accuracy_by(right: npt.NDArray[np.bool_], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    key_arr = np.array(keys)
    return {
        key: {
            "images": int((key_arr == key).sum()),
            "accuracy": float(right[key_arr == key].mean()),
        }
        for key in sorted(set(keys))
    }


def anomaly_metrics(test: Sequence[ElpvItem], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    """AUROC against the binary label (p >= 0.5) with its 95 % interval, against any defect
    (p > 0), and per type."""
    defective = np.array([i.defective for i in test])
    any_defect = np.array([i.probability > 0 for i in test])
    types = np.array([i.cell_type for i in test])
    return {
        "auroc": _auroc(defective, scores),
        "auroc_ci95": auroc_interval(defective, scores),
        "auroc_any_defect": _auroc(any_defect, scores),
        "auroc_per_type": {
            kind: _auroc(defective[types == kind], scores[types == kind])
            for kind in sorted(set(types.tolist()))
        },
        "images": len(test),
        "defective": int(defective.sum()),
    }


def _data_provenance(split: Split, split_hash: str) -> dict[str, Any]:
    # Its own key: fit_anomaly records the bank's fingerprint and counts under "data".
    return {
        "elpv": {
            "dataset": "elpv-dataset (PyPI), read from the installed package",
            "licence": LICENCE,
            "split_sha256": split_hash,
            "train_images": len(split.train),
            "test_images": len(split.test),
            "seed": split.seed,
        },
        "licence_note": (
            "Taught on CC BY-NC-SA 4.0 images: this model is a derived work for evaluation; "
            "do not ship it in models/ or use it commercially."
        ),
    }


def _run_classification(
    params: ElpvEvalParams,
    split: Split,
    train: list[ImageU8],
    test: list[ImageU8],
    provenance: dict[str, Any],
    stage: Stage,
) -> dict[str, Any]:
    start = time.perf_counter()
    defective = np.array([i.defective for i in split.train])
    model_path = fit_elpv_classifier(
        train,
        defective,
        params.classifier_backbone,
        params.out / "classifier",
        params.classifier,
        provenance,
        lambda d, t: stage("classifier features", d, t),
    )
    fit_s = time.perf_counter() - start
    runner = _runner(model_path)
    outputs = _predict(runner, test, stage, "classifier test")
    p_def = np.array([o.class_scores["defective"] for o in outputs], dtype=np.float64)
    metrics = classification_metrics(split.test, p_def)
    return {
        "method": CLASSIFICATION_METHODS[0],
        "parameters": params.classifier.as_dict(),
        "backbone": str(params.classifier_backbone),
        "model": str(model_path),
        "model_sha256": sha256_file(model_path),
        **metrics,
        "latency": latency_ms(model_path, test, params.latency_runs),
        "fit_seconds": fit_s,
        "total_seconds": time.perf_counter() - start,
    }


def _defect_probabilities(
    model_path: Path, test: Sequence[ImageU8], stage: Stage, what: str
) -> npt.NDArray[np.float64]:
    """p('defective') per test image from a two-class model, through the station's runner."""
    outputs = _predict(_runner(model_path), test, stage, what)
    return np.array([o.class_scores["defective"] for o in outputs], dtype=np.float64)


def _tuned_model_fields(
    params: ElpvEvalParams,
    model_path: Path,
    report: FinetuneReport,
    test: Sequence[ImageU8],
    start: float,
    fit_s: float,
) -> dict[str, Any]:
    """What every report of a torch-trained model records: model, training run, speed."""
    return {
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "history": report.history,
        **_model_fields(params, model_path, test, start, fit_s),
    }


def _model_fields(
    params: ElpvEvalParams,
    model_path: Path,
    test: Sequence[ImageU8],
    start: float,
    fit_s: float,
) -> dict[str, Any]:
    """The model, its hash, its speed and how long it took."""
    latency = latency_ms(model_path, test, params.latency_runs)
    return {
        "backbone": str(params.finetune_backbone),
        "model": str(model_path),
        "model_sha256": sha256_file(model_path),
        "latency": latency,
        "fit_seconds": fit_s,
        "total_seconds": time.perf_counter() - start,
    }


def _run_finetune(
    params: ElpvEvalParams,
    split: Split,
    root: Path,
    test: list[ImageU8],
    provenance: dict[str, Any],
    stage: Stage,
) -> dict[str, Any]:
    from benchmarks.elpv.finetune import ElpvFinetuneParams, finetune_elpv_classifier

    tune = params.finetune or ElpvFinetuneParams(seed=params.seed)
    if tune.fits > 1:
        return _run_finetune_fits(params, tune, split, root, test, provenance, stage)
    start = time.perf_counter()
    model_path, report = finetune_elpv_classifier(
        split, root, params.finetune_backbone, params.out / "finetune", tune, provenance, stage
    )
    fit_s = time.perf_counter() - start
    p_def = _defect_probabilities(model_path, test, stage, "finetune test")
    return {
        "method": "finetune",
        "parameters": tune.as_dict(),
        "val_accuracy_single_view": report.val_accuracy,
        "export_max_abs_diff": report.export_max_abs_diff,
        **classification_metrics(split.test, p_def),
        **_tuned_model_fields(params, model_path, report, test, start, fit_s),
    }


def _run_finetune_fits(
    params: ElpvEvalParams,
    tune: ElpvFinetuneParams,
    split: Split,
    root: Path,
    test: list[ImageU8],
    provenance: dict[str, Any],
    stage: Stage,
) -> dict[str, Any]:
    """`fits` fine-tunes with consecutive seeds, each scored alone, then their mean in one graph.

    One seed moves elpv test accuracy by 3 points, so each member's own figure is reported
    beside the merged model's: the spread says how far to trust any single one.
    """
    from benchmarks.elpv.finetune import finetune_elpv_classifier
    from cellinspect.training.ensemble import ensemble_classifiers

    start = time.perf_counter()
    out_dir = params.out / "finetune"
    members, fits = [], []
    for k in range(tune.fits):
        member = replace(tune, seed=tune.seed + k, fits=1)
        path, report = finetune_elpv_classifier(
            split, root, params.finetune_backbone, out_dir / f"fit-{k}", member, provenance, stage
        )
        p_member = _defect_probabilities(path, test, stage, f"fit {k + 1}/{tune.fits} test")
        alone = classification_metrics(split.test, p_member)
        members.append(path)
        fits.append(
            {
                "seed": member.seed,
                "model": str(path),
                "accuracy": alone["accuracy"],
                "accuracy_ci95": alone["accuracy_ci95"],
                "val_accuracy_single_view": report.val_accuracy,
                "best_epoch": report.best_epoch,
                "epochs_run": report.epochs_run,
                "history": report.history,
            }
        )
    fit_s = time.perf_counter() - start
    model_path = ensemble_classifiers(members, out_dir, "elpv-finetune", out_dir.name)
    p_def = _defect_probabilities(model_path, test, stage, "finetune mean test")
    return {
        "method": "finetune",
        "parameters": tune.as_dict(),
        "fits": fits,
        **classification_metrics(split.test, p_def),
        **_model_fields(params, model_path, test, start, fit_s),
    }


def _run_anomaly(
    params: ElpvEvalParams,
    split: Split,
    root: Path,
    test: list[ImageU8],
    provenance: dict[str, Any],
    stage: Stage,
) -> dict[str, Any]:
    start = time.perf_counter()
    p = params.anomaly or default_anomaly_params(params.anomaly_method)
    functional = [i for i in split.train if i.functional]
    dataset = Dataset(root, [LabelledImage(root / i.file, "good") for i in functional])
    reader = RoiReader.whole_frame(params.anomaly_preprocess, "eval-elpv")
    report = fit_anomaly(
        dataset,
        reader,
        params.anomaly_backbone,
        params.out / "anomaly",
        "elpv-anomaly",
        "anomaly",
        p,
        stage,
        provenance,
    )
    if report.skipped:
        raise ModelError(f"{len(report.skipped)} elpv image(s) unreadable: {report.skipped[:3]}")
    fit_s = time.perf_counter() - start
    runner = _runner(report.model_path)
    test = [reader(img) for img in test]
    outputs = _predict(runner, test, stage, "anomaly test")
    scores = np.array([o.anomaly_score for o in outputs], dtype=np.float64)
    detector = (
        {"coreset_size": report.bank_size, "bags": p.bags, "patches": report.patches}
        if p.detector == "patchcore"
        else {
            "groups": p.groups,
            "top_k": p.top_k,
            "shrinkage": p.shrinkage,
            "cross_fit": p.cross_fitted,
        }
    )
    return {
        "method": p.detector,
        "fitted": report.summary,
        "parameters": {
            **detector,
            "projection_dim": p.projection_dim,
            "holdout_fraction": p.holdout_fraction,
            "seed": p.seed,
            "position_norm": p.position_norm,
            "taught_on": "functional cells (probability 0) of the training split",
            "preprocess": reader.describe(),
            "bank_images": report.bank_images,
        },
        "backbone": str(params.anomaly_backbone),
        "model": str(report.model_path),
        "model_sha256": sha256_file(report.model_path),
        **anomaly_metrics(split.test, scores),
        "latency": latency_ms(report.model_path, test, params.latency_runs),
        "fit_seconds": fit_s,
        "total_seconds": time.perf_counter() - start,
    }


def _run_synthetic(
    params: ElpvEvalParams,
    split: Split,
    root: Path,
    test: list[ImageU8],
    provenance: dict[str, Any],
    stage: Stage,
) -> dict[str, Any]:
    from benchmarks.elpv.synthetic import SyntheticParams, fit_elpv_synthetic

    start = time.perf_counter()
    tune = params.synthetic or SyntheticParams(seed=params.seed)
    model_path, report = fit_elpv_synthetic(
        split, root, params.finetune_backbone, params.out / "synthetic", tune, provenance, stage
    )
    fit_s = time.perf_counter() - start
    scores = _defect_probabilities(model_path, test, stage, "synthetic test")
    return {
        "method": "synthetic",
        "parameters": {
            **tune.as_dict(),
            "taught_on": "functional cells (probability 0) of the training split, "
            "with EL defects drawn onto copies of them",
        },
        "val_accuracy_drawn": report.val_accuracy,
        **anomaly_metrics(split.test, scores),
        **_tuned_model_fields(params, model_path, report, test, start, fit_s),
    }


def run_elpv_eval(
    params: ElpvEvalParams, say: Say | None = None, stage: Stage = _no_stage
) -> dict[str, Any]:
    """The whole evaluation; writes split.csv, the models and report.json into params.out."""
    params.check()
    tell = say or (lambda _line: None)
    started = time.perf_counter()
    root = data_root()
    split = stratified_split(load_items(root), params.test_fraction, params.seed, params.limit)
    params.out.mkdir(parents=True, exist_ok=True)
    split_hash = split.write_csv(params.out / "split.csv")
    tell(f"split: {len(split.train)} train, {len(split.test)} test, sha256 {split_hash[:12]}")
    logistic = params.task != "anomaly" and params.classification_method != "finetune"
    train = read_images(root, split.train) if logistic else []
    test = read_images(root, split.test)
    provenance = _data_provenance(split, split_hash)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.elpv eval-elpv",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": {
            "file": "split.csv",
            "sha256": split_hash,
            "seed": params.seed,
            "test_fraction": params.test_fraction,
            "limit": params.limit,
            "train": len(split.train),
            "test": len(split.test),
            "stratified_by": ["label (probability >= 0.5)", "type (mono/poly)"],
        },
        "licence": LICENCE,
        "references": REFERENCES,
    }
    if params.task in ("classification", "both"):
        if params.classification_method == "finetune":
            tell("classification: fine-tuning EfficientNet-Lite0 (torch)")
            report["classification"] = _run_finetune(params, split, root, test, provenance, stage)
        else:
            tell("classification: fitting the head on dihedral-view features")
            report["classification"] = _run_classification(
                params, split, train, test, provenance, stage
            )
    if params.task in ("anomaly", "both"):
        if params.anomaly_method == "synthetic":
            tell("anomaly: fine-tuning on functional training cells with drawn defects (torch)")
            report["anomaly"] = _run_synthetic(params, split, root, test, provenance, stage)
        else:
            tell(f"anomaly: {params.anomaly_method} detector on the functional training cells")
            report["anomaly"] = _run_anomaly(params, split, root, test, provenance, stage)
    report["seconds"] = time.perf_counter() - started
    (params.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    return report
