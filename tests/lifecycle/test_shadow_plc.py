"""A shadow on a PLC-driven line: the PLC reads the same result blocks with and without it.

The station runs in-process with its Modbus server on a free port and synthetic parts
rendered on the PLC's part ids; the simulated PLC (`SimPlc`: conveyor, photo-eye, trigger
handshake, reject gate) drives two parts a second over real Modbus TCP, so there are gaps
between parts as on a conveyor. The same parts run twice: without a shadow, and with the
tight-threshold candidate judging beside the live model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.line.config import LineConfig
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.registers import ResultCode
from cellinspect.plc.sim_camera import rendered_catalog
from cellinspect.plc.sim_plc import PlcConfig, SimPlc
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from tests.conftest import ROOT
from tests.lifecycle.test_shadow_station import SLOT, package_sha, seal_candidate, shadow_rows
from tests.station.runner import stored_results, write_station

SEED = 0
DEFECT_RATE = 0.3
PARTS = 8
# Two parts a second: gaps of 0.35 s or more (150 mm pitch less its 30 % jitter, at 300 mm/s)
# in which the shadow runs, several times the ~40 ms the candidate needs (at 60/min the two
# runs took 21 s for the same check)
RATE_PER_MIN = 120.0

pytestmark = pytest.mark.slow


def run_line(folder: Path, candidate: Path | None) -> tuple[dict[int, ResultCode | None], Path]:
    """The result code the PLC read per part id, and the station's data_dir."""
    folder.mkdir()
    path = write_station(
        folder / "station.yaml",
        recipes={1: str(ROOT / "recipes" / "flange.yaml")},
        source={"type": "synthetic", "count": 200, "seed": SEED, "defect_rate": DEFECT_RATE},
        trigger={"mode": "plc"},
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": 30.0},
    )
    config = LineConfig(parts=PARTS, rate_per_min=RATE_PER_MIN, seed=SEED, defect_rate=DEFECT_RATE)
    labels = rendered_catalog(config.parts, SEED, DEFECT_RATE).labels
    belt = place_parts(labels, config.pitch_mm, seed=SEED, jitter=config.spacing_jitter)
    with StationRuntime(load_station(path)) as runtime:
        if candidate is not None:
            runtime.set_shadow(SLOT, candidate, "tight")
        assert runtime.modbus_port is not None
        plc = SimPlc(
            "127.0.0.1", runtime.modbus_port, belt, config.conveyor(), PlcConfig(scan_ms=10.0)
        )
        plc.start()
        try:
            assert plc.join(timeout=180), "the line did not finish"
        finally:
            plc.stop()
        assert plc.error is None, plc.error
        assert runtime.interface.wait_idle(60)
        if runtime.shadow is not None:
            assert runtime.shadow.wait_idle(60)
    return {part_id: log.result for part_id, log in plc.logs.items()}, path.parent / "data"


def test_the_plc_reads_the_same_results_with_a_shadow(tmp_path: Path) -> None:
    candidate = seal_candidate(tmp_path, review_at=0.2, fail_at=0.3)
    without, plain_data = run_line(tmp_path / "plain", None)
    with_shadow, data = run_line(tmp_path / "shadow", candidate)

    assert all(code is not None for code in without.values()), without  # every part judged
    assert with_shadow == without
    plain = {s.result.part_id: s.result.verdict for s in stored_results(plain_data)}
    stored = stored_results(data)
    assert {s.result.part_id: s.result.verdict for s in stored} == plain
    rows = shadow_rows(data)
    assert sorted(r["live_result_id"] for r in rows) == sorted(s.result.result_id for s in stored)
    assert {r["candidate_sha256"] for r in rows} == {package_sha(candidate)}
    for row in rows:  # judged, or skipped with a reason; never both
        assert (row["verdict"] is None) == (row["skipped_reason"] is not None)
