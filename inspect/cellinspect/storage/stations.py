"""The stations a store has results of: id, line, site, how many results, the newest one.

Why its own query: the hub's station selector (GET /stations) needs the distinct station ids
of the central store; one GROUP BY over the indexed station_id column, not a results page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cellinspect.storage.models import ResultRow


@dataclass(frozen=True, slots=True)
class StationSummary:
    station_id: str
    line: str | None
    site: str | None
    results: int
    last_seen: datetime


def known_stations(engine: Engine) -> list[StationSummary]:
    """Every station id with a result (rows without one are left out), by id."""
    query = (
        select(
            ResultRow.station_id,
            func.max(ResultRow.line),
            func.max(ResultRow.site),
            func.count(),
            func.max(ResultRow.captured_wall),
        )
        .where(ResultRow.station_id.is_not(None))
        .group_by(ResultRow.station_id)
        .order_by(ResultRow.station_id)
    )
    with engine.connect() as conn:
        return [
            StationSummary(str(sid), line, site, int(n), last)
            for sid, line, site, n, last in conn.execute(query)
        ]
