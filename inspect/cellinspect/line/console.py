"""Rich output for `cellinspect line` (a live progress line and the final table) and for
`cellinspect plc-sim` (its counters as a table)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cellinspect.line.audit import LineReport
from cellinspect.line.cell import LineProgress
from cellinspect.plc.sim_plc import PlcCounters


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def report_table(report: LineReport) -> Table:
    """The end-of-run table: counts against ground truth, timing, and the audit verdict."""
    table = Table(title="cellinspect line", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("parts", f"{report.gated} / {report.parts}"),
        (
            "rate (asked / achieved)",
            f"{report.rate_per_min:.0f} / {report.achieved_per_min:.0f} per min",
        ),
        (
            "pass / fail / review",
            f"{report.results_pass} / {report.results_fail} / {report.results_review}",
        ),
        ("no result (deadline)", str(report.no_results)),
        ("gate: passed / rejected", f"{report.passed} / {report.rejected}"),
        ("correct rejects", str(report.correct_rejects)),
        ("escapes (defective passed)", str(report.escapes)),
        ("false rejects (good rejected)", str(report.false_rejects)),
        ("late results", str(report.late_results)),
        ("missed triggers", str(report.missed_triggers)),
        ("fail-safe rejects", str(report.fail_safe_rejects)),
        ("tracking errors", str(report.tracking_errors)),
        (
            "latency p50 / p99 (trigger to PLC)",
            f"{_ms(report.latency_p50_ms)} / {_ms(report.latency_p99_ms)}",
        ),
        ("inspection p50 / p99", f"{_ms(report.inspect_p50_ms)} / {_ms(report.inspect_p99_ms)}"),
        ("  of it session.run p50 / p99", f"{_ms(report.run_p50_ms)} / {_ms(report.run_p99_ms)}"),
        ("deadline", _ms(report.deadline_ms)),
        (
            "link errors / reconnects / station errors",
            f"{report.link_errors} / {report.reconnects} / {report.station_errors}",
        ),
    ]
    if report.robot_sent is not None:
        rows.append(
            (
                "robot picks sent / acknowledged / timed out",
                f"{report.robot_sent} / {report.robot_acknowledged} / {report.robot_timed_out}",
            )
        )
    if report.drift is not None:
        rows += report.drift.rows()
    for name, value in rows:
        table.add_row(name, value)
    verdict = (
        "every gate action matched its part's verdict"
        if report.audit_ok
        else (f"{len(report.mismatches)} gate action(s) did not match the verdict")
    )
    table.add_row("audit", Text(verdict, style="green" if report.audit_ok else "bold red"))
    return table


def plc_counters_table(c: PlcCounters) -> Table:
    """The end-of-run table of `plc-sim`: what the simulated PLC saw and did, against the
    ground truth of the part plan; link and timing faults in red when there were any."""
    table = Table(title="cellinspect plc-sim", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("parts at the gate / planned", f"{c.gated} / {c.parts_total}"),
        ("parts seen by the photo-eye", str(c.seen)),
        (
            "results: pass / fail / review",
            f"{c.results_pass} / {c.results_fail} / {c.results_review}",
        ),
        ("results in all", str(c.results)),
        ("gate: passed / rejected", f"{c.passed} / {c.rejected}"),
        ("correct rejects", str(c.correct_rejects)),
        ("escapes (defective passed)", str(c.escapes)),
        ("false rejects (good rejected)", str(c.false_rejects)),
    ]
    faults: list[tuple[str, int]] = [
        ("no result (deadline)", c.no_results),
        ("late results", c.late_results),
        ("unmatched results", c.unmatched_results),
        ("missed triggers", c.missed_triggers),
        ("tracking errors", c.tracking_errors),
        ("link errors", c.link_errors),
        ("reconnects", c.reconnects),
        ("station errors", c.station_errors),
        ("buffer overruns", c.buffer_overruns),
        ("scan overruns", c.scan_overruns),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for name, count in faults:
        table.add_row(name, Text(str(count), style="bold red" if count else ""))
    table.add_row("PLC scans", str(c.scans))
    return table


def progress_text(p: LineProgress) -> Text:
    c = p.plc
    return Text(
        f"{p.elapsed_s:6.1f} s  parts {c.gated}/{c.parts_total} at gate, {c.seen} seen  "
        f"pass {c.results_pass} fail {c.results_fail} review {c.results_review}  "
        f"rejected {c.rejected}  escapes {c.escapes}  late {c.no_results + c.late_results}  "
        f"missed {c.missed_triggers}"
    )


@contextmanager
def live_progress(console: Console | None = None) -> Iterator[Callable[[LineProgress], None]]:
    """A progress callback for run_cell that redraws one status line in place."""
    console = console or Console()
    with Live(Text("starting the cell ..."), console=console, refresh_per_second=4) as live:

        def update(p: LineProgress) -> None:
            live.update(progress_text(p))

        yield update
