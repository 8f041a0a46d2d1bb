"""`cellinspect models shadow-report SLOT VERSION`: a shadow candidate against the live model.

Reads the station's store (the settings' data_dir or db_url), the same report as
GET /models/{slot}/shadow/{version}/report; `--json` prints it for scripts and the
promotion gate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cellinspect.cli.support import console, fail, user_errors

if TYPE_CHECKING:
    from cellinspect.lifecycle.shadow_report import ShadowReport


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_table(report: ShadowReport) -> Table:
    """The counts, live beside candidate where both apply."""
    table = Table(title=f"shadow {report.slot}@{report.version}", show_header=True)
    table.add_column("measure")
    table.add_column("live", justify="right")
    table.add_column("candidate", justify="right")
    agreement = "-" if report.agreement is None else f"{report.agreement:.1%}"
    table.add_row("compared parts", "", str(report.compared))
    table.add_row("agreed", "", f"{report.agreed} ({agreement})")
    table.add_row("QA reviewed", "", str(report.reviewed))
    table.add_row(
        "escapes (QA defect, PASS)", str(report.escapes_live), str(report.escapes_candidate)
    )
    table.add_row(
        "false rejects (QA good, FAIL)",
        str(report.false_rejects_live),
        str(report.false_rejects_candidate),
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped_by_reason.items()))
    table.add_row("skipped", "", f"{report.skipped}" + (f" ({reasons})" if reasons else ""))
    table.add_row(
        "latency p50 / p99 ms",
        "",
        f"{_ms(report.latency_p50_ms)} / {_ms(report.latency_p99_ms)}",
    )
    table.add_row("package sha256", "", ", ".join(s[:12] for s in report.candidate_sha256) or "-")
    return table


def disagreement_table(report: ShadowReport) -> Table:
    table = Table(title=f"{len(report.disagreements)} disagreement(s)", show_header=True)
    for name in ("live result", "live", "candidate", "scores live/cand", "QA", "image"):
        table.add_column(name)
    for d in report.disagreements:
        table.add_row(
            d.live_result_id,
            d.live_verdict.value,
            d.candidate_verdict.value,
            f"{_score(d.live_score)} / {_score(d.candidate_score)}",
            "-" if d.qa_label is None else d.qa_label.value,
            d.image_url or "-",
        )
    return table


def shadow_report_cmd(
    slot: Annotated[str, typer.Argument(help="Model slot: the model's name in the recipe.")],
    version: Annotated[str, typer.Argument(help="Candidate version as set for the shadow run.")],
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="Station settings (YAML); CELLINSPECT_* override."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="The station's data_dir (its store).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Agreement, escapes and false rejects against QA labels, latency, disagreements."""
    from cellinspect.lifecycle.shadow_report import shadow_report
    from cellinspect.settings import load_settings
    from cellinspect.storage.factory import open_store

    with user_errors():
        overrides = {} if data_dir is None else {"data_dir": data_dir}
        store = open_store(load_settings(settings_file, **overrides))
        try:
            report = shadow_report(store, slot, version)
        finally:
            store.close()
    if report.compared == 0 and report.skipped == 0:
        raise fail(f"no shadow results for model slot {slot!r} version {version!r}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console.print(summary_table(report))
    if report.disagreements:
        console.print(disagreement_table(report))


def register(models_app: typer.Typer) -> None:
    """Add `shadow-report` to the `models` group."""
    models_app.command("shadow-report")(shadow_report_cmd)
