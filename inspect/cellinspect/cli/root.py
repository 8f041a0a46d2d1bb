"""One entry point, one sub-command per job.

User errors (a bad recipe, a missing file, a model that does not match its manifest) print one
clear message and exit 1; only bugs print tracebacks.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cellinspect import __version__
from cellinspect.cli.support import (
    DEFAULT_RECIPE,
    BagsOpt,
    CrossFitOpt,
    DetectorOpt,
    GroupsOpt,
    PositionNormOpt,
    RecipeOpt,
    TopKOpt,
    console,
    err_console,
    fail,
    progress_bar,
    stage_progress,
    user_errors,
)
from cellinspect.errors import CellInspectError

if TYPE_CHECKING:
    from cellinspect.config import Recipe
    from cellinspect.runtime.pipeline import PipelineStats
    from cellinspect.training.dataset import RoiReader

app = typer.Typer(
    name="cellinspect",
    help="Vision quality-inspection station for robotic cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_sub_apps() -> None:
    """Sub-command groups and commands that live with their own package."""
    from cellinspect.cli.calibrate import app as calibrate_app
    from cellinspect.cli.cell import register
    from cellinspect.cli.station import register as register_station
    from cellinspect.cli.train import register as register_train
    from cellinspect.cli_elpv import register as register_elpv

    app.add_typer(calibrate_app, name="calibrate")
    register(app)
    register_station(app)
    register_train(app)
    register_elpv(app)


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe or station file to check.")],
) -> None:
    """Check a recipe or station file: print every error with its key path and exit 1."""
    from cellinspect.config import RecipeInvalidError, load_recipe
    from cellinspect.station.config import is_station_file

    if is_station_file(recipe):
        from cellinspect.cli.station import validate_station

        validate_station(recipe)
        return

    try:
        loaded = load_recipe(recipe)
    except RecipeInvalidError as err:
        for line in err.problems:
            err_console.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from err
    except CellInspectError as err:
        raise fail(str(err)) from err
    problems = recipe_file_problems(loaded)
    if problems:
        for line in problems:
            err_console.print(f"{recipe}: {line}", highlight=False, markup=False)
        raise typer.Exit(code=1)
    console.print(f"{recipe}: valid recipe '{loaded.name}' v{loaded.version}")


def recipe_file_problems(recipe: Recipe) -> list[str]:
    """Missing model or calibration files, then each model's manifest against the recipe."""
    missing = [f"file not found: {m.path}" for m in recipe.models if not m.path.is_file()]
    if recipe.calibration is not None and not recipe.calibration.is_file():
        missing.append(f"file not found: {recipe.calibration}")
    return missing or _model_problems(recipe)


def _model_problems(recipe: Recipe) -> list[str]:
    """Each model's manifest, and the preprocessing and ROI size it was fitted on."""
    from cellinspect.inference.manifest import load_manifest
    from cellinspect.inference.preprocess_contract import check_recipe_fits

    problems = []
    for index, model in enumerate(recipe.models):
        try:
            check_recipe_fits(load_manifest(model.path), recipe, model.name)
        except CellInspectError as err:
            problems.append(f"models[{index}] ({model.name}): {err}")
    return problems


def _summary_table(stats: PipelineStats, peak_mb: float) -> Table:
    from cellinspect.entities import Verdict

    table = Table(title="Inspection summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("parts", str(stats.count))
    for verdict in Verdict:
        table.add_row(verdict.value, str(stats.verdicts[verdict]))
    table.add_row("errors (fail-safe)", str(stats.errors))
    table.add_row("dropped", str(stats.dropped))
    table.add_row("throughput", f"{stats.throughput:.1f} parts/s")
    p50, p99 = stats.percentile(50), stats.percentile(99)
    table.add_row("latency p50", "-" if p50 is None else f"{p50:.1f} ms")
    table.add_row("latency p99", "-" if p99 is None else f"{p99:.1f} ms")
    table.add_row("peak memory", f"{peak_mb:.0f} MB")
    return table


@app.command()
def inspect(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files, video files (every frame) and/or folders.")
    ],
    recipe: RecipeOpt = DEFAULT_RECIPE,
    jsonl: Annotated[
        Path | None, typer.Option("--jsonl", help="Append results as JSON Lines.")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    overlays: Annotated[
        Path | None, typer.Option("--overlays", help="Write heatmap overlays here.")
    ] = None,
    overlays_for_pass: Annotated[
        bool, typer.Option("--overlays-for-pass", help="Also write overlays of PASS parts.")
    ] = False,
    pattern: Annotated[str, typer.Option(help="Glob for files inside folders.")] = "*",
    recursive: Annotated[bool, typer.Option(help="Descend into sub-folders.")] = False,
    show: Annotated[int, typer.Option(help="List up to N non-PASS parts at the end.")] = 20,
) -> None:
    """Inspect images with a recipe: progress, summary table, result files."""
    from cellinspect.config import load_recipe
    from cellinspect.entities import InspectedFrame, Verdict
    from cellinspect.runtime.bench import peak_rss_mb
    from cellinspect.runtime.inspector import Inspector
    from cellinspect.runtime.outputs import ResultFiles
    from cellinspect.runtime.pipeline import run_pipeline
    from cellinspect.sources.registry import source_for_paths

    with user_errors():
        loaded = load_recipe(recipe)
        outputs = loaded.outputs
        overlays_dir = overlays or outputs.overlays_dir
        inspector = Inspector.from_recipe(
            recipe, make_overlays=overlays_dir is not None, recipe=loaded
        )
        source = source_for_paths(paths, pattern=pattern, recursive=recursive)
        total = len(getattr(source, "paths", ())) or None
        flagged: list[InspectedFrame] = []
        stop = threading.Event()
        with (
            ResultFiles(
                jsonl or outputs.results_jsonl,
                csv_out or outputs.results_csv,
                overlays_dir,
                overlays_for_pass or outputs.overlays_for_pass,
            ) as files,
            progress_bar() as progress,
        ):
            task = progress.add_task("inspecting", total=total)

            def on_result(inspected: InspectedFrame) -> None:
                files.write(inspected)
                progress.advance(task)
                if inspected.result.verdict is not Verdict.PASS:
                    flagged.append(inspected)

            try:
                stats = run_pipeline(source, inspector, on_result, stop)
            except KeyboardInterrupt:
                stop.set()
                raise
    if flagged and show > 0:
        table = Table(title="Parts not passed")
        for col in ("file", "verdict", "class", "score", "reason"):
            table.add_column(col)
        for item in flagged[:show]:
            r = item.result
            table.add_row(
                Path(r.path).name if r.path else str(r.frame_id),
                r.verdict.value,
                r.defect_class or "",
                "" if r.score is None else f"{r.score:.2f}",
                (r.error or (r.reasons[0] if r.reasons else ""))[:90],
            )
        console.print(table)
    console.print(_summary_table(stats, peak_rss_mb()))
    if files.overlays_written:
        console.print(f"overlays: {files.overlays_written} written to {overlays_dir}")


@app.command()
def bench(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    recipe: RecipeOpt = DEFAULT_RECIPE,
    repeats: Annotated[int, typer.Option(min=1, help="Passes over the images.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report.")] = None,
) -> None:
    """Per-stage latency p50/p99, throughput, peak memory, and overhead vs bare session.run."""
    from cellinspect.runtime.bench import run_bench
    from cellinspect.runtime.inspector import Inspector

    with user_errors():
        inspector = Inspector.from_recipe(recipe)
        with progress_bar() as progress:
            task = progress.add_task("benchmarking", total=None)
            report = run_bench(
                inspector,
                paths,
                repeats,
                lambda d, t: progress.update(task, completed=d, total=t),
            )
    data = report.to_dict()
    table = Table(title=f"bench: {report.images} images x {report.repeats} passes")
    table.add_column("stage")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    stages = data["stages_ms"]
    assert isinstance(stages, dict)
    for stage_name, values in stages.items():
        table.add_row(stage_name, f"{values['p50']:.3f}", f"{values['p99']:.3f}")
    table.add_row(
        "bare session.run",
        f"{report.median(report.bare_run_ms):.3f}",
        f"{report.p99(report.bare_run_ms):.3f}",
    )
    table.add_row(
        "end to end (decode+total)",
        f"{report.median(report.end_to_end_ms):.3f}",
        f"{report.p99(report.end_to_end_ms):.3f}",
    )
    console.print(table)
    console.print(
        f"end-to-end / bare session.run: {report.e2e_to_bare:.3f}  "
        f"(pipeline overhead {report.overhead_ratio * 100:.1f}% of session.run)"
    )
    console.print(f"pipeline throughput: {report.pipeline_throughput:.1f} images/s")
    console.print(f"peak memory: {report.peak_rss_mb:.0f} MB")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="Folder to write images and labels.csv into.")],
    count: Annotated[int, typer.Option(min=0, help="Number of parts.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same parts.")] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Defective share.")] = 0.4,
    class_folders: Annotated[
        bool, typer.Option(help="Write good/, scratch/, ... sub-folders (for training).")
    ] = False,
    classes: Annotated[
        list[str] | None, typer.Option("--class", help="Only these defect classes (repeat).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a set generated before in the same folder.")
    ] = False,
    image_format: Annotated[
        str, typer.Option("--format", help="png (compressed) or bmp (uncompressed, fast).")
    ] = "png",
) -> None:
    """Render synthetic flange parts (good and defective) with labels and true dimensions."""
    from cellinspect.datagen.flange import DEFECT_CLASSES, generate_dataset

    with user_errors(), progress_bar() as progress:
        task = progress.add_task("rendering", total=count)
        labels = generate_dataset(
            out,
            count=count,
            seed=seed,
            defect_rate=defect_rate,
            layout="class_folders" if class_folders else "flat",
            progress=lambda d, t: progress.update(task, completed=d, total=t),
            classes=tuple(classes) if classes else DEFECT_CLASSES,
            overwrite=overwrite,
            image_format=image_format,  # type: ignore[arg-type]  # checked by generate_dataset
        )
    console.print(f"wrote {count} parts; labels in {labels}")


def _reader(recipe: Path | None, roi: str | None) -> RoiReader:
    from cellinspect.config import load_recipe
    from cellinspect.training.dataset import RoiReader

    return RoiReader(load_recipe(recipe) if recipe else None, roi)


@app.command("fit-anomaly")
def fit_anomaly_cmd(
    good: Annotated[Path, typer.Option("--good", help="Folder of good images only.")],
    out: Annotated[Path, typer.Option("--out", help="models/<name>/<version> folder.")],
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="Cut images as this recipe does (recommended)."),
    ] = None,
    roi: Annotated[str | None, typer.Option(help="ROI of the recipe to fit for.")] = None,
    backbone: Annotated[Path, typer.Option(help="Backbone features model.")] = Path(
        "models/efficientnet-lite0/1/model.onnx"
    ),
    name: Annotated[str | None, typer.Option(help="Model name (default: folder name).")] = None,
    coreset: Annotated[int, typer.Option(min=1, help="Memory bank size (patches).")] = 2000,
    projection_dim: Annotated[int, typer.Option(min=0, help="0: no projection.")] = 96,
    seed: Annotated[int, typer.Option()] = 0,
    position_norm: PositionNormOpt = False,
    bags: BagsOpt = 1,
    detector: DetectorOpt = "patchcore",
    groups: GroupsOpt = 1,
    top_k: TopKOpt = 1,
    cross_fit: CrossFitOpt = None,
) -> None:
    """Teach an anomaly detector from a folder of good parts (no torch needed)."""
    from cellinspect.training.anomaly_params import AnomalyFitParams
    from cellinspect.training.dataset import good_images
    from cellinspect.training.fit_anomaly import fit_anomaly

    with user_errors():
        reader = _reader(recipe, roi)
        dataset = good_images(good)
        params = AnomalyFitParams(
            coreset_size=coreset,
            projection_dim=projection_dim or None,
            seed=seed,
            position_norm=position_norm,
            bags=bags,
            detector=detector,
            groups=groups,
            top_k=top_k,
            cross_fit=cross_fit,
        )
        with progress_bar() as progress:
            rep = fit_anomaly(
                dataset,
                reader,
                backbone,
                out,
                name or out.parent.name,
                out.name,
                params,
                stage_progress(progress),
            )
    for path, reason in rep.skipped:
        err_console.print(f"skipped {path}: {reason}", highlight=False)
    console.print(
        f"wrote {rep.model_path}: {rep.images_used} good images ({rep.bank_images} bank, "
        f"{rep.holdout_images} held out), {rep.summary}"
    )


@app.command("fit-classifier")
def fit_classifier_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Class folders or labels.csv folder.")],
    out: Annotated[Path, typer.Option("--out", help="models/<name>/<version> folder.")],
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r")] = None,
    roi: Annotated[str | None, typer.Option()] = None,
    backbone: Annotated[Path, typer.Option()] = Path("models/efficientnet-lite0/1/model.onnx"),
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fit a defect classifier head on backbone features (no torch needed)."""
    from cellinspect.training.dataset import load_dataset
    from cellinspect.training.fit_classifier import fit_classifier

    with user_errors():
        reader = _reader(recipe, roi)
        dataset = load_dataset(dataset_dir)
        with progress_bar() as progress:
            rep = fit_classifier(
                dataset,
                reader,
                backbone,
                out,
                name or out.parent.name,
                out.name,
                stage=stage_progress(progress),
            )
    console.print(
        f"wrote {rep.model_path}: classes {list(rep.labels)}, counts {rep.counts}, "
        f"train accuracy {rep.train_accuracy:.3f}"
    )


@app.command("convert-backbone")
def convert_backbone_cmd(
    out: Annotated[Path, typer.Option("--out")] = Path("models/efficientnet-lite0/1"),
    size: Annotated[int, typer.Option(help="Input size in pixels.")] = 224,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
) -> None:
    """One-time conversion of the pretrained EfficientNet-Lite0 to ONNX (needs torch)."""
    try:
        from cellinspect.training.convert_backbone import convert_backbone
    except ImportError as err:
        raise fail(f"{err}; install the conversion extra: pip install -e '.[convert]'") from err
    with user_errors():
        path = convert_backbone(
            out, image_size=size, opset=opset, progress=lambda msg: console.print(msg)
        )
    console.print(f"wrote {path}")


@app.command()
def quantize(
    model: Annotated[Path, typer.Option("--model", help="Folder of the FP32 features model.")],
    images: Annotated[Path, typer.Option("--images", help="Calibration images (folder).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the INT8 model.")],
    min_cosine: Annotated[float, typer.Option(help="Refuse below this fidelity.")] = 0.97,
    held_out_every: Annotated[int, typer.Option(min=2, help="Hold out every Nth image.")] = 4,
    keep_projections_fp32: Annotated[bool, typer.Option()] = False,
) -> None:
    """Static INT8 (QDQ) quantisation of a features model, checked against FP32."""
    from cellinspect.training.feed import list_images
    from cellinspect.training.quantize import quantize_features

    with user_errors():
        path = quantize_features(
            model,
            out,
            list_images(images),
            min_cosine=min_cosine,
            held_out_every=held_out_every,
            keep_projections_fp32=keep_projections_fp32,
            progress=lambda msg: console.print(msg),
        )
    console.print(f"wrote {path}")


@app.command("quantize-model")
def quantize_model_cmd(
    model: Annotated[Path, typer.Argument(help="Deployed model.onnx (manifest beside it).")],
    calibration: Annotated[
        Path, typer.Option("--calibration", help="Images to calibrate on (dataset folder).")
    ],
    evaluation: Annotated[
        Path, typer.Option("--evaluate", help="Labelled set to evaluate FP32 and INT8 on.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder of the INT8 copy.")],
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "-r",
            help="Cut images as this recipe does (the one the model was fitted "
            "through; its manifest's 'preprocess' must match).",
        ),
    ] = None,
    roi: Annotated[str | None, typer.Option(help="ROI of the recipe.")] = None,
    max_loss: Annotated[
        float, typer.Option(min=0.0, help="Refuse a copy that loses more AUROC/accuracy.")
    ] = 0.01,
) -> None:
    """INT8 copy of a deployed model, evaluated before and after on the same images."""
    from cellinspect.training.dataset import load_dataset
    from cellinspect.training.quantize_model import quantize_model

    with user_errors():
        reader = _reader(recipe, roi)
        with progress_bar() as progress:
            rep = quantize_model(
                model,
                out,
                load_dataset(calibration),
                load_dataset(evaluation),
                reader,
                max_loss=max_loss,
                stage=stage_progress(progress),
            )
    table = Table(title=f"{model} FP32 vs {rep.model_path} INT8 on {rep.int8.images} images")
    for col in ("", "FP32", "INT8"):
        table.add_column(col, justify="right")

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("AUROC", fmt(rep.fp32.auroc), fmt(rep.int8.auroc))
    if (
        rep.auroc_change_ci95 is not None
        and rep.fp32.auroc is not None
        and rep.int8.auroc is not None
    ):
        low, high = rep.auroc_change_ci95
        table.add_row(
            "AUROC change, 95 % paired interval",
            "",
            f"{rep.int8.auroc - rep.fp32.auroc:+.4f} ({low:+.4f} to {high:+.4f})",
        )
    table.add_row("accuracy", fmt(rep.fp32.accuracy), fmt(rep.int8.accuracy))
    table.add_row(
        "escape rate", fmt(rep.fp32.escape_rate_at_review), fmt(rep.int8.escape_rate_at_review)
    )
    table.add_row(
        "good sent to review/fail",
        fmt(rep.fp32.good_flagged_rate_at_review),
        fmt(rep.int8.good_flagged_rate_at_review),
    )
    table.add_row("session.run ms (median)", f"{rep.fp32_ms:.2f}", f"{rep.int8_ms:.2f}")
    console.print(table)


@app.command()
def models(
    root: Annotated[Path, typer.Argument(help="Folder holding <name>/<version>/.")] = Path(
        "models"
    ),
) -> None:
    """List the model versions under models/ with task, hash and recorded metrics."""
    from cellinspect.inference.manifest import MANIFEST_NAME, load_manifest, sha256_file

    table = Table(title=f"models in {root}")
    for col in ("name", "version", "task", "sha256", "matches", "parent", "metrics"):
        table.add_column(col)
    found = sorted(root.glob(f"*/*/{MANIFEST_NAME}"))
    if not found:
        raise fail(f"{root}: no models (expected {root}/<name>/<version>/{MANIFEST_NAME})")
    for manifest_path in found:
        model_path = manifest_path.with_name("model.onnx")
        try:
            manifest = load_manifest(model_path)
        except CellInspectError as err:
            table.add_row(
                manifest_path.parent.parent.name,
                manifest_path.parent.name,
                "?",
                "",
                "no",
                "",
                str(err).splitlines()[0],
            )
            continue
        metrics = manifest.provenance.get("metrics", {})
        shown = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in metrics.items()
            if isinstance(v, int | float)
        }
        table.add_row(
            manifest.name,
            manifest.version,
            manifest.task.value,
            manifest.sha256[:12],
            "yes" if sha256_file(model_path) == manifest.sha256 else "NO",
            str(manifest.provenance.get("parent_version", "")),
            json.dumps(shown),
        )
    console.print(table)


@app.command("build-default-models")
def build_default_models_cmd(
    recipe: RecipeOpt = DEFAULT_RECIPE,
    models_dir: Annotated[Path, typer.Option(help="Where models/<name>/1 go.")] = Path("models"),
    work_dir: Annotated[
        Path, typer.Option(help="Scratch folder for the rendered training/validation parts.")
    ] = Path("runs/default-models"),
    backbone: Annotated[Path, typer.Option()] = Path("models/efficientnet-lite0/1/model.onnx"),
    train_count: Annotated[int, typer.Option(min=20)] = 600,
    val_count: Annotated[int, typer.Option(min=20)] = 300,
) -> None:
    """Rebuild the shipped flange models from rendered parts, with validation figures."""
    from cellinspect.config import load_recipe
    from cellinspect.training.defaults import DefaultModelsPlan, build_default_models

    with user_errors():
        loaded = load_recipe(recipe)
        plan = DefaultModelsPlan(train_count=train_count, val_count=val_count)
        with progress_bar() as progress:
            rep = build_default_models(
                loaded, models_dir, work_dir, backbone, plan, stage_progress(progress)
            )
    console.print(f"anomaly detector: {rep.anomaly_path}")
    console.print(
        f"  validation AUROC {rep.anomaly_eval.auroc:.4f} on {rep.anomaly_eval.images} unseen "
        f"parts; thresholds review_at {rep.review_at}, fail_at {rep.fail_at}"
    )
    console.print(f"classifier: {rep.classifier_path}")
    console.print(f"  validation accuracy {rep.classifier_eval.accuracy:.4f}")


_mount_sub_apps()


def main() -> None:
    """Console-script entry point."""
    app()
