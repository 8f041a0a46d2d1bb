"""Which backbone: EfficientNet-Lite0, -Lite1 and -Lite2 side by side, accuracy and latency.

`python -m benchmarks.backbones --out runs/backbones` fits, for each converted backbone
(`cellinspect convert-backbone --variant liteN` makes them, in models/ or, with `--out
DIR/liteN/1`, in a folder named by `--backbones DIR`; nothing is downloaded here):

* elpv classification: the eval-elpv logistic head on dihedral-view features (frozen backbone),
  accuracy on the test part of the fixed, stratified split (the published reference: 88.42 %);
* elpv anomaly: the eval-elpv default detector (gaussian) fitted on functional cells only, AUROC;
* the shipped flange parts (`sample_images/`, cut by `recipes/flange.yaml`): PatchCore AUROC
  over two folds of the good parts (fit on one half, score the other half and every defect),
  and the 7-class logistic head's leave-one-out accuracy on pooled features.

Latency is the median ms per image of each fitted model (backbone + head, one ONNX graph) at
batch 1 on 2 threads, every model timed in turn inside each round, so all see the same load.
elpv runs on a stratified subset (`--elpv-limit`, 0: all 2,624 cells) to stay within about half
an hour on a 2-core machine; the report records which. Fits may run as separate processes
(one `--variants`, `--no-elpv`, `--no-flange` each); `--merge A/report.json B/report.json ...`
then joins their results and times every fitted model, interleaved, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from benchmarks.elpv.classify import ClassifyParams, session
from benchmarks.elpv.evaluate import REFERENCES, ElpvEvalParams, run_elpv_eval
from cellinspect.config import load_recipe
from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, ModelError
from cellinspect.inference.manifest import ResizeMode, load_manifest
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.inference.tiling import fit_inputs, fitted_input
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, load_dataset
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_classifier import (
    ClassifierFitParams,
    fit_classifier,
    fit_logistic_head,
    pooled_features,
)

VARIANTS = ("lite0", "lite1", "lite2")
SAMPLES = Path("sample_images")
RECIPE = Path("recipes/flange.yaml")
PUBLISHED_ELPV_ACCURACY = REFERENCES["deitsch2019_vgg19_gpu_accuracy"]
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class BenchParams:
    out: Path
    variants: tuple[str, ...] = VARIANTS
    elpv_limit: int = 1000  # 0: the whole set
    views: int = 4
    latency_rounds: int = 60
    elpv: bool = True
    elpv_anomaly: bool = True  # False: elpv classification only (the cheaper half)
    flange: bool = True
    seed: int = 0
    merge: tuple[Path, ...] = ()
    backbone_dirs: tuple[Path, ...] = ()  # searched before models/ (see backbone_path)


class Progress:
    """Progress lines on stdout: every stage's end, and a line at most every 10 s between."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = 0.0

    def say(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {line}", flush=True)
        self.last = time.perf_counter()

    def stage(self, what: str, done: int, total: int) -> None:
        if done >= total or time.perf_counter() - self.last >= PROGRESS_EVERY_S:
            self.say(f"  {what}: {done}/{total}")


def backbone_path(variant: str, dirs: Sequence[Path] = ()) -> Path:
    """The converted backbone: the first of DIR/liteN/1, DIR/efficientnet-liteN/1 for each of
    `dirs`, then models/efficientnet-liteN/1 (larger backbones can live outside models/, where
    every folder is a served model); a clear error names the places tried and how to make it."""
    tried = [
        d / name / "1" / "model.onnx" for d in dirs for name in (variant, f"efficientnet-{variant}")
    ]
    tried.append(Path("models") / f"efficientnet-{variant}" / "1" / "model.onnx")
    for path in tried:
        if path.is_file():
            return path
    raise ModelError(
        f"{variant}: no backbone at {', '.join(map(str, tried))}; make it with "
        f"`cellinspect convert-backbone --variant {variant}` (--out DIR/{variant}/1 with "
        "--backbones DIR)"
    )


def _auroc(defective: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> float:
    return float(roc_auc_score(defective, scores))


def run_elpv(params: BenchParams, variant: str, progress: Progress) -> dict[str, Any]:
    """eval-elpv's logistic head and default gaussian detector on this backbone."""
    path = backbone_path(variant, params.backbone_dirs)
    report = run_elpv_eval(
        ElpvEvalParams(
            out=params.out / variant / "elpv",
            task="both" if params.elpv_anomaly else "classification",
            classifier=ClassifyParams(views=params.views, seed=params.seed),
            classifier_backbone=path,
            anomaly_backbone=path,
            limit=params.elpv_limit or None,
            seed=params.seed,
            latency_runs=1,  # timed below, interleaved with the other backbones
        ),
        say=progress.say,
        stage=progress.stage,
    )
    cls = report["classification"]
    result: dict[str, Any] = {
        "split": report["split"],
        "classification": {
            "accuracy": cls["accuracy"],
            "accuracy_ci95": cls["accuracy_ci95"],
            "vs_published": cls["accuracy"] - PUBLISHED_ELPV_ACCURACY,
            "views": params.views,
            "fit_seconds": cls["fit_seconds"],
            "model": cls["model"],
        },
    }
    if "anomaly" in report:
        anom = report["anomaly"]
        result["anomaly"] = {
            "method": anom["method"],
            "auroc": anom["auroc"],
            "auroc_ci95": anom["auroc_ci95"],
            "fit_seconds": anom["fit_seconds"],
            "model": anom["model"],
        }
    return result


def _flange_parts(reader: RoiReader) -> list[tuple[LabelledImage, ImageU8]]:
    dataset = load_dataset(SAMPLES)
    return [(item, reader.read(item.path)) for item in dataset.items]


def run_flange_anomaly(
    params: BenchParams,
    variant: str,
    reader: RoiReader,
    parts: Sequence[tuple[LabelledImage, ImageU8]],
    progress: Progress,
) -> dict[str, Any]:
    """PatchCore on half the good parts, scored on the other half and every defect; 2 folds."""
    good = [i for i, (item, _) in enumerate(parts) if item.label == "good"]
    bad = [i for i, (item, _) in enumerate(parts) if item.label != "good"]
    folds = [good[0::2], good[1::2]]
    aurocs, models, fit_s = [], [], []
    for k, fitted in enumerate(folds):
        scored = [i for i in good if i not in fitted] + bad
        start = time.perf_counter()
        dataset = Dataset(SAMPLES, [parts[i][0] for i in fitted])
        report = fit_anomaly(
            dataset,
            reader,
            backbone_path(variant, params.backbone_dirs),
            params.out / variant / "flange-anomaly" / f"fold{k}",
            "flange-anomaly",
            f"fold{k}",
            AnomalyFitParams(seed=params.seed),
            progress.stage,
        )
        fit_s.append(time.perf_counter() - start)
        runner = ModelRunner.load("flange", report.model_path, SessionOptions(intra_op_threads=2))
        outputs = runner.predict([parts[i][1] for i in scored])
        scores = np.array([o.anomaly_score for o in outputs], dtype=np.float64)
        labels = np.array([parts[i][0].label != "good" for i in scored])
        aurocs.append(_auroc(labels, scores))
        models.append(str(report.model_path))
        progress.say(f"  flange anomaly fold {k}: AUROC {aurocs[-1]:.3f}")
    return {
        "method": "patchcore (default fit-anomaly parameters)",
        "auroc_mean": statistics.mean(aurocs),
        "auroc_per_fold": aurocs,
        "fitted_good_per_fold": [len(f) for f in folds],
        "scored_per_fold": {"good": len(good) // 2, "defective": len(bad)},
        "fit_seconds": fit_s,
        "model": models[0],
    }


def run_flange_classifier(
    params: BenchParams,
    variant: str,
    reader: RoiReader,
    parts: Sequence[tuple[LabelledImage, ImageU8]],
    progress: Progress,
) -> dict[str, Any]:
    """Leave-one-out accuracy of fit-classifier's head on pooled features, and the full model."""
    path = backbone_path(variant, params.backbone_dirs)
    model_input = fitted_input(load_manifest(path).input, ResizeMode.LETTERBOX)
    images = fit_inputs([img for _, img in parts], model_input)
    feats = pooled_features(images, path, 8)
    labels = sorted({item.label for item, _ in parts})
    y = np.array([labels.index(item.label) for item, _ in parts])
    fit = ClassifierFitParams(seed=params.seed)
    right = []
    for i in range(len(parts)):
        keep = np.arange(len(parts)) != i
        head = fit_logistic_head(feats[keep], y[keep], fit.regularisation_c, fit.max_iter, fit.seed)
        logits = feats[i] @ head.weights + head.bias
        right.append(int(np.argmax(logits)) == int(y[i]))
    accuracy = float(np.mean(right))
    progress.say(f"  flange classifier leave-one-out: {sum(right)}/{len(right)}")
    report = fit_classifier(
        load_dataset(SAMPLES),
        reader,
        path,
        params.out / variant / "flange-classifier" / "1",
        "flange-classifier",
        "1",
        fit,
    )
    return {
        "method": "logistic head on pooled features (fit-classifier), leave-one-out",
        "accuracy": accuracy,
        "correct": int(sum(right)),
        "parts": len(right),
        "classes": labels,
        "model": str(report.model_path),
    }


def interleaved_latency(
    models: dict[str, Path], images: dict[str, Sequence[ImageU8]], rounds: int
) -> dict[str, dict[str, float]]:
    """Median and p90 ms of one batch-1 run per model, the models taken in turn each round."""
    sessions, feeds = {}, {}
    for key, path in models.items():
        spec = load_manifest(path).input
        sessions[key] = session(path, threads=2)
        feeds[key] = [{spec.name: prepare_batch([img], spec)} for img in images[key][:8]]
        for feed in feeds[key][:3]:
            sessions[key].run(None, feed)  # warm-up
    times: dict[str, list[float]] = {key: [] for key in models}
    for r in range(rounds):
        for key in models:
            feed = feeds[key][r % len(feeds[key])]
            start = time.perf_counter()
            sessions[key].run(None, feed)
            times[key].append((time.perf_counter() - start) * 1000.0)
    return {
        key: {
            "median_ms": statistics.median(t),
            "p90_ms": float(np.percentile(t, 90)),
            "runs": float(len(t)),
        }
        for key, t in times.items()
    }


def _elpv_latency_images(params: BenchParams) -> list[ImageU8]:
    from benchmarks.elpv.data import data_root, load_items, read_images, stratified_split

    root = data_root()
    split = stratified_split(load_items(root), 0.25, params.seed, params.elpv_limit or None)
    return read_images(root, split.test[:8])


def merged_results(reports: Sequence[Path]) -> tuple[dict[str, dict[str, Any]], int]:
    """Per-backbone results of separate fitting runs, joined; and their elpv subset size."""
    results: dict[str, dict[str, Any]] = {}
    limits = set()
    for path in reports:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            parts = report["results"]
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"{path}: not a benchmarks.backbones report: {err}") from err
        if any("elpv" in r for r in parts.values()):
            limits.add(int(report["elpv_limit"]))
        for variant, entry in parts.items():
            entry.pop("latency", None)  # timed again below, with all the others
            results.setdefault(variant, {}).update(entry)
    if len(limits) > 1:
        raise ModelError(f"the reports used different --elpv-limit values {sorted(limits)}")
    return results, limits.pop() if limits else 0


def _latency_inputs(
    params: BenchParams, results: dict[str, dict[str, Any]], reader: RoiReader
) -> tuple[dict[str, Path], dict[str, Sequence[ImageU8]]]:
    """Every fitted model, and the images to time it on (its own data, prepared as fitted)."""
    models: dict[str, Path] = {}
    images: dict[str, Sequence[ImageU8]] = {}
    has_elpv = any("elpv" in r for r in results.values())
    has_flange = any("flange_anomaly" in r for r in results.values())
    elpv_images = _elpv_latency_images(params) if has_elpv else []
    stretch = RoiReader.whole_frame(ElpvEvalParams(out=params.out).anomaly_preprocess, "bench")
    flange = [img for _, img in _flange_parts(reader)] if has_flange else []
    for variant, r in results.items():
        if "elpv" in r:
            models[f"{variant}/elpv-classifier"] = Path(r["elpv"]["classification"]["model"])
            images[f"{variant}/elpv-classifier"] = elpv_images
            if "anomaly" in r["elpv"]:
                models[f"{variant}/elpv-anomaly"] = Path(r["elpv"]["anomaly"]["model"])
                images[f"{variant}/elpv-anomaly"] = [stretch(img) for img in elpv_images]
        for task in ("flange_anomaly", "flange_classifier"):
            if task in r:
                key = f"{variant}/{task.replace('_', '-')}"
                models[key] = Path(r[task]["model"])
                images[key] = flange
    return models, images


def fit_all(params: BenchParams, reader: RoiReader, progress: Progress) -> dict[str, Any]:
    """Fit every backbone's models; results per backbone."""
    for variant in params.variants:
        backbone_path(variant, params.backbone_dirs)  # fail early, before hours of fitting
    parts = _flange_parts(reader) if params.flange else []
    results: dict[str, dict[str, Any]] = {}
    for variant in params.variants:
        path = backbone_path(variant, params.backbone_dirs)
        meta = load_manifest(path)
        entry: dict[str, Any] = {
            "backbone": str(path),
            "input_size": meta.input.height,
            "feature_channels": [o.shape[1] for o in meta.outputs],
        }
        progress.say(f"{variant}: input {meta.input.height} px")
        if params.elpv:
            entry["elpv"] = run_elpv(params, variant, progress)
        if params.flange:
            entry["flange_anomaly"] = run_flange_anomaly(params, variant, reader, parts, progress)
            entry["flange_classifier"] = run_flange_classifier(
                params, variant, reader, parts, progress
            )
        results[variant] = entry
    return results


def run(params: BenchParams) -> dict[str, Any]:
    progress = Progress()
    load = os.getloadavg()
    progress.say(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    reader = RoiReader(load_recipe(RECIPE))
    elpv_limit = params.elpv_limit
    if params.merge:
        results, elpv_limit = merged_results(params.merge)
        params = replace(params, elpv_limit=elpv_limit)
    else:
        results = fit_all(params, reader, progress)
    models, images = _latency_inputs(params, results, reader)
    progress.say(f"latency: {params.latency_rounds} interleaved rounds over {len(models)} models")
    latency = interleaved_latency(models, images, params.latency_rounds)
    for key, value in latency.items():
        variant, task = key.split("/")
        results[variant].setdefault("latency", {})[task] = value
    end_load = os.getloadavg()
    report = {
        "command": "python -m benchmarks.backbones " + " ".join(sys.argv[1:]),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": load,
        "load_average_end": end_load,
        "cpu_count": os.cpu_count(),
        "elpv_limit": elpv_limit,
        "merged_from": [str(p) for p in params.merge],
        "published_elpv_accuracy": PUBLISHED_ELPV_ACCURACY,
        "latency_rounds": params.latency_rounds,
        "results": results,
        "seconds": time.perf_counter() - progress.started,
    }
    params.out.mkdir(parents=True, exist_ok=True)
    (params.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(markdown_table(report))
    return report


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(report: dict[str, Any]) -> str:
    """The docs table: one row per backbone."""
    head = (
        "| backbone | input | elpv accuracy | elpv anomaly AUROC | flange anomaly AUROC "
        "| flange classifier | ms elpv cls | ms elpv anomaly | ms flange anomaly "
        "| ms flange cls |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [head]
    for variant, r in report["results"].items():
        elpv = r.get("elpv", {})
        lat = r.get("latency", {})
        fa, fc = r.get("flange_anomaly", {}), r.get("flange_classifier", {})
        flange_cls = f"{fc['correct']}/{fc['parts']}" if fc else "—"

        def ms(task: str, lat: dict[str, Any] = lat) -> str:
            return _cell(lat.get(task, {}).get("median_ms"), ".1f")

        rows.append(
            f"| {variant} | {r['input_size']} px "
            f"| {_cell(elpv.get('classification', {}).get('accuracy', None), '.1%')} "
            f"| {_cell(elpv.get('anomaly', {}).get('auroc', None), '.3f')} "
            f"| {_cell(fa.get('auroc_mean'), '.3f')} | {flange_cls} "
            f"| {ms('elpv-classifier')} | {ms('elpv-anomaly')} | {ms('flange-anomaly')} "
            f"| {ms('flange-classifier')} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backbones",
        description="EfficientNet-Lite0/1/2 backbones: elpv and flange accuracy, latency.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/backbones"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="e.g. lite0,lite2")
    parser.add_argument(
        "--elpv-limit", type=int, default=1000, help="Stratified elpv subset (0: all cells)"
    )
    parser.add_argument("--views", type=int, default=4, help="Dihedral views (1, 2, 4, 8)")
    parser.add_argument("--latency-rounds", type=int, default=60)
    parser.add_argument(
        "--backbones",
        type=Path,
        action="append",
        default=[],
        help="Folder with liteN/1/model.onnx (or efficientnet-liteN/1), searched before models/",
    )
    parser.add_argument("--no-elpv", action="store_true", help="Flange parts only")
    parser.add_argument("--no-flange", action="store_true", help="elpv only")
    parser.add_argument(
        "--no-elpv-anomaly", action="store_true", help="elpv classification only (cheaper)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        help="Fit nothing: join these runs' report.json files and time their models together",
    )
    args = parser.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    params = BenchParams(
        out=args.out,
        variants=variants,
        elpv_limit=args.elpv_limit,
        views=args.views,
        latency_rounds=args.latency_rounds,
        elpv=not args.no_elpv,
        elpv_anomaly=not args.no_elpv_anomaly,
        flange=not args.no_flange,
        merge=tuple(args.merge),
        backbone_dirs=tuple(args.backbones),
    )
    try:
        run(params)
    except CellInspectError as err:
        parser.exit(1, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
