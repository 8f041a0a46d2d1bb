"""`cellinspect train`, `cellinspect evaluate` (with split, plots) and the shared report table.

Registered on the main app by `cli/root.py` through `register(app)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cellinspect.cli.support import (
    AugmentOpt,
    BagsOpt,
    CrossFitOpt,
    DetectorOpt,
    EmaDecayOpt,
    GroupsOpt,
    PoolingOpt,
    PositionNormOpt,
    ResizeOpt,
    TileScaleOpt,
    TopKOpt,
    console,
    err_console,
    print_input_notes,
    progress_bar,
    reader_for,
    resize_choice,
    stage_progress,
    user_errors,
)

if TYPE_CHECKING:
    from cellinspect.training.evaluate import EvaluationReport
    from cellinspect.training.thresholds import ThresholdChoice

BACKBONE = Path("models/efficientnet-lite0/1/model.onnx")
RecipeOpt = Annotated[
    Path | None, typer.Option("--recipe", "-r", help="Cut images as this recipe does.")
]
RoiOpt = Annotated[str | None, typer.Option("--roi", help="ROI of the recipe.")]
SplitOpt = Annotated[
    Path | None, typer.Option("--split", help="split.json recorded beside a model.")
]
TargetEscapeOpt = Annotated[
    float,
    typer.Option(
        "--target-escape",
        min=0.0001,
        max=0.5,
        help="Thresholds written: expected escape rate (defects passed) at most this, set on "
        "images not fitted (all calibration defects caught when too few for it).",
    ),
]
TargetFalseRejectOpt = Annotated[
    float,
    typer.Option(
        "--target-false-reject",
        min=0.0001,
        max=0.5,
        help="Without defective calibration images: review_at so that at most this share of "
        "good parts is not passed (expected).",
    ),
]


def print_fitted_thresholds(choice: ThresholdChoice, where: str) -> None:
    """The thresholds a fitting command wrote, the rates expected from them, and why they may
    be rough (too few calibration images)."""
    table = Table(title=f"thresholds written, set on {where} ({choice.method})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    escape = (
        "not measured"
        if choice.n_defect == 0
        else f"{choice.escape_rate_calibration:.4f} (target {choice.target_escape})"
    )
    for key, value in (
        ("calibration images (good / defective)", f"{choice.n_good} / {choice.n_defect}"),
        (
            "review_at (PASS below) / fail_at (FAIL from)",
            f"{choice.review_at:.6g} / {choice.fail_at:.6g}",
        ),
        ("guarantee", choice.guarantee),
        ("escape rate on the calibration part", escape),
        ("expected false-reject rate (good not passed)", f"{choice.false_reject_rate:.4f}"),
        ("good parts failed outright", f"{choice.good_fail_rate:.4f}"),
    ):
        table.add_row(key, value)
    console.print(table)
    for warning in choice.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def print_detector_choice(model_path: Path) -> None:
    """Which detector `--detector auto` kept and why, as the manifest records it (nothing for
    an explicit --detector)."""
    from cellinspect.inference.manifest import load_manifest
    from cellinspect.training.detector_choice import choice_rows

    record = load_manifest(model_path).provenance.get("detector_choice")
    if not isinstance(record, dict):
        return
    table = Table(
        title=f"--detector auto: candidates fitted on {record.get('fit_images')} good parts, "
        f"scored on {record.get('held_back_good')} held back and "
        f"{record.get('synthetic_anomalies')} synthetic anomalies drawn on them"
    )
    table.add_column("candidate")
    table.add_column("settings")
    table.add_column("synthetic AUROC", justify="right")
    table.add_column("", overflow="fold")
    for row in choice_rows(record):
        table.add_row(*row)
    console.print(table)
    console.print(f"chose {record.get('reason')}", highlight=False)


PER_TYPE_KEYS = ("auroc", "recall_at_review", "recall_at_fail")


def report_table(rep: EvaluationReport) -> Table:
    """One table for every evaluation: rates, per-class precision/recall."""
    from cellinspect.training.intervals import with_interval

    where = f" ({rep.subset} split)" if rep.subset else ""
    table = Table(title=f"{rep.model} v{rep.version} ({rep.task}) on {rep.images} images{where}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("counts", json.dumps(rep.counts))
    if rep.auroc is not None:
        table.add_row("image AUROC [95 % interval]", with_interval(rep.auroc, rep.auroc_ci95))
    if rep.accuracy is not None:
        table.add_row("accuracy [95 % interval]", with_interval(rep.accuracy, rep.accuracy_ci95))
    rows = (
        ("review_at / fail_at", None),
        ("escape rate (defects passed)", rep.escape_rate_at_review),
        ("good parts sent to review or fail", rep.good_flagged_rate_at_review),
        ("escape rate at fail_at", rep.escape_rate_at_fail),
        ("false-reject rate at fail_at", rep.false_reject_rate_at_fail),
        ("false-reject rate catching every defect", rep.false_reject_rate_catch_all),
    )
    for label, value in rows:
        if label.startswith("review_at") and rep.threshold_review is not None:
            table.add_row(label, f"{rep.threshold_review:.4g} / {rep.threshold_fail:.4g}")
        elif value is not None:
            table.add_row(label, f"{value:.4f}")
    for lbl, pr in rep.per_class.items():
        table.add_row(
            f"{lbl}: precision / recall (n={int(pr['support'])})",
            f"{pr['precision']:.3f} / {pr['recall']:.3f}",
        )
    for kind, fig in rep.per_defect_type.items():
        shown = ["-" if fig[k] is None else f"{fig[k]:.3f}" for k in PER_TYPE_KEYS]
        table.add_row(
            f"{kind} (n={fig['count']}): AUROC / caught at review / fail",
            " / ".join(shown),
        )
    return table


def evaluate(
    model: Annotated[Path, typer.Argument(help="model.onnx (manifest beside it).")],
    dataset_dir: Annotated[
        Path, typer.Argument(help="Class folders, labels.csv folder, or CSV/JSONL manifest.")
    ],
    recipe: RecipeOpt = None,
    roi: RoiOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report.")] = None,
    split: SplitOpt = None,
    subset: Annotated[str, typer.Option(help="train, val or test (with --split).")] = "test",
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Write roc.png, scores.png, confusion.png.")
    ] = None,
) -> None:
    """Evaluate a model on a labelled set: rates at its thresholds, AUROC, per-class figures."""
    from cellinspect.training.dataset import load_labelled
    from cellinspect.training.evaluate import evaluate_model
    from cellinspect.training.split import load_split

    with user_errors():
        reader = reader_for(recipe, roi, dataset_dir)
        dataset = load_labelled(dataset_dir)
        if split is not None:
            dataset = load_split(split).subset(dataset, subset)
        with progress_bar() as progress:
            rep = evaluate_model(model, dataset, reader, stage=stage_progress(progress))
        rep.subset = subset if split is not None else None
    for path, reason in rep.skipped:
        err_console.print(f"skipped {path}: {reason}", highlight=False)
    console.print(report_table(rep))
    print_input_notes()
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(rep.to_dict(), indent=2) + "\n", encoding="utf-8")
    if plots is not None:
        from cellinspect.training.plots import write_plots

        for png in write_plots(rep, plots):
            console.print(f"wrote {png}")


def train(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Class folders, labels.csv folder, or CSV/JSONL manifest.")
    ],
    out: Annotated[Path, typer.Option("--out", help="models/<name>/<version> folder.")],
    kind: Annotated[str, typer.Option(help="classifier or anomaly.")] = "classifier",
    method: Annotated[str, typer.Option(help="head (no torch) or finetune (torch).")] = "head",
    recipe: RecipeOpt = None,
    roi: RoiOpt = None,
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs (at most).")] = 15,
    parent: Annotated[
        str | None, typer.Option(help="Parent version (default: the backbone's).")
    ] = None,
    split: SplitOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    backbone: Annotated[Path, typer.Option(help="Backbone features model.")] = BACKBONE,
    name: Annotated[str | None, typer.Option(help="Model name (default: folder name).")] = None,
    schedule: Annotated[
        str, typer.Option(help="finetune: learning rate constant, or cosine with warm-up.")
    ] = "constant",
    image_size: Annotated[
        int | None,
        typer.Option(min=32, help="finetune: square input size (default: the backbone's)."),
    ] = None,
    ema_decay: EmaDecayOpt = None,
    pooling: PoolingOpt = "mean",
    position_norm: PositionNormOpt = False,
    bags: BagsOpt = 1,
    detector: DetectorOpt = "auto",
    groups: GroupsOpt = 1,
    top_k: TopKOpt = 1,
    cross_fit: CrossFitOpt = None,
    augment: AugmentOpt = "",
    target_escape: TargetEscapeOpt = 0.01,
    target_false_reject: TargetFalseRejectOpt = 0.05,
    resize: ResizeOpt = "letterbox",
    tile_scale: TileScaleOpt = 1.0,
) -> None:
    """Train a classifier or anomaly detector on a recorded split, set its thresholds on the
    val part, evaluate on the test part."""
    from cellinspect.errors import ConfigError
    from cellinspect.training.bank_augment import parse_augment
    from cellinspect.training.dataset import load_labelled
    from cellinspect.training.fit_calibration import CalibrationTargets
    from cellinspect.training.train import Kind, Method, TrainPlan, train_model

    with user_errors():
        try:
            plan = TrainPlan(
                kind=Kind(kind),
                method=Method(method),
                epochs=epochs,
                seed=seed,
                parent=parent,
                split_file=split,
                schedule=schedule,
                image_size=image_size,
                ema_decay=ema_decay,
                pooling=pooling,
                position_norm=position_norm,
                bags=bags,
                detector=detector,
                groups=groups,
                top_k=top_k,
                cross_fit=cross_fit,
                augment=parse_augment(augment),
                targets=CalibrationTargets(target_escape, target_false_reject),
                resize=resize_choice(resize),
                tile_scale=tile_scale,
            )
        except ValueError as err:
            raise ConfigError(
                f"--kind must be classifier|anomaly and --method head|finetune ({err})"
            ) from err
        reader = reader_for(recipe, roi, dataset_dir)
        dataset = load_labelled(dataset_dir)
        with progress_bar() as progress:
            res = train_model(
                dataset,
                reader,
                backbone,
                out,
                name or out.parent.name,
                plan,
                stage_progress(progress),
            )
    for path, reason in res.skipped:
        err_console.print(f"skipped {path}: {reason}", highlight=False)
    console.print(f"split {res.split_path}: {json.dumps(res.split_counts)}")
    print_detector_choice(res.model_path)
    print_fitted_thresholds(res.thresholds, "the val split")
    console.print(report_table(res.test))
    print_input_notes()
    console.print(f"wrote {res.model_path}")


def ensemble(
    models: Annotated[
        list[Path], typer.Argument(help="Classifier model.onnx files (manifests beside them).")
    ],
    out: Annotated[Path, typer.Option("--out", help="models/<name>/<version> folder.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: folder name).")] = None,
) -> None:
    """Merge classifiers into one graph that averages their probabilities (one session.run)."""
    from cellinspect.training.ensemble import ensemble_classifiers

    with user_errors():
        path = ensemble_classifiers(models, out, name or out.parent.name, out.name)
    console.print(f"wrote {path}: mean of {len(models)} classifiers")


def register(app: typer.Typer) -> None:
    """Add `train`, `evaluate` and `ensemble` to the main app."""
    app.command("evaluate")(evaluate)
    app.command("train")(train)
    app.command("ensemble")(ensemble)
