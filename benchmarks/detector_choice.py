"""Does `--detector auto` pick the detector that real defects would have picked?

For each data set, the candidates of `--detector auto` are fitted exactly as `fit-anomaly`
fits them (detector_choice.py: held-back good parts, synthetic anomalies, same seeds), then
every candidate also scores a test set of unseen good parts and real defects. The report says,
per data set, the synthetic AUROC auto chose by, the real-defect AUROC of each candidate, and
whether auto's choice is the one the real defects would have made.

Data: rendered flanges (cellinspect.datagen, cut as recipes/flange.yaml cuts them, the data the
shipped models were made from) and elpv solar cells (the `elpv-dataset` package: functional
cells as good parts, defect probability >= 0.5 as defects). Bounded for a 2-core machine:
subsets, set by the options.

    python -m benchmarks.detector_choice [--json out.json] [--skip-elpv]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from cellinspect.config import load_recipe
from cellinspect.datagen.part import plan_parts
from cellinspect.datagen.render import render_part
from cellinspect.entities import ImageU8
from cellinspect.inference.manifest import Manifest, load_manifest
from cellinspect.inference.patchcore import (
    PATCHES_OUTPUT,
    SCORE_OUTPUT,
    build_patch_feature_graph,
)
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import RoiReader
from cellinspect.training.fit_anomaly import choose_on_patches, run_batched

F32 = npt.NDArray[np.float32]
BACKBONE = Path("models/efficientnet-lite0/1/model.onnx")
RECIPE = Path("recipes/flange.yaml")


@dataclass(frozen=True)
class Case:
    name: str
    fit: list[ImageU8]  # good parts: what fit-anomaly is given (after its calibration split)
    test_good: list[ImageU8]
    test_defects: list[ImageU8]
    note: str


@dataclass
class Outcome:
    case: str
    note: str
    fit_images: int
    test_good: int
    test_defects: int
    synthetic: dict[str, float | None]
    errors: dict[str, str]  # candidates that could not be fitted, and why
    real: dict[str, float | None]
    ms_per_image: dict[str, float]  # median session.run, batch 1, candidates interleaved
    auto_pick: str
    real_pick: str
    agrees: bool
    reason: str
    seconds: float


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def flange_case(n_fit: int, n_good: int, n_defects: int, seed: int) -> Case:
    """Rendered flanges cut by the shipped recipe's first ROI; test parts from other seeds."""
    recipe = load_recipe(RECIPE)
    reader = RoiReader(recipe, recipe.rois[0].name if recipe.rois else None)
    fit = [reader(render_part(s)) for s in plan_parts(n_fit, seed, 0.0)]
    good = [reader(render_part(s)) for s in plan_parts(n_good, seed + 1, 0.0)]
    specs = plan_parts(n_defects, seed + 2, 1.0)
    bad = [reader(render_part(s)) for s in specs]
    kinds = sorted({s.label for s in specs})
    return Case(f"flange ({n_fit} good)", fit, good, bad, f"rendered, defects: {', '.join(kinds)}")


def elpv_case(n_fit: int, n_good: int, n_defects: int, seed: int) -> Case:
    """elpv cells: a seeded draw of functional cells to fit, others and defective ones to test."""
    from benchmarks.elpv.data import data_root, load_items, read_images

    root = data_root()
    items = sorted(load_items(root), key=lambda i: i.file)
    rng = np.random.default_rng(seed)
    good = [items[i] for i in rng.permutation(len(items)) if items[i].functional]
    bad = [items[i] for i in rng.permutation(len(items)) if items[i].defective]
    if len(good) < n_fit + n_good or len(bad) < n_defects:
        raise SystemExit(f"elpv: too few cells for {n_fit}+{n_good} good and {n_defects} defects")
    return Case(
        f"elpv ({n_fit} good)",
        read_images(root, good[:n_fit]),
        read_images(root, good[n_fit : n_fit + n_good]),
        read_images(root, bad[:n_defects]),
        "solar cells, mono and poly, defect probability >= 0.5",
    )


def _auroc(good: F32, bad: F32) -> float:
    truth = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    return float(roc_auc_score(truth, np.r_[good, bad]))


SPEED_ROUNDS = 30


def _timings(models: dict[str, Path], image: ImageU8, backbone: Manifest) -> dict[str, float]:
    """Median ms of one batch-1 run per candidate, the candidates taken in turn each round so
    that load changes hit them alike."""
    sessions = {k: _session(p) for k, p in models.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for sess in sessions.values():  # warm-up
        run_batched(sess, SCORE_OUTPUT, [image], backbone, 1)
    for _ in range(SPEED_ROUNDS):
        for k, sess in sessions.items():
            start = time.perf_counter()
            run_batched(sess, SCORE_OUTPUT, [image], backbone, 1)
            times[k].append((time.perf_counter() - start) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def run_case(case: Case, params: AnomalyFitParams, work: Path) -> Outcome:
    """Choose as fit-anomaly does, then score the real test set with every candidate."""
    start = time.perf_counter()
    backbone = load_manifest(BACKBONE)
    _log(f"[{case.name}] features of {len(case.fit)} fitting images")
    features = _session(build_patch_feature_graph(BACKBONE, work / "features.onnx"))
    patches = run_batched(features, PATCHES_OUTPUT, case.fit, backbone, params.batch_size)
    del features

    def stage(what: str, done: int, total: int) -> None:
        _log(f"[{case.name}] {what} {done}/{total}")

    choice = choose_on_patches(patches, case.fit, params, BACKBONE, work / "candidates", stage)
    synthetic = {r.name: r.synthetic_auroc for r in choice.results}
    real: dict[str, float | None] = {}
    test = [*case.test_good, *case.test_defects]
    for result in choice.results:
        if result.synthetic_auroc is None:
            real[result.name] = None
            continue
        _log(f"[{case.name}] {result.name}: scoring {len(test)} real test images")
        model = work / "candidates" / result.name / "model.onnx"
        scores = run_batched(_session(model), SCORE_OUTPUT, test, backbone, params.batch_size)
        n = len(case.test_good)
        real[result.name] = _auroc(scores[:n], scores[n:])
    ms = _timings(
        {
            r.name: work / "candidates" / r.name / "model.onnx"
            for r in choice.results
            if not r.error
        },
        case.test_good[0],
        backbone,
    )
    fitted = {k: v for k, v in real.items() if v is not None}
    real_pick = max(fitted, key=lambda k: fitted[k])
    # agreement: auto's pick is real-best, or within the tie margin of it on real defects
    agrees = fitted[choice.chosen] >= fitted[real_pick] - 0.005
    return Outcome(
        case.name,
        case.note,
        len(case.fit),
        len(case.test_good),
        len(case.test_defects),
        synthetic,
        {r.name: r.error for r in choice.results if r.error},
        real,
        ms,
        choice.chosen,
        real_pick,
        agrees,
        choice.reason,
        time.perf_counter() - start,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(outcomes: Sequence[Outcome]) -> str:
    """One row per data set and candidate: synthetic and real AUROC, picks marked."""
    lines = [
        "| data | candidate | synthetic AUROC | real-defect AUROC | ms / image | auto picks "
        "| real picks |",
        "|---|---|---:|---:|---:|:-:|:-:|",
    ]
    for out in outcomes:
        for i, name in enumerate(out.synthetic):
            ms = f"{out.ms_per_image[name]:.1f}" if name in out.ms_per_image else "-"
            lines.append(
                f"| {out.case if i == 0 else ''} | {name} | {_fmt(out.synthetic[name])} | "
                f"{_fmt(out.real[name])} | {ms} | {'x' if name == out.auto_pick else ''} | "
                f"{'x' if name == out.real_pick else ''} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detector_choice")
    ap.add_argument("--flange-fit", type=int, default=100, help="good flanges to fit on")
    ap.add_argument("--elpv-fit", type=int, nargs="*", default=[60, 200], help="good cells")
    ap.add_argument("--test-good", type=int, default=60)
    ap.add_argument("--test-defects", type=int, default=60)
    ap.add_argument("--coreset", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-elpv", action="store_true")
    ap.add_argument("--json", type=Path, help="write the outcomes here")
    args = ap.parse_args(argv)
    params = AnomalyFitParams(detector="auto", coreset_size=args.coreset, seed=args.seed)
    cases = [flange_case(args.flange_fit, args.test_good, args.test_defects, args.seed)]
    if not args.skip_elpv:
        cases += [elpv_case(n, args.test_good, args.test_defects, args.seed) for n in args.elpv_fit]
    outcomes = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="detector-choice-") as tmp:
            outcomes.append(run_case(case, params, Path(tmp)))
        _log(f"[{case.name}] {outcomes[-1].reason} ({outcomes[-1].seconds:.0f} s)")
    print(markdown(outcomes))
    for out in outcomes:
        for name, error in out.errors.items():
            print(f"\n{out.case}: {name} not fitted: {error}")
    agree = sum(o.agrees for o in outcomes)
    print(f"\nauto's choice agrees with the real defects' in {agree} of {len(outcomes)} data sets")
    if args.json is not None:
        record: dict[str, Any] = {
            "outcomes": [asdict(o) for o in outcomes],
            "args": {**vars(args), "json": str(args.json)},
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
