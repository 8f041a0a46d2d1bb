"""Prometheus metrics of the station process: verdicts, latencies, links, queues, models.

Events (a result handed to the store, a part posted to the PLC) are counted where they
happen, in the runtime's hooks. States (links, queues, journal, heartbeat, alarms, the live
models) are read when Prometheus scrapes, by a collector, so a scrape shows the state of that
moment and nothing polls in between. The metrics belong to no registry of their own: the
runtime registers them into its API's registry, so `GET /metrics` of a running station carries
them beside the HTTP metrics. Label values are bounded: verdicts and reason kinds are fixed
sets, defect classes and model names come from the loaded models (capped, then "other").
docs/metrics.md lists every metric.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cellinspect.entities import InspectedFrame, InspectionResult
from cellinspect.plc.handshake import StationState
from cellinspect.sources.base import SourceState
from cellinspect.station.robot_link import LinkState

if TYPE_CHECKING:
    from cellinspect.plc.station_interface import StationRecord
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

PREFIX = "cellinspect_station"
REASON_KINDS = ("none", "deadline", "acquisition", "missed_trigger", "not_inspected", "error")
"""Why a result is what it is: `none` (the models decided) or the failure that decided it."""
STAGES = (
    "preprocess",
    "model_input",
    "inference",
    "postprocess",
    "decision",
    "measure",
    "result",
    "overlay",
    "total",
)
"""The inspector's timed stages (InspectionResult.timings_ms); other keys are not exported."""
MAX_LABEL_VALUES = 64
"""Distinct defect classes or model names kept as label values; more become "other"."""
HEALTH_LEVELS = {"ok": 0, "warn": 1, "alarm": 2}

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_SCORE_BUCKETS = (
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0, 2.0, 5.0, 10.0, 100.0,
)  # fmt: skip
_PENDING_TRACKED = 100_000


def reason_kind(result: InspectionResult) -> str:
    """The result's failure bucketed into REASON_KINDS (a small, fixed label set).

    The job path words its failures with fixed prefixes (station_interface.py, the inspector,
    the handshake): "deadline ...", "acquisition failed: ...", "missed trigger: ...",
    "not inspected: ...". Anything else with an error is "error"; no error is "none".
    """
    error = result.error
    if error is None:
        return "none"
    text = error.lower()
    for prefix, kind in (
        ("missed trigger", "missed_trigger"),
        ("deadline", "deadline"),
        ("acquisition failed", "acquisition"),
        ("not inspected", "not_inspected"),
    ):
        if text.startswith(prefix):
            return kind
    return "error"


class _Bounded:
    """Label values as they come, up to `limit` distinct ones; the rest share "other"."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(value)
            return value


class StationMetrics:
    """What the station counts as it runs, plus a collector that reads its state on scrape."""

    def __init__(self, runtime: StationRuntime, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._defects = _Bounded()
        self._models = _Bounded()
        self._pending_lock = threading.Lock()
        self._pending: OrderedDict[str, float] = OrderedDict()  # result id -> handed over at
        self.plc_connections = 0
        self.verdicts = Counter(
            f"{PREFIX}_verdicts",
            "Results the station handed to the store (every part it judged or failed safe, "
            "missed triggers included), by verdict, defect class and reason kind.",
            ["verdict", "defect_class", "reason"],
            registry=None,
        )
        self.posted = Counter(
            f"{PREFIX}_posted",
            "Parts whose result block was posted to the PLC interface, by result code.",
            ["code"],
            registry=None,
        )
        self.deadline_misses = Counter(
            f"{PREFIX}_deadline_misses",
            "Parts not judged by their deadline: the PLC got NO RESULT.",
            registry=None,
        )
        self.acquisition_failures = Counter(
            f"{PREFIX}_acquisition_failures",
            "Parts whose frame could not be acquired (judged fail-safe).",
            registry=None,
        )
        self.latency = Histogram(
            f"{PREFIX}_part_latency_seconds",
            "Trigger accepted to result posted, per part.",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.stages = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Inspector time per stage and part (InspectionResult.timings_ms).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=None,
        )
        self.inference = Histogram(
            f"{PREFIX}_model_inference_seconds",
            "Inference time per model and part.",
            ["model"],
            buckets=_STAGE_BUCKETS,
            registry=None,
        )
        self.scores = Histogram(
            f"{PREFIX}_model_score",
            "Scores the models gave, per model version and score (anomaly or class label).",
            ["model", "version", "sha", "score"],
            buckets=_SCORE_BUCKETS,
            registry=None,
        )
        self.state = _StateCollector(runtime, self)

    def collectors(self) -> list[Collector]:
        return [
            self.verdicts,
            self.posted,
            self.deadline_misses,
            self.acquisition_failures,
            self.latency,
            self.stages,
            self.inference,
            self.scores,
            self.state,
        ]

    def register(self, registry: CollectorRegistry) -> None:
        """Serve these metrics from `registry` (the API's, for GET /metrics)."""
        for collector in self.collectors():
            registry.register(collector)

    # ------------------------------------------------------------------ hooks

    def result(self, inspected: InspectedFrame) -> None:
        """A result handed to the store: count its verdict, time its stages, see its scores."""
        r = inspected.result
        defect = self._defects(r.defect_class) if r.defect_class else "none"
        self.verdicts.labels(r.verdict.value, defect, reason_kind(r)).inc()
        for stage, ms in r.timings_ms.items():
            if stage in STAGES:
                self.stages.labels(stage).observe(ms / 1000.0)
            elif stage.startswith("inference:"):
                self.inference.labels(self._models(stage.split(":", 1)[1])).observe(ms / 1000.0)
        refs = {m.name: m for m in r.models}
        for roi in r.rois:
            for key, value in roi.scores.items():
                name, _, score = key.partition(":")
                ref = refs.get(name)
                self.scores.labels(
                    self._models(name),
                    ref.version if ref else "",
                    ref.sha256[:12] if ref else "",
                    score,
                ).observe(value)
        with self._pending_lock:
            self._pending[r.result_id] = self._clock()
            while len(self._pending) > _PENDING_TRACKED:
                self._pending.popitem(last=False)

    def record(self, record: StationRecord) -> None:
        """A part posted to the PLC interface (StationInterface.on_record)."""
        self.posted.labels(record.code.name.lower()).inc()
        self.latency.observe(record.latency_ms / 1000.0)
        if record.late:
            self.deadline_misses.inc()
        if record.frame_dropped:
            self.acquisition_failures.inc()

    def plc_connected(self) -> None:
        self.plc_connections += 1

    def oldest_pending_age_s(self, holds: Callable[[str], bool]) -> float:
        """Age of the oldest result handed over since start that `holds` says is uncommitted."""
        now = self._clock()
        with self._pending_lock:
            while self._pending:
                rid, handed = next(iter(self._pending.items()))
                if holds(rid):
                    return now - handed
                self._pending.popitem(last=False)
        return 0.0


def _values(member: Any) -> list[str]:
    return [m.value for m in type(member)] if isinstance(member, enum.Enum) else [str(member)]


class _StateCollector(Collector):
    """Link states, queues, journal, heartbeat, live models and alarms, read on each scrape."""

    def __init__(self, runtime: StationRuntime, metrics: StationMetrics) -> None:
        self._runtime = runtime
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime
        for section in (self._info, self._links, self._plc, self._queues, self._models):
            yield from _guarded(section, rt)
        yield from _guarded(self._alarms, rt)

    def _info(self, rt: StationRuntime) -> Iterator[Metric]:
        st = rt.station
        info = GaugeMetricFamily(
            f"{PREFIX}_info",
            "The station's ids and live recipe (value 1).",
            labels=["station_id", "line", "site", "recipe_number", "recipe", "trigger"],
        )
        recipe = rt.catalog[rt.active_recipe].recipe.name
        info.add_metric(
            [
                st.station_id,
                st.line or "",
                st.site or "",
                str(rt.active_recipe),
                recipe,
                rt.mode.value,
            ],
            1.0,
        )
        yield info
        uptime = time.monotonic() - rt.started_mono
        yield _gauge(f"{PREFIX}_uptime_seconds", "Seconds since the station started.", uptime)

    def _links(self, rt: StationRuntime) -> Iterator[Metric]:
        doc = "State of each link: 1 for the state it is in, 0 for the others."
        family = GaugeMetricFamily(f"{PREFIX}_link_state", doc, labels=["link", "state"])
        reconnects = CounterMetricFamily(
            f"{PREFIX}_link_reconnects",
            "Reconnects of each link since start.",
            labels=["link"],
        )
        serving = "closed" if rt.stopped else "listening"
        iface = rt._interface
        if rt.modbus is not None:
            _add_states(family, "modbus", ["listening", "closed"], serving)
            if iface is not None:
                _add_states(family, "plc", _values(StationState.READY), iface.handshake.state)
            reconnects.add_metric(["plc"], max(0, self._metrics.plc_connections - 1))
        if rt.opcua is not None:
            _add_states(family, "opcua", ["listening", "closed"], serving)
            machine = rt.opcua.machine
            _add_states(family, "opcua_machine", _values(machine.state), machine.state)
        if rt.robot is not None:
            _add_states(family, "robot", _values(LinkState.IDLE), rt.robot.state)
            reconnects.add_metric(["robot"], rt.robot.reconnects)
        if rt.mqtt is not None:
            states = ["connected", "disconnected", "closed"]
            _add_states(family, "mqtt", states, rt.mqtt.state)
            reconnects.add_metric(["mqtt"], max(0, rt.mqtt.connects - 1))
        camera = rt.camera
        if camera is not None:
            state = getattr(camera, "state", None)
            if isinstance(state, SourceState):
                _add_states(family, "camera", _values(state), state)
            else:  # a simulated or injected camera: ready while the station runs
                sim = "closed" if rt.stopped else "ready"
                _add_states(family, "camera", ["ready", "closed"], sim)
            reconnects.add_metric(["camera"], int(getattr(camera, "reconnects", 0) or 0))
        if rt.journal is not None:
            failing = iface is not None and iface.record_error is not None
            _add_states(family, "journal", ["ok", "failed"], "failed" if failing else "ok")
        if rt.forwarder is not None:
            states = ["ok", "failing", "stopped"]
            _add_states(family, "forward", states, rt.forwarder.stats.state)
        if rt.api is not None:
            _add_states(family, "api", ["listening", "closed"], serving)
        yield family
        yield reconnects
        if rt.robot is not None:
            rc = rt.robot.counters
            targets = CounterMetricFamily(
                f"{PREFIX}_robot_targets",
                "Pick targets for the robot, by outcome.",
                labels=["outcome"],
            )
            for outcome, value in (
                ("sent", rc.sent),
                ("acknowledged", rc.acknowledged),
                ("refused", rc.refused),
                ("timed_out", rc.timed_out),
                ("dropped", rc.dropped),
                ("retried", rc.retries),
            ):
                targets.add_metric([outcome], value)
            yield targets
        if camera is not None:
            yield _counter(
                f"{PREFIX}_frames_dropped",
                "Frames the camera adapter dropped (the station fell behind a free-running "
                "camera).",
                int(getattr(camera, "dropped", 0) or 0),
            )

    def _plc(self, rt: StationRuntime) -> Iterator[Metric]:
        iface = rt._interface
        if iface is None:
            return
        hs = iface.handshake.counters
        yield _counter(
            f"{PREFIX}_missed_triggers",
            "PLC triggers the station could not take (each stored as a fail-safe result).",
            hs.missed_triggers,
        )
        yield _counter(
            f"{PREFIX}_plc_heartbeat_losses", "PLC heartbeat timeouts.", hs.heartbeat_losses
        )
        yield _counter(f"{PREFIX}_plc_overruns", "Result buffer overruns.", hs.overruns)
        if rt.modbus is not None:
            yield _gauge(
                f"{PREFIX}_plc_connections",
                "Modbus clients connected now.",
                rt.modbus.guard.active,
            )
            age = iface.handshake.plc_heartbeat_age_s
            if age is not None:
                yield _gauge(
                    f"{PREFIX}_plc_heartbeat_age_seconds",
                    "Seconds since the PLC heartbeat (HR7) last changed.",
                    age,
                )

    def _queues(self, rt: StationRuntime) -> Iterator[Metric]:
        iface = rt._interface
        if rt.mqtt is not None:
            yield _gauge(
                f"{PREFIX}_mqtt_backlog",
                "Results and alarms in the MQTT outbox, not yet acknowledged by the broker.",
                rt.mqtt.outbox.backlog,
            )
        if iface is not None:
            yield _gauge(
                f"{PREFIX}_dispatch_queue_depth",
                "Results and pick targets waiting for the store, robot and OPC UA hand-over.",
                iface.dispatch_depth,
            )
            yield _counter(
                f"{PREFIX}_dispatch_dropped",
                "Results or targets the full dispatch queue refused.",
                iface.dispatch_dropped,
            )
            yield _gauge(
                f"{PREFIX}_jobs_in_flight", "Accepted triggers not finished yet.", iface.in_flight
            )
        yield _counter(
            f"{PREFIX}_results_lost",
            "Judged results that reached neither the journal nor the store.",
            rt.results_lost,
        )
        journal = rt.journal
        if journal is not None:
            yield _gauge(
                f"{PREFIX}_journal_pending",
                "Results journaled but not yet committed to the store.",
                journal.pending,
            )
            yield _gauge(
                f"{PREFIX}_store_lag_seconds",
                "Age of the oldest result handed over since start and not yet in the store.",
                self._metrics.oldest_pending_age_s(journal.holds),
            )
            yield _counter(
                f"{PREFIX}_journal_failures", "Journal appends that failed.", journal.failures
            )
        forwarder = rt.forwarder
        if forwarder is not None:
            fs = forwarder.stats
            yield _gauge(
                f"{PREFIX}_forward_backlog",
                "Stored results not yet in the central store (a link down is a backlog).",
                fs.backlog,
            )
            yield _gauge(
                f"{PREFIX}_forward_lag_seconds",
                "Age (capture time) of the oldest result not yet forwarded; 0: none waits.",
                fs.lag_s or 0.0,
            )
            yield _counter(
                f"{PREFIX}_forward_results", "Results forwarded since start.", fs.forwarded
            )
            reviews = CounterMetricFamily(
                f"{PREFIX}_forward_reviews",
                "Review labels since start: sent (set here, applied centrally) and received "
                "(set on the hub, copied into this station's store).",
                labels=["direction"],
            )
            reviews.add_metric(["sent"], fs.reviews_sent)
            reviews.add_metric(["received"], fs.reviews_received)
            yield reviews

    def _models(self, rt: StationRuntime) -> Iterator[Metric]:
        iface = rt._interface
        family = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The models of the live recipe (value 1), one per model slot.",
            labels=["recipe", "model", "version", "sha"],
        )
        if iface is not None:
            inspector = iface.inspector
            for runner in getattr(inspector, "runners", ()):
                ref = getattr(runner, "ref", None)
                if ref is None:
                    continue
                family.add_metric(
                    [inspector.recipe_name, ref.name, ref.version, ref.sha256[:12]], 1.0
                )
        yield family

    def _alarms(self, rt: StationRuntime) -> Iterator[Metric]:
        alarms = GaugeMetricFamily(
            f"{PREFIX}_alarm",
            "Conditions an operator must act on (runtime alarms), 1 while raised.",
            labels=["name"],
        )
        for text in rt.alarms():
            alarms.add_metric([text.split(":", 1)[0]], 1.0)
        yield alarms
        health = getattr(rt, "health", None)
        read = getattr(health, "alarms", None)
        if read is None:
            return
        family = GaugeMetricFamily(
            f"{PREFIX}_health_level",
            "Camera and model health checks: 0 ok, 1 warn, 2 alarm.",
            labels=["name"],
        )
        for alarm in read():
            level = HEALTH_LEVELS.get(str(getattr(alarm, "level", "")), 2)
            family.add_metric([str(getattr(alarm, "name", "?"))], float(level))
        yield family


def _guarded(
    section: Callable[[StationRuntime], Iterator[Metric]], rt: StationRuntime
) -> list[Metric]:
    """One section's metrics, or none (logged): a failing part must not fail the scrape."""
    try:
        return list(section(rt))
    except Exception:
        log.exception("metrics: %s failed at scrape time", section.__name__)
        return []


def _add_states(family: GaugeMetricFamily, link: str, states: list[str], current: object) -> None:
    now = current.value if isinstance(current, enum.Enum) else str(current)
    for state in states:
        family.add_metric([link, state], 1.0 if state == now else 0.0)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
