"""`cellinspect run` with trigger mode plc, driven over real Modbus TCP as a PLC would.

Each test starts the station as a subprocess (station files ask for Modbus port 0 and read the
bound port from the `running` log record) and talks to it with the project's Modbus client:
either step by step through the documented handshake (`HandshakePlc`: part id, TRIGGER, wait
for TRIGGER_ACK, drop TRIGGER, wait for RESULTS_VALID, read the result block, RESULTS_ACK) or
with the simulated PLC (`SimPlc`: conveyor, photo-eye, scan loop). What the PLC read is then
compared with what the station stored, after the station has exited. No mocks, and no
assertion on how fast anything happens: waits have generous timeouts only.

A "busy" station is provoked without a race: with a hot-folder source in trigger mode plc,
an accepted trigger waits for its frame until a file arrives, so the part stays in flight
(BUSY) for as long as the test keeps the folder empty.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cellinspect.entities import Verdict
from cellinspect.line.config import LineConfig
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.modbus_adapter import ModbusClient
from cellinspect.plc.registers import (
    DEFECT_DEADLINE_MISSED,
    STATION_BLOCK,
    Command,
    Control,
    ErrorCode,
    Reg,
    ResultCode,
    Status,
    defect_code,
    pack_u32,
    unpack_u32,
)
from cellinspect.plc.sim_camera import rendered_catalog
from cellinspect.plc.sim_plc import PlcConfig, SimPlc
from cellinspect.storage.records import StoredResult
from tests.conftest import ROOT
from tests.station.runner import StationProcess, stored_results, write_station

STATION_ID = "test-station"
SEED = 0
DEFECT_RATE = 0.3
PART_COUNT = 2000  # parts the synthetic camera can render (part ids 1..PART_COUNT)
WAIT_S = 60.0  # the longest any single handshake step may take before the test gives up
RECIPE_1 = ROOT / "recipes" / "flange.yaml"
RECIPE_2 = ROOT / "recipes" / "flange-measure.yaml"
SAMPLE = ROOT / "sample_images" / "part_0001_good.bmp"


# --------------------------------------------------------------------------- the PLC side


@dataclass(frozen=True, slots=True)
class PlcRead:
    """One result block exactly as the PLC read it (HR104-110)."""

    part_id: int
    encoder: int
    code: ResultCode
    defect: int | None  # None: not known (SimPlc keeps the code only)
    inspection_id: int | None


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What the station answered to a command: status bits, HR101 and HR102."""

    completed: bool
    failed: bool
    error: ErrorCode
    recipe: int
    status: Status


def _reg(inputs: list[int], reg: Reg, count: int = 1) -> list[int]:
    i = reg - STATION_BLOCK[0]
    return inputs[i : i + count]


class HandshakePlc:
    """A PLC program reduced to the documented handshake, one step at a time."""

    def __init__(self, port: int) -> None:
        self.client = ModbusClient("127.0.0.1", port, timeout_s=5.0)
        self.client.connect()
        self.control = Control.TRIGGER_ENABLE
        self._write_control()
        self.inspection_id = _reg(self.inputs(), Reg.INSPECTION_ID)[0]

    def close(self) -> None:
        self.client.close()

    def inputs(self) -> list[int]:
        return self.client.read(*STATION_BLOCK)

    def status(self) -> Status:
        return Status(self.inputs()[0])

    def _write_control(self) -> None:
        self.client.write(Reg.CONTROL, [int(self.control)])

    def set(self, bits: Control) -> None:
        self.control |= bits
        self._write_control()

    def clear(self, bits: Control) -> None:
        self.control &= ~bits
        self._write_control()

    def wait(self, what: str, test: Callable[[list[int]], bool]) -> list[int]:
        """Poll the station block until `test` holds (a timeout only guards against a hang)."""
        end = time.monotonic() + WAIT_S
        while True:
            inputs = self.inputs()
            if test(inputs):
                return inputs
            if time.monotonic() > end:
                raise AssertionError(f"PLC: no {what} in {WAIT_S} s (status {Status(inputs[0])!r})")
            time.sleep(0.005)

    # ------------------------------------------------------------------ parts

    def trigger(self, part_id: int, encoder: int = 0) -> int:
        """Latch a part id and raise TRIGGER; returns the acquisition id the station acked.

        Like a PLC, it waits for TRIGGER_READY first: after a missed deadline the PLC has
        NO RESULT while the station stays BUSY until the late inspection is done.
        """
        before = self.wait("TRIGGER_READY", lambda r: bool(Status(r[0]) & Status.TRIGGER_READY))
        acq_before = _reg(before, Reg.ACQUISITION_ID)[0]
        missed_before = _reg(before, Reg.MISSED_TRIGGERS)[0]
        self.client.write(Reg.PART_ID, [*pack_u32(part_id), *pack_u32(encoder)])
        self.set(Control.TRIGGER)
        inputs = self.wait(
            "trigger ack or missed trigger",
            lambda r: (
                (
                    bool(Status(r[0]) & Status.TRIGGER_ACK)
                    and _reg(r, Reg.ACQUISITION_ID)[0] != acq_before
                )
                or _reg(r, Reg.MISSED_TRIGGERS)[0] != missed_before
            ),
        )
        assert _reg(inputs, Reg.MISSED_TRIGGERS)[0] == missed_before, (
            f"trigger for part {part_id} missed (status {Status(inputs[0])!r})"
        )
        return _reg(inputs, Reg.ACQUISITION_ID)[0]

    def drop_trigger(self) -> None:
        self.clear(Control.TRIGGER)
        self.wait("TRIGGER_ACK low", lambda r: not Status(r[0]) & Status.TRIGGER_ACK)

    def take_result(self) -> PlcRead:
        """Wait for the next posted result, read the block, acknowledge it."""
        previous = self.inspection_id
        inputs = self.wait(
            "result",
            lambda r: (
                bool(Status(r[0]) & Status.RESULTS_VALID)
                and _reg(r, Reg.INSPECTION_ID)[0] != previous
            ),
        )
        self.inspection_id = _reg(inputs, Reg.INSPECTION_ID)[0]
        read = PlcRead(
            part_id=unpack_u32(_reg(inputs, Reg.PART_ID_ECHO, 2)),
            encoder=unpack_u32(_reg(inputs, Reg.ENCODER_ECHO, 2)),
            code=ResultCode(_reg(inputs, Reg.RESULT)[0]),
            defect=_reg(inputs, Reg.DEFECT_CODE)[0],
            inspection_id=self.inspection_id,
        )
        self.set(Control.RESULTS_ACK)
        self.wait("RESULTS_VALID low", lambda r: not Status(r[0]) & Status.RESULTS_VALID)
        self.clear(Control.RESULTS_ACK)
        return read

    def inspect(self, part_id: int, encoder: int = 0) -> PlcRead:
        """One part through the whole handshake."""
        self.trigger(part_id, encoder)
        self.drop_trigger()
        return self.take_result()

    # ------------------------------------------------------------------ commands

    def command(self, command: int, arg: int) -> CommandReply:
        """HR1/HR2, rising EXECUTE_COMMAND, wait for completed or failed, then drop it."""
        self.client.write(Reg.COMMAND, [command, arg])
        self.set(Control.EXECUTE_COMMAND)
        inputs = self.wait(
            "command completed or failed",
            lambda r: bool(Status(r[0]) & (Status.COMMAND_COMPLETED | Status.COMMAND_FAILED)),
        )
        status = Status(inputs[0])
        reply = CommandReply(
            completed=bool(status & Status.COMMAND_COMPLETED),
            failed=bool(status & Status.COMMAND_FAILED),
            error=ErrorCode(_reg(inputs, Reg.ERROR_CODE)[0]),
            recipe=_reg(inputs, Reg.RECIPE)[0],
            status=status,
        )
        self.clear(Control.EXECUTE_COMMAND)
        self.wait(
            "command bits low",
            lambda r: not Status(r[0]) & (Status.COMMAND_COMPLETED | Status.COMMAND_FAILED),
        )
        return reply

    def select_recipe(self, number: int) -> CommandReply:
        return self.command(Command.SELECT_RECIPE, number)


# --------------------------------------------------------------------------- station files


def plc_station(folder: Path, recipes: dict[int, Path] | None = None, **fields: Any) -> Path:
    """A PLC-triggered station on a free Modbus port with synthetic parts, API off."""
    catalog = recipes or {1: RECIPE_1, 2: RECIPE_2}
    data: dict[str, Any] = {
        "station_id": STATION_ID,
        "recipes": {n: str(p) for n, p in catalog.items()},
        "active_recipe": 1,
        "source": {
            "type": "synthetic",
            "count": PART_COUNT,
            "seed": SEED,
            "defect_rate": DEFECT_RATE,
        },
        "trigger": {"mode": "plc"},
        "modbus": {"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": 30.0},
        "api": {"enabled": False},
    }
    data.update(fields)
    return write_station(folder / "station.yaml", **data)


def broken_recipe(folder: Path) -> Path:
    """A valid copy of the flange recipe whose anomaly model file does not exist.

    The catalog validates recipe files when the station starts, but models are only loaded
    when a recipe goes live, so this one passes the start and fails at select.
    """
    data = yaml.safe_load(RECIPE_1.read_text(encoding="utf-8"))
    base = RECIPE_1.parent

    def absolute(value: str) -> str:
        return str((base / value).resolve())

    data["name"] = "flange-broken"
    data["source"]["path"] = absolute(data["source"]["path"])
    for key in ("calibration", "plane_calibration", "handeye_calibration"):
        data[key] = absolute(data[key])
    for model in data["models"]:
        model["path"] = absolute(model["path"])
    data["models"][0]["path"] = str(folder / "missing" / "model.onnx")
    path = folder / "flange-broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def drop_image(folder: Path, name: str) -> None:
    """Put one sample image into a hot folder atomically (written aside, then renamed)."""
    tmp = folder / f".{name}.tmp"
    shutil.copyfile(SAMPLE, tmp)
    tmp.rename(folder / name)


# --------------------------------------------------------------------------- checks


def by_part(results: list[StoredResult]) -> dict[int, StoredResult]:
    """Stored results keyed by part id; each part must have been stored exactly once."""
    out: dict[int, StoredResult] = {}
    for stored in results:
        part_id = stored.result.part_id
        assert part_id is not None, f"stored result without part id: {stored.result.result_id}"
        assert part_id not in out, f"part {part_id} stored twice"
        out[part_id] = stored
    return out


def assert_same_verdict(read: PlcRead, stored: StoredResult) -> None:
    """The verdict the PLC read is the one the station stored for that part."""
    result = stored.result
    assert result.part_id == read.part_id
    assert result.encoder == read.encoder
    if read.code is ResultCode.NO_RESULT:
        # Deadline missed: the PLC got NO RESULT; the store keeps a non-PASS verdict with why.
        assert result.verdict is not Verdict.PASS, (read, result)
        assert result.error is not None and "NO RESULT" in result.error, result.error
        assert read.defect in (None, DEFECT_DEADLINE_MISSED)
        return
    assert read.code is ResultCode.from_verdict(result.verdict), (read, result.verdict)
    if read.defect is not None:
        assert read.defect == defect_code(result.verdict, result.defect_class, result.error)


# --------------------------------------------------------------------------- tests


def test_plc_verdicts_match_the_store(tmp_path: Path) -> None:
    """N parts through the handshake: every verdict the PLC read is stored for its part."""
    station = plc_station(tmp_path)
    part_ids = [5, 1, 2, 17, 400, 401, 33, 1999, 8, 9]  # any order: the PLC's id picks the part
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            reads = [plc.inspect(pid, encoder=10_000 + i) for i, pid in enumerate(part_ids)]
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
        stopped = proc.stopped()["status"]

    assert [r.part_id for r in reads] == part_ids
    assert [r.encoder for r in reads] == [10_000 + i for i in range(len(part_ids))]
    first = reads[0].inspection_id
    assert first is not None
    assert [r.inspection_id for r in reads] == [first + i for i in range(len(part_ids))]

    stored = stored_results(tmp_path / "data")
    assert len(stored) == len(part_ids)
    assert by_part(stored_results(tmp_path / "data", STATION_ID)).keys() == set(part_ids)
    parts = by_part(stored)
    names = rendered_catalog(PART_COUNT, SEED, DEFECT_RATE)
    for read in reads:
        result = parts[read.part_id].result
        assert_same_verdict(read, parts[read.part_id])
        assert result.station_id == STATION_ID
        assert result.line == "test-line"
        assert result.recipe_name == "flange-default"
        assert result.path == names.name(read.part_id)  # the part the PLC named was rendered
    assert stopped["parts"] == len(part_ids)
    assert stopped["links"]["store"] == {
        "state": "ok",
        "written": len(part_ids),
        "spilled": 0,
        "dropped": 0,
        "deferred": 0,
        "replayed": 0,
    }


def test_recipe_select_over_modbus(tmp_path: Path) -> None:
    """Command 1: an unknown number, an unknown command and a recipe that fails to load
    leave recipe 1 running; a select while idle puts recipe 2 live for the following parts."""
    catalog = {1: RECIPE_1, 2: RECIPE_2, 3: broken_recipe(tmp_path)}
    station = plc_station(tmp_path, recipes=catalog)
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            assert _reg(plc.inputs(), Reg.RECIPE)[0] == 1
            before = plc.inspect(1)

            unknown = plc.select_recipe(9)
            assert unknown.failed and not unknown.completed
            assert unknown.error is ErrorCode.RECIPE_NOT_FOUND
            assert unknown.recipe == 1

            other = plc.command(7, 2)  # no command 7 in the register map
            assert other.failed and other.error is ErrorCode.UNKNOWN_COMMAND
            assert other.recipe == 1

            broken = plc.select_recipe(3)
            assert broken.failed and not broken.completed
            assert broken.error is ErrorCode.RECIPE_LOAD_FAILED
            assert broken.recipe == 1
            still_one = plc.inspect(2)

            selected = plc.select_recipe(2)
            assert selected.completed and not selected.failed, selected
            assert selected.error is ErrorCode.NONE
            assert selected.recipe == 2
            assert _reg(plc.inputs(), Reg.RECIPE)[0] == 2
            after = [plc.inspect(3), plc.inspect(4)]
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
        stopped = proc.stopped()["status"]

    assert stopped["recipe"] == {"number": 2, "name": "flange-measure"}
    parts = by_part(stored_results(tmp_path / "data"))
    assert parts.keys() == {1, 2, 3, 4}
    for read in [before, still_one, *after]:
        assert_same_verdict(read, parts[read.part_id])
        assert parts[read.part_id].result.station_id == STATION_ID
    assert parts[1].result.recipe_name == "flange-default"
    assert parts[2].result.recipe_name == "flange-default"
    assert parts[3].result.recipe_name == "flange-measure"
    assert parts[4].result.recipe_name == "flange-measure"
    assert parts[2].result.recipe_sha256 == parts[1].result.recipe_sha256
    assert parts[3].result.recipe_sha256 != parts[1].result.recipe_sha256


def hot_folder_station(folder: Path, frame_timeout_ms: float) -> tuple[Path, Path]:
    """A PLC-triggered station whose camera is a hot folder (`inbox`): a part waits for its file."""
    inbox = folder / "inbox"
    inbox.mkdir()
    station = plc_station(
        folder,
        source={
            "type": "hot_folder",
            "path": str(inbox),
            "pattern": "*.bmp",
            "settle_ms": 50,
            "poll_ms": 20,
        },
        trigger={"mode": "plc", "frame_timeout_ms": frame_timeout_ms},
    )
    return station, inbox


def test_recipe_select_while_a_part_is_in_flight_is_refused(tmp_path: Path) -> None:
    """A part waiting for its frame keeps the station BUSY; command 1 then answers busy."""
    station, inbox = hot_folder_station(tmp_path, frame_timeout_ms=600_000)
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            plc.trigger(101)
            plc.drop_trigger()
            assert plc.status() & Status.BUSY  # the job waits for a file that is not there

            refused = plc.select_recipe(2)
            assert refused.failed and not refused.completed
            assert refused.error is ErrorCode.COMMAND_REFUSED_BUSY
            assert refused.recipe == 1
            assert refused.status & Status.BUSY  # still the same part in flight

            drop_image(inbox, "a.bmp")
            in_flight = plc.take_result()
            plc.wait("BUSY low", lambda r: not Status(r[0]) & Status.BUSY)

            selected = plc.select_recipe(2)  # idle now: the same command goes through
            assert selected.completed and selected.error is ErrorCode.NONE
            assert selected.recipe == 2

            plc.trigger(102)
            plc.drop_trigger()
            drop_image(inbox, "b.bmp")
            next_part = plc.take_result()
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()

    assert in_flight.part_id == 101
    assert next_part.part_id == 102
    parts = by_part(stored_results(tmp_path / "data"))
    assert parts.keys() == {101, 102}
    assert_same_verdict(in_flight, parts[101])
    assert_same_verdict(next_part, parts[102])
    assert parts[101].result.recipe_name == "flange-default"
    assert parts[102].result.recipe_name == "flange-measure"
    assert parts[101].result.path == str(inbox / "a.bmp")
    assert parts[102].result.path == str(inbox / "b.bmp")


def test_sigterm_while_the_plc_triggers_loses_no_read_verdict(tmp_path: Path) -> None:
    """SimPlc runs its conveyor; SIGTERM lands mid-run (a part in flight if we catch one).

    The station exits 0 and every result block the PLC read is in the store, same part id,
    same verdict.
    """
    station = plc_station(tmp_path)
    config = LineConfig(parts=400, rate_per_min=240.0, seed=SEED, defect_rate=DEFECT_RATE)
    labels = rendered_catalog(config.parts, SEED, DEFECT_RATE).labels
    belt = place_parts(labels, config.pitch_mm, seed=SEED, jitter=config.spacing_jitter)
    with StationProcess(station) as proc:
        proc.wait_running()
        port = proc.port("modbus")
        plc = SimPlc("127.0.0.1", port, belt, config.conveyor(), PlcConfig(scan_ms=10.0))
        watcher = ModbusClient("127.0.0.1", port, timeout_s=5.0)
        plc.start()
        try:
            watcher.connect()
            end = time.monotonic() + 120.0
            # Enough results read, then the next moment a part is in flight.
            while plc.snapshot().results < 4 or not (
                Status(watcher.read(Reg.STATUS, 1)[0]) & Status.BUSY
            ):
                assert plc.error is None, plc.error
                assert time.monotonic() < end, f"PLC read too few results\n{proc.log_text()}"
                time.sleep(0.002)
            watcher.close()
            code = proc.stop(signal.SIGTERM)
        finally:
            watcher.close()
            plc.stop()
            assert plc.join(timeout=30)
        assert code == 0, proc.log_text()
        stopped = proc.stopped()["status"]

    assert plc.error is None
    read = {
        log.part_id: log.result if log.result is not None else log.late_result
        for log in plc.logs.values()
        if log.result is not None or log.late_result is not None
    }
    assert len(read) >= 4
    assert plc.snapshot().unmatched_results == 0
    everything = stored_results(tmp_path / "data")
    # A trigger that came while the station was busy is a stored fail-safe row of its own
    # ("missed trigger: ..."), never PASS, and not one of the parts the station judged.
    missed = [s for s in everything if "missed trigger" in (s.result.error or "")]
    assert all(s.result.verdict is not Verdict.PASS for s in missed)
    parts = by_part([s for s in everything if s not in missed])
    for part_id, code_read in read.items():
        assert code_read is not None
        stored = parts.get(part_id)
        assert stored is not None, f"part {part_id}: the PLC read {code_read.name}, not stored"
        trigger_encoder = plc.logs[part_id].trigger_encoder
        assert trigger_encoder is not None
        # SimPlc keeps the result code only; the defect code is checked by the other tests.
        assert_same_verdict(PlcRead(part_id, trigger_encoder, code_read, None, None), stored)
        assert stored.result.station_id == STATION_ID
    # Every trigger the station acknowledged (the part in flight at SIGTERM among them) was
    # finished and stored, and nothing the station counted is missing from the store.
    accepted = {log.part_id for log in plc.logs.values() if log.accepted}
    assert accepted <= parts.keys(), sorted(accepted - parts.keys())
    assert stopped["parts"] == len(parts)
    assert stopped["links"]["store"]["written"] == len(everything)
    assert stopped["links"]["store"]["dropped"] == 0
