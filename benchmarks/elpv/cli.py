"""`python -m benchmarks.elpv eval-elpv`: the shipped methods measured on real solar-cell images.

Formerly `cellinspect eval-elpv`; the command, its options and its help are the same.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cellinspect.cli.support import (
    CrossFitOpt,
    EmaDecayOpt,
    PoolingOpt,
    PositionNormOpt,
    console,
    progress_bar,
    stage_progress,
    user_errors,
)

app = typer.Typer(
    help="Benchmarks of the shipped methods on the elpv solar cells (not part of cellinspect).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(report: dict[str, Any]) -> Table:
    from cellinspect.training.intervals import with_interval

    refs = report["references"]
    table = Table(title=f"elpv evaluation (split {report['split']['sha256'][:12]})")
    for column in ("task", "figure", "value", "goal / reference"):
        table.add_column(column)
    cls = report.get("classification")
    if cls is not None:
        lat = cls["latency"]
        table.add_row(
            "classification",
            "accuracy [95 % interval]",
            with_interval(cls["accuracy"], cls["accuracy_ci95"]),
            f">= {refs['goal_accuracy']} (VGG19 {refs['deitsch2019_vgg19_gpu_accuracy']}, "
            f"SVM {refs['deitsch2019_svm_accuracy']})",
        )
        for member in cls.get("fits", []):  # each fine-tune alone, before the merged mean
            table.add_row(
                "",
                f"accuracy, fit seed {member['seed']} alone",
                with_interval(member["accuracy"], member["accuracy_ci95"]),
                "",
            )
        for kind, figures in cls["per_type"].items():
            table.add_row("", f"accuracy {kind}", _fmt(figures["accuracy"]), "")
        for expert, figures in cls["per_expert_probability"].items():
            table.add_row(
                "",
                f"accuracy, expert p = {expert}",
                f"{_fmt(figures['accuracy'])} ({figures['images']} cells)",
                "",
            )
        table.add_row("", "confusion [[TN FP] [FN TP]]", str(cls["confusion"]), "")
        table.add_row(
            "",
            "latency median / p99 (ms)",
            f"{lat['median_ms']:.1f} / {lat['p99_ms']:.1f}",
            f"<= {refs['goal_latency_ms']}",
        )
    ano = report.get("anomaly")
    if ano is not None:
        lat = ano["latency"]
        table.add_row(
            "anomaly",
            "AUROC (p >= 0.5) [95 % interval]",
            with_interval(ano["auroc"], ano["auroc_ci95"]),
            f">= {refs['goal_auroc']}",
        )
        table.add_row("", "AUROC (any defect, p > 0)", _fmt(ano["auroc_any_defect"]), "")
        for kind, value in ano["auroc_per_type"].items():
            table.add_row("", f"AUROC {kind}", _fmt(value), "")
        table.add_row(
            "", "latency median / p99 (ms)", f"{lat['median_ms']:.1f} / {lat['p99_ms']:.1f}", ""
        )
    table.add_row("", "wall time (s)", f"{report['seconds']:.0f}", "")
    return table


@app.command("eval-elpv")
def eval_elpv(
    out: Annotated[Path, typer.Option(help="Folder for split, models and report.")] = Path(
        "runs/elpv"
    ),
    task: Annotated[str, typer.Option(help="classification, anomaly or both.")] = "both",
    method: Annotated[
        str | None,
        typer.Option(
            help="Method: logistic-tta or finetune (classification; finetune needs torch), "
            "gaussian, patchcore or synthetic (anomaly; synthetic needs torch)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=4, help="Use a stratified subset of N images (tests).")
    ] = None,
    views: Annotated[
        int | None,
        typer.Option(help="Dihedral views averaged: 1, 2, 4 or 8 (default 8; finetune: 1)."),
    ] = None,
    coreset: Annotated[int, typer.Option(min=1, help="PatchCore bank size.")] = 4000,
    backbone: Annotated[
        Path | None, typer.Option(help="Classifier backbone (default: the INT8 one).")
    ] = None,
    anomaly_backbone: Annotated[
        Path | None, typer.Option(help="Anomaly backbone (default: the FP32 one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split and fitting seed.")] = 0,
    fit_seed: Annotated[
        int | None,
        typer.Option(
            help="Fitting seed alone (default: --seed), so that several fits can be compared "
            "on the one recorded split."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="finetune / synthetic: most epochs (12 / 8).")
    ] = None,
    schedule: Annotated[
        str, typer.Option(help="finetune: learning rate constant, or cosine with warm-up.")
    ] = "constant",
    image_size: Annotated[
        int | None,
        typer.Option(min=32, help="finetune: input size (default 224; the cells are 300)."),
    ] = None,
    soft_labels: Annotated[
        bool, typer.Option(help="finetune: learn the experts' defect probability, not p >= 0.5.")
    ] = False,
    balance: Annotated[bool, typer.Option(help="finetune: class-weighted loss.")] = True,
    train_batchnorm: Annotated[
        bool, typer.Option(help="finetune: let batch-norm statistics adapt to the EL images.")
    ] = False,
    lr_backbone: Annotated[
        float, typer.Option(min=0.0, help="finetune: peak learning rate of the backbone.")
    ] = 1e-4,
    patience: Annotated[
        int, typer.Option(min=1, help="finetune: epochs without a better validation loss.")
    ] = 3,
    ema_decay: EmaDecayOpt = None,
    pooling: PoolingOpt = "mean",
    fits: Annotated[
        int,
        typer.Option(
            min=1,
            help="finetune: this many fine-tunes (seeds --fit-seed onwards), each scored alone, "
            "merged into one graph averaging their probabilities.",
        ),
    ] = 1,
    stretch: Annotated[
        bool,
        typer.Option(
            help="anomaly: stretch each cell's 1-99 % grey levels to 0..255 first "
            "(a recipe 'stretch' op; the model's manifest records it)."
        ),
    ] = True,
    position_norm: PositionNormOpt = True,
    bags: Annotated[
        int | None, typer.Option(min=1, help="patchcore: bags (default 3); see fit-anomaly.")
    ] = None,
    groups: Annotated[
        int | None, typer.Option(min=1, help="gaussian: texture groups (default 2).")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="gaussian: score = mean of the top k (default 20).")
    ] = None,
    cross_fit: CrossFitOpt = None,
    projection_dim: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="anomaly: random projection of the 152 feature channels to this many "
            "(0: none; default: none for gaussian, 96 for patchcore).",
        ),
    ] = None,
) -> None:
    """Reproduce accuracy, AUROC and latency on the elpv solar cells (needs the eval extra)."""
    from benchmarks.elpv.classify import ClassifyParams
    from benchmarks.elpv.evaluate import (
        ANOMALY_METHODS,
        CLASSIFICATION_METHODS,
        DEFAULT_ANOMALY_BACKBONE,
        DEFAULT_CLASSIFIER_BACKBONE,
        ElpvEvalParams,
        default_anomaly_params,
        run_elpv_eval,
    )
    from cellinspect.config import StretchOp

    fitting = seed if fit_seed is None else fit_seed
    with user_errors():
        if method is not None and method not in (*CLASSIFICATION_METHODS, *ANOMALY_METHODS):
            raise typer.BadParameter(
                f"unknown method {method!r}; known: {CLASSIFICATION_METHODS + ANOMALY_METHODS}"
            )
        if method in CLASSIFICATION_METHODS and task == "both":
            task = "classification"
        if method in ANOMALY_METHODS and task == "both":
            task = "anomaly"
        finetune = None
        if method == "finetune":
            try:
                from benchmarks.elpv.finetune import ElpvFinetuneParams
            except ImportError as err:
                raise typer.BadParameter(
                    f"--method finetune needs torch ({err}): pip install -e '.[train]'"
                ) from err
            finetune = ElpvFinetuneParams(
                views=views or 1,
                seed=fitting,
                schedule=schedule,
                image_size=image_size,
                soft_labels=soft_labels,
                balance_classes=balance,
                train_batchnorm=train_batchnorm,
                lr_backbone=lr_backbone,
                patience=patience,
                ema_decay=ema_decay,
                pooling=pooling,
                fits=fits,
            )
        synthetic = None
        if method == "synthetic":
            try:
                from benchmarks.elpv.synthetic import SyntheticParams
            except ImportError as err:
                raise typer.BadParameter(
                    f"--method synthetic needs torch ({err}): pip install -e '.[train]'"
                ) from err
            synthetic = SyntheticParams(image_size=image_size, seed=fitting)
        if epochs is not None:  # else each method's own default
            finetune = finetune and replace(finetune, epochs=epochs)
            synthetic = synthetic and replace(synthetic, epochs=epochs)
        anomaly_method = method if method in ANOMALY_METHODS else ANOMALY_METHODS[0]
        anomaly = None
        if anomaly_method != "synthetic":
            base = default_anomaly_params(anomaly_method)
            anomaly = replace(
                base,
                coreset_size=coreset,
                seed=fitting,
                position_norm=position_norm,
                bags=base.bags if bags is None else bags,
                groups=base.groups if groups is None else groups,
                top_k=base.top_k if top_k is None else top_k,
                cross_fit=cross_fit,
                projection_dim=base.projection_dim
                if projection_dim is None
                else (projection_dim or None),
            )
            anomaly.check()
        params = ElpvEvalParams(
            out=out,
            task=task,
            classification_method=method if method in CLASSIFICATION_METHODS else "logistic-tta",
            finetune=finetune,
            anomaly_method=anomaly_method,
            synthetic=synthetic,
            classifier=ClassifyParams(views=views or 8, seed=fitting),
            anomaly=anomaly,
            classifier_backbone=backbone or DEFAULT_CLASSIFIER_BACKBONE,
            anomaly_backbone=anomaly_backbone or DEFAULT_ANOMALY_BACKBONE,
            anomaly_preprocess=(StretchOp(),) if stretch else (),
            limit=limit,
            seed=seed,
        )
        with progress_bar() as progress:
            report = run_elpv_eval(params, console.print, stage_progress(progress))
    console.print(_table(report))
    console.print(f"report: {out / 'report.json'}")


def main() -> None:
    """`python -m benchmarks.elpv`."""
    app()
