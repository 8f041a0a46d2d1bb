"""What the routes work with, built once per app and kept on `app.state.services`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from cellinspect.api.events import EventBroker
from cellinspect.api.limits import ConcurrencySlots
from cellinspect.api.metrics import ApiMetrics
from cellinspect.entities import InspectedFrame
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.settings import StationSettings
from cellinspect.storage.protocols import ResultStore
from cellinspect.storage.retention import RetentionPolicy
from cellinspect.storage.writer import AsyncResultWriter
from cellinspect.users import Authenticator


class StationControl(Protocol):
    """What the API may ask of a running station (`cellinspect run`): status and commands."""

    def status(self) -> dict[str, Any]: ...

    def trigger(
        self, part_id: int | None = None, origin: str = "software", timeout_s: float | None = None
    ) -> Any: ...

    def select_recipe(self, number: int) -> Any: ...

    def record_upload(self, inspected: InspectedFrame) -> InspectedFrame:
        """Stamp an uploaded part's result with the station's ids and journal it (fsynced)."""
        ...


@dataclass
class ApiServices:
    settings: StationSettings
    store: ResultStore
    inspector: ImageInspector | None
    writer: AsyncResultWriter
    owns_writer: bool
    events: EventBroker
    metrics: ApiMetrics
    retention: RetentionPolicy
    auth: Authenticator
    upload_slots: ConcurrencySlots
    # One inspection at a time: an inspector owns its onnxruntime sessions.
    inspect_lock: threading.Lock = field(default_factory=threading.Lock)
    station: StationControl | None = None
