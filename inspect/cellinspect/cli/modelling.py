"""Models without a training run: fit a detector or a head, convert, quantise, list, rebuild.

`fit-anomaly`, `fit-classifier`, `convert-backbone`, `quantize`, `quantize-model`, `models` and
`build-default-models`; `train`, `evaluate` and `ensemble` are in `cli/train.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from cellinspect.cli import shadow
from cellinspect.cli.support import (
    DEFAULT_RECIPE,
    AugmentOpt,
    BagsOpt,
    CrossFitOpt,
    DetectorOpt,
    GroupsOpt,
    PositionNormOpt,
    RecipeOpt,
    ResizeOpt,
    TileScaleOpt,
    TopKOpt,
    console,
    err_console,
    fail,
    print_input_notes,
    progress_bar,
    reader_for,
    resize_choice,
    stage_progress,
    user_errors,
)
from cellinspect.cli.train import (
    TargetEscapeOpt,
    TargetFalseRejectOpt,
    print_detector_choice,
    print_fitted_thresholds,
)
from cellinspect.errors import CellInspectError

if TYPE_CHECKING:
    from cellinspect.inference.manifest import Manifest


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
    detector: DetectorOpt = "auto",
    groups: GroupsOpt = 1,
    top_k: TopKOpt = 1,
    cross_fit: CrossFitOpt = None,
    augment: AugmentOpt = "",
    defects: Annotated[
        Path | None,
        typer.Option(
            "--defects",
            help="Folder of defective images, only to set review_at for --target-escape "
            "(never fitted). Without it review_at is set for --target-false-reject.",
        ),
    ] = None,
    calibration_fraction: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=0.5,
            help="Share of the good images kept apart (seeded by --seed) to set thresholds on.",
        ),
    ] = 0.2,
    target_escape: TargetEscapeOpt = 0.01,
    target_false_reject: TargetFalseRejectOpt = 0.05,
    resize: ResizeOpt = "letterbox",
    tile_scale: TileScaleOpt = 1.0,
) -> None:
    """Teach an anomaly detector from a folder of good parts (no torch needed); thresholds are
    set on good parts kept apart (and --defects)."""
    from cellinspect.inference.manifest import TileSpec
    from cellinspect.training.anomaly_params import AnomalyFitParams
    from cellinspect.training.bank_augment import parse_augment
    from cellinspect.training.dataset import good_images
    from cellinspect.training.fit_calibration import CalibrationTargets, fit_anomaly_calibrated

    with user_errors():
        reader = reader_for(recipe, roi, good)
        dataset = good_images(good)
        bad = good_images(defects) if defects is not None else None
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
            augment=parse_augment(augment),
        )
        with progress_bar() as progress:
            fitted = fit_anomaly_calibrated(
                dataset,
                bad,
                reader,
                backbone,
                out,
                name or out.parent.name,
                out.name,
                params,
                calibration_fraction,
                CalibrationTargets(target_escape, target_false_reject),
                stage_progress(progress),
                resize=resize_choice(resize),
                tile=TileSpec(scale=tile_scale),
            )
    rep = fitted.report
    for path, reason in rep.skipped:
        err_console.print(f"skipped {path}: {reason}", highlight=False)
    console.print(
        f"wrote {rep.model_path}: fitted on {rep.images_used} good images ({rep.bank_images} "
        f"bank, {rep.holdout_images} held out for the score scale), {rep.summary}"
    )
    print_detector_choice(rep.model_path)
    where = f"{fitted.calibration_good} good images kept apart"
    if fitted.calibration_defects:
        where += f" and {fitted.calibration_defects} from --defects"
    print_fitted_thresholds(fitted.thresholds, where)
    print_input_notes()


def fit_classifier_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="Class folders or labels.csv folder.")],
    out: Annotated[Path, typer.Option("--out", help="models/<name>/<version> folder.")],
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r")] = None,
    roi: Annotated[str | None, typer.Option()] = None,
    backbone: Annotated[Path, typer.Option()] = Path("models/efficientnet-lite0/1/model.onnx"),
    name: Annotated[str | None, typer.Option()] = None,
    resize: ResizeOpt = "letterbox",
) -> None:
    """Fit a defect classifier head on backbone features (no torch needed)."""
    from cellinspect.training.dataset import load_dataset
    from cellinspect.training.fit_classifier import fit_classifier

    with user_errors():
        reader = reader_for(recipe, roi, dataset_dir)
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
                resize=resize_choice(resize),
            )
    console.print(
        f"wrote {rep.model_path}: classes {list(rep.labels)}, counts {rep.counts}, "
        f"train accuracy {rep.train_accuracy:.3f}"
    )
    print_input_notes()


def convert_backbone_cmd(
    variant: Annotated[
        str, typer.Option(help="Backbone size: lite0 (224 px), lite1 (240 px) or lite2 (260 px).")
    ] = "lite0",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder; default models/efficientnet-<variant>/1."),
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Input size in pixels; default the variant's own.")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
) -> None:
    """One-time conversion of a pretrained EfficientNet-Lite to ONNX (needs torch)."""
    if variant not in ("lite0", "lite1", "lite2"):
        raise fail(f"--variant {variant!r}: choose lite0, lite1 or lite2")
    try:
        from cellinspect.training.convert_backbone import convert_backbone
    except ImportError as err:
        raise fail(f"{err}; install the conversion extra: pip install -e '.[convert]'") from err
    with user_errors():
        try:
            path = convert_backbone(
                out,
                image_size=size,
                opset=opset,
                progress=lambda msg: console.print(msg),
                variant=variant,
            )
        except ValueError as err:  # a bad --size
            raise fail(str(err)) from err
    console.print(f"wrote {path}")


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
        reader = reader_for(recipe, roi)
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


def lineage(manifest: Manifest) -> tuple[str, str]:
    """(derived from, backbone) as the manifest records them, each 'name/version' or "".

    A quantised or retrained copy names its parent version (of the same model unless it says
    otherwise); a detector or head fitted on a backbone's features names that backbone, which
    is a feature extractor it depends on, not an earlier version of it. Older manifests gave the
    backbone as parent_version too: it is shown once, as the backbone.
    """
    prov = manifest.provenance
    raw = prov.get("backbone")
    backbone = f"{raw.get('name', '?')}/{raw.get('version', '?')}" if isinstance(raw, dict) else ""
    parent = str(prov.get("parent_version") or "")
    if parent and "/" not in parent:
        parent = f"{manifest.name}/{parent}"
    return ("" if parent == backbone else parent), backbone


def _metrics_lines(manifest: Manifest) -> list[tuple[str, str]]:
    metrics = manifest.provenance.get("metrics", {})
    return [
        (key, f"{value:.4f}" if isinstance(value, float) else str(value))
        for key, value in metrics.items()
        if isinstance(value, int | float)
    ]


def models_tables(root: Path) -> list[Table]:
    """The model versions under `root`, and their recorded metrics: both fit 80 columns
    (long names wrap inside their cells, nothing is cut)."""
    from cellinspect.inference.manifest import MANIFEST_NAME, SealState, load_manifest, seal_state

    found = sorted(root.glob(f"*/*/{MANIFEST_NAME}"))
    if not found:
        raise fail(f"{root}: no models (expected {root}/<name>/<version>/{MANIFEST_NAME})")
    rows: list[tuple[str, str, Text, Text]] = []
    metric_rows: list[tuple[str, str, str]] = []
    for manifest_path in found:
        model_path = manifest_path.with_name("model.onnx")
        try:
            manifest = load_manifest(model_path)
        except CellInspectError as err:
            shown = f"{manifest_path.parent.parent.name}/{manifest_path.parent.name}"
            rows.append((shown, "?", Text(""), Text(str(err).splitlines()[0], style="red")))
            continue
        shown = f"{manifest.name}/{manifest.version}"
        state = seal_state(model_path, manifest)
        bad = state in (SealState.MISMATCH, SealState.UNSEALED)
        digest = Text(f"{manifest.sha256[:8]}\n{state.value}", style="bold red" if bad else "")
        parent, backbone = lineage(manifest)
        lines = [f"from:\n{parent}"] if parent else []
        lines += [f"backbone:\n{backbone}"] if backbone else []
        rows.append((shown, manifest.task.value, digest, Text("\n".join(lines) or "-")))
        for i, (key, value) in enumerate(_metrics_lines(manifest)):
            metric_rows.append((shown if i == 0 else "", key, value))
    table = Table(title=f"models in {root}", show_lines=True)
    table.add_column("model", overflow="fold")
    table.add_column("task", overflow="fold")
    table.add_column("sha256", no_wrap=True)
    table.add_column("lineage", overflow="fold")
    for name, task, digest, lineage_text in rows:
        table.add_row(Text(name), task, digest, lineage_text)
    if not metric_rows:
        return [table]
    metrics = Table(title="recorded metrics")
    metrics.add_column("model", overflow="fold")
    metrics.add_column("metric", overflow="fold")
    metrics.add_column("value", justify="right", no_wrap=True)
    for name, key, value in metric_rows:
        metrics.add_row(Text(name), Text(key), value)
    return [table, metrics]


def models(
    root: Annotated[Path, typer.Argument(help="Folder holding <name>/<version>/.")] = Path(
        "models"
    ),
) -> None:
    """List the model versions under models/: task, hash and seal state, lineage, metrics."""
    for table in models_tables(root):
        console.print(table)


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


def _model_file(path: Path) -> Path:
    return path / "model.onnx" if path.is_dir() else path


def seal_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder or its .onnx file.")],
    by: Annotated[str, typer.Option("--by", help="Who vouches for this package (recorded).")],
    key: Annotated[
        Path | None, typer.Option("--key", help="ed25519 private key (PEM) to sign with.")
    ] = None,
) -> None:
    """Seal a reviewed model package (bytes + verdict fields, who, when); --key signs it."""
    from cellinspect.inference.manifest import load_manifest, load_private_key, write_manifest

    model_path = _model_file(model)
    with user_errors():
        manifest = load_manifest(model_path)
        private_key = load_private_key(key) if key is not None else None
        written = write_manifest(manifest, model_path, sealed_by=by, private_key=private_key)
        sealed = load_manifest(model_path).seal
    assert sealed is not None
    signed = f", signed by key {sealed.signature.key_id}" if sealed.signature else ""
    console.print(f"sealed {written}: package {sealed.package_sha256[:12]} by {by}{signed}")


def keygen_cmd(
    out: Annotated[Path, typer.Argument(help="OUT.pem (private, mode 600) and OUT.pub.pem.")],
) -> None:
    """Write an ed25519 key pair to sign models (station: trusted_model_keys: [OUT.pub.pem])."""
    from cellinspect.inference.manifest import write_key_pair

    with user_errors():
        private_path, public_path = write_key_pair(out)
    console.print(f"wrote {private_path} (private, mode 600) and {public_path}")


class _ListByDefault(TyperGroup):
    """`cellinspect models [ROOT]` lists; `models seal|keygen ...` are subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: click is vendored
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


models_app = typer.Typer(
    cls=_ListByDefault,
    help="List model versions (the default), seal and sign model packages.",
)
models_app.command("list")(models)
models_app.command("seal")(seal_cmd)
models_app.command("keygen")(keygen_cmd)
shadow.register(models_app)  # models shadow-report (cli/shadow.py)


def register(app: typer.Typer) -> None:
    """Add the model commands to the main app."""
    app.command("fit-anomaly")(fit_anomaly_cmd)
    app.command("fit-classifier")(fit_classifier_cmd)
    app.command("convert-backbone")(convert_backbone_cmd)
    app.command("quantize")(quantize)
    app.command("quantize-model")(quantize_model_cmd)
    app.add_typer(models_app, name="models")
    app.command("build-default-models")(build_default_models_cmd)
