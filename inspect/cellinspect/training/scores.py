"""Score a labelled set with a model, through the runner the station uses.

Evaluation and threshold calibration must read the same number the decision rules compare with
the thresholds: the anomaly score for anomaly models, and for classifiers the highest defect
class probability (decision/rules.py fails a part when any defect class reaches `fail_at`; for a
good/defect pair this is exactly 1 - p(good)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cellinspect.entities import ModelOutput, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import Manifest
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, Stage, read_images

F64 = npt.NDArray[np.float64]


@dataclass
class ScoredSet:
    manifest: Manifest
    items: list[LabelledImage]
    outputs: list[ModelOutput]
    scores: F64  # the decision score of each image (higher = more defective)

    @property
    def truth(self) -> list[str]:
        return [i.label for i in self.items]

    @property
    def is_defect(self) -> npt.NDArray[np.bool_]:
        good = set(self.manifest.good_labels)
        return np.array([i.label not in good for i in self.items], dtype=bool)


def decision_score(manifest: Manifest, output: ModelOutput) -> float:
    """The number the decision rules compare with review_at / fail_at."""
    if manifest.task is Task.ANOMALY:
        if output.anomaly_score is None:
            raise ModelError(f"{manifest.name}: anomaly model gave no score")
        return float(output.anomaly_score)
    defects = [p for k, p in output.class_scores.items() if k not in manifest.good_labels]
    if not defects:
        raise ModelError(
            f"{manifest.name}: classifier has no defect class (labels {manifest.labels})"
        )
    return float(max(defects))


def check_labels_known(manifest: Manifest, dataset: Dataset) -> None:
    """A classifier cannot be judged on classes it was never taught: say which ones."""
    if manifest.task is not Task.CLASSIFICATION:
        return
    unknown = sorted({i.label for i in dataset.items} - set(manifest.labels))
    if unknown:
        raise ModelError(
            f"{dataset.root}: labels {unknown} are not known to the model {manifest.name} "
            f"(it knows {manifest.labels})"
        )


def score_dataset(
    runner: ModelRunner,
    dataset: Dataset,
    reader: RoiReader,
    batch_size: int = 8,
    stage: Stage | None = None,
) -> ScoredSet:
    """Decode, crop and score every readable image; unreadable ones land in dataset.skipped."""
    manifest = runner.manifest
    if manifest.task not in (Task.ANOMALY, Task.CLASSIFICATION):
        raise ModelError(f"{manifest.name}: cannot score a '{manifest.task.value}' model")
    check_labels_known(manifest, dataset)
    reader.check_fitted_like(manifest)
    pairs = list(
        read_images(dataset, reader, (lambda d, t: stage("read", d, t)) if stage else None)
    )
    if not pairs:
        raise ModelError(f"{dataset.root}: no readable images to score")
    outputs: list[ModelOutput] = []
    for start in range(0, len(pairs), batch_size):
        outputs.extend(runner.predict([img for _, img in pairs[start : start + batch_size]]))
        if stage is not None:
            stage("score", min(start + batch_size, len(pairs)), len(pairs))
    scores = np.array([decision_score(manifest, o) for o in outputs], dtype=np.float64)
    return ScoredSet(manifest, [item for item, _ in pairs], outputs, scores)


def load_runner(model_path: Path) -> ModelRunner:
    """A runner for a model file (its folder name is the runner's name)."""
    return ModelRunner.load(model_path.parent.name, model_path, SessionOptions(warmup_runs=1))
