"""The simulated cell end to end: station, Modbus, simulated PLC, conveyor and gate, with faults.

Every run checks the audit: the gate's action on every part follows the station's verdict for
that very part, and no defective part passes, whatever fault was injected.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from cellinspect.entities import ImageU8, InspectedFrame
from cellinspect.line.audit import LineReport
from cellinspect.line.cell import LineProgress, run_cell
from cellinspect.line.config import LineConfig
from cellinspect.line.console import progress_text, report_table
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.registers import ResultCode
from cellinspect.plc.sim_camera import FolderCatalog
from cellinspect.plc.sim_plc import FaultKind, LinkFault, SimPlc
from tests.fakes import BlobInspector, write_samples

LABELS = ["good", "scratch", "good", "good", "dent", "good", "good", "crack", "good", "good"]


@pytest.fixture
def catalog(tmp_path: Path) -> FolderCatalog:
    return FolderCatalog(write_samples(tmp_path / "samples", LABELS))


def fast(**kw: object) -> LineConfig:
    """A short, quick line: parts close together and a short way from eye to gate."""
    base: dict[str, object] = dict(
        parts=20,
        rate_per_min=900.0,
        gate_travel_s=0.5,
        deadline_ms=200.0,
        heartbeat_timeout_s=0.25,
    )
    base.update(kw)
    return LineConfig(**base)  # type: ignore[arg-type]


def defective_passed(report: LineReport) -> int:
    return sum(1 for a in report.audit if a.label != "good" and not a.gate_reject)


def test_small_line_run_matches_every_verdict(catalog: FolderCatalog) -> None:
    results: list[InspectedFrame] = []
    progress: list[LineProgress] = []
    report = run_cell(
        fast(parts=30),
        BlobInspector(),
        catalog=catalog,
        on_result=results.append,
        progress=progress.append,
        progress_every_s=0.1,
    )
    assert report.gated == 30 and report.audit_ok, report.mismatches
    defects = sum(1 for i in range(1, 31) if catalog.label(i) != "good")
    assert report.correct_rejects == defects and report.escapes == 0
    # A good part is only rejected fail-safe (a trigger missed on a loaded machine), never
    # on a verdict: this inspector judges these pictures without error.
    assert report.false_rejects <= report.fail_safe_rejects
    assert (
        report.results_pass + report.results_fail + report.no_results + report.missed_triggers == 30
    )
    assert report.latency_p50_ms is not None and report.latency_p99_ms is not None
    assert report.latency_p50_ms <= report.latency_p99_ms < report.deadline_ms
    # each missed trigger is a stored fail-safe row of its own, beside the judged parts
    judged = [r for r in results if "missed trigger" not in (r.result.error or "")]
    assert len(judged) == 30 - report.missed_triggers
    assert progress and progress[-1].plc.gated == 30
    for entry in report.audit:
        assert entry.station is entry.received
        assert entry.gate_reject is (entry.station is not ResultCode.PASS)  # None: missed


def test_plc_disconnect_and_reconnect_lets_no_defect_pass(catalog: FolderCatalog) -> None:
    fault = LinkFault(FaultKind.DISCONNECT, start_s=0.4, duration_s=0.5)
    report = run_cell(fast(parts=25, faults=(fault,)), BlobInspector(), catalog=catalog)
    assert report.reconnects >= 1 and report.station_errors >= 1  # heartbeat lost meanwhile
    assert report.missed_triggers > 0  # parts passed the eye while the link was down
    assert report.audit_ok, report.mismatches
    assert report.escapes == 0 and defective_passed(report) == 0
    assert report.fail_safe_rejects >= report.missed_triggers


def test_heartbeat_stall_lets_no_defect_pass(catalog: FolderCatalog) -> None:
    fault = LinkFault(FaultKind.HEARTBEAT_STALL, start_s=0.3, duration_s=0.6)
    report = run_cell(fast(parts=25, faults=(fault,)), BlobInspector(), catalog=catalog)
    assert report.station_errors >= 1
    assert report.audit_ok, report.mismatches
    assert report.escapes == 0 and defective_passed(report) == 0
    assert report.gated == 25


def test_camera_dropping_frames_lets_no_defect_pass(catalog: FolderCatalog) -> None:
    report = run_cell(
        fast(parts=20, drop_probability=0.4, seed=2), BlobInspector(), catalog=catalog
    )
    dropped = [a for a in report.audit if a.station is ResultCode.FAIL and a.label == "good"]
    assert dropped  # good parts whose frame was lost are failed, not passed
    assert report.audit_ok and report.escapes == 0
    assert report.false_rejects == len(dropped)


class SlowOnSomeParts(BlobInspector):
    """Misses the deadline on every third part (takes longer than the deadline allows)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        if part_id is not None and part_id % 3 == 0:
            threading.Event().wait(self.delay_s)
        return super().inspect_image(image, name, part_id, encoder)


def test_inference_overrunning_its_deadline_fires_the_gate(catalog: FolderCatalog) -> None:
    report = run_cell(
        fast(parts=12, rate_per_min=300.0, deadline_ms=60.0),
        SlowOnSomeParts(0.15),
        catalog=catalog,
    )
    no_result = [a for a in report.audit if a.station is ResultCode.NO_RESULT]
    assert {a.part_id for a in no_result} == {3, 6, 9, 12}
    assert all(a.gate_reject for a in no_result)
    assert report.late_results == len(no_result)
    assert report.audit_ok and report.escapes == 0 and not report.clean


def test_tracking_survives_the_encoder_wrap(catalog: FolderCatalog) -> None:
    report = run_cell(
        fast(parts=15, encoder_offset=2**32 - 20_000), BlobInspector(), catalog=catalog
    )
    assert report.audit_ok and report.tracking_errors == 0
    assert all(a.station is a.received for a in report.audit)


def test_stop_event_ends_the_run_early(catalog: FolderCatalog) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    started = time.monotonic()
    report = run_cell(
        fast(parts=500, rate_per_min=300.0), BlobInspector(), catalog=catalog, stop=stop
    )
    timer.cancel()
    assert report.gated < 500 and time.monotonic() - started < 30
    assert not report.audit_ok  # not every part went through


def test_no_station_at_all_rejects_every_part() -> None:
    with socketless_port() as port:
        parts = place_parts(["good", "dent", "good"], 150.0, seed=0)
        plc = SimPlc("127.0.0.1", port, parts, fast().conveyor())
        plc.run()
    assert plc.counters.rejected == 3 and plc.counters.passed == 0
    assert plc.counters.missed_triggers == 3 and plc.counters.link_errors > 0


class socketless_port:  # noqa: N801 - used as a context manager
    """A port nobody listens on (bound and closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parts": 0}, "parts"),
        ({"rate_per_min": 0}, "rate"),
        ({"deadline_ms": 600.0, "gate_travel_s": 0.5}, "deadline"),
    ],
)
def test_line_config_refuses_nonsense(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LineConfig(**kwargs)  # type: ignore[arg-type]


def test_report_table_renders(catalog: FolderCatalog) -> None:
    report = run_cell(fast(parts=6), BlobInspector(), catalog=catalog)
    console = Console(record=True, width=120)
    console.print(report_table(report))
    text = console.export_text()
    for word in ("escapes", "false rejects", "late results", "missed triggers", "p50", "audit"):
        assert word in text
    assert "every gate action matched" in text


def _grey_samples(folder: Path, labels: list[str]) -> Path:
    """Mid-grey parts; a defect is a bright square (what the brightness model scores)."""
    folder.mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for i, label in enumerate(labels):
            img = np.random.default_rng(i).integers(124, 132, (64, 64, 3), dtype=np.uint8)
            if label != "good":
                img[16:48, 16:48] = 255
            cv2.imwrite(str(folder / f"{i}.png"), img)
            w.writerow([f"{i}.png", label])
    return folder


def test_line_with_the_real_inspector_on_a_real_model(
    tmp_path: Path, brightness_model: Path
) -> None:
    from cellinspect.runtime.inspector import Inspector

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: line-test\nmodels:\n  - name: brightness\n    path: {brightness_model}\n"
        "runtime:\n  deadline_ms: 300\n",
        encoding="utf-8",
    )
    inspector = Inspector.from_recipe(recipe)
    catalog = FolderCatalog(_grey_samples(tmp_path / "grey", LABELS))
    report = run_cell(fast(parts=20), inspector, catalog=catalog)
    assert report.audit_ok, report.mismatches
    assert report.escapes == 0 and report.false_rejects <= report.fail_safe_rejects
    assert report.correct_rejects == sum(1 for i in range(1, 21) if catalog.label(i) != "good")
    assert report.results_review == 0 and report.no_results == 0
    # the line reports session.run inside its inspections; each run lies within its inspection
    assert report.run_p50_ms is not None and report.inspect_p50_ms is not None
    assert 0 < report.run_p50_ms <= report.inspect_p50_ms
    console = Console(record=True, width=120)
    console.print(report_table(report))
    assert f"{report.run_p50_ms:.1f} ms" in console.export_text()
    assert (
        "parts"
        in progress_text(
            LineProgress(
                1.0, fast(), SimPlc("127.0.0.1", 1, [], fast().conveyor()).snapshot(), False
            )
        ).plain
    )
