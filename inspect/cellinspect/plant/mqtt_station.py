"""Wiring of the MQTT link into a running station (ids, outbox place, alarms, metrics).

Why apart from runtime.py: the runtime only calls `start_mqtt` when `mqtt.enabled`, so a
station without a broker never imports paho.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity

if TYPE_CHECKING:
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

OUTBOX_FILE = "mqtt-outbox.sqlite"


def identity(runtime: StationRuntime) -> StationIdentity:
    st = runtime.station
    return StationIdentity(station_id=st.station_id, site=st.site, area=st.area, line=st.line)


def _metrics(runtime: StationRuntime) -> dict[str, Any]:
    counts = runtime.counts
    pending = runtime.journal.pending if runtime.journal is not None else None
    return {
        "parts": counts.parts,
        "verdicts": {v.value: n for v, n in counts.verdicts.items()},
        "errors": counts.errors,
        "recipe": runtime.active_recipe,
        "journal_pending": pending,
        "results_lost": runtime.results_lost,
        "alarms": len(runtime.alarms()),
    }


def start_mqtt(runtime: StationRuntime) -> MqttLink:
    """The outbox lives in the store's data_dir (beside the journal) and survives restarts."""
    data_dir = (
        runtime.settings.data_dir
        if runtime.settings is not None
        else runtime.station.store.data_dir
    )
    link = MqttLink(
        runtime.station.mqtt,
        identity(runtime),
        data_dir / OUTBOX_FILE,
        alarms=runtime.alarms,
        metrics=lambda: _metrics(runtime),
    )
    # Journaled results not yet stored at the last stop: queued unless the outbox has them.
    recovered = sum(link.result(r) for r in runtime.mqtt_recovered)
    runtime.mqtt_recovered = []
    if recovered:
        log.warning("MQTT: %d journaled result(s) recovered into the outbox", recovered)
    return link.start()
