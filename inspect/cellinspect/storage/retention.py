"""Which images are kept, and which go first when the disk budget is exceeded.

Policy:
- every FAIL and REVIEW result keeps its image and overlay;
- a PASS result keeps them when a hash of its result id falls under `pass_sample_rate`, so the
  choice is reproducible and spread evenly over time (no burst of kept PASS images);
- when the image files exceed `disk_budget_bytes`, files are deleted until they fit under
  `low_water` x budget, in this order: PASS images, then images of reviewed FAIL/REVIEW
  results, then images of unreviewed FAIL/REVIEW results (oldest capture first within each
  tier). Unreviewed rejects therefore go last; they do go when nothing else is left, because a
  full disk would stop the station. The result rows and reviews are never deleted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, delete, func, select
from sqlalchemy.orm import Session

from cellinspect.entities import InspectionResult, Verdict
from cellinspect.storage.images import ImageStore
from cellinspect.storage.models import ImageRow, ResultRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    pass_sample_rate: float = 0.05
    disk_budget_bytes: int | None = None
    low_water: float = 0.9
    disk_reserve_bytes: int | None = None  # free space no image may take (results need it)

    def __post_init__(self) -> None:
        if not 0.0 <= self.pass_sample_rate <= 1.0:
            raise ValueError(f"pass_sample_rate must be in [0, 1], got {self.pass_sample_rate}")
        if self.disk_budget_bytes is not None and self.disk_budget_bytes <= 0:
            raise ValueError(f"disk_budget_bytes must be > 0, got {self.disk_budget_bytes}")
        if self.disk_reserve_bytes is not None and self.disk_reserve_bytes < 0:
            raise ValueError(f"disk_reserve_bytes must be >= 0, got {self.disk_reserve_bytes}")
        if not 0.0 < self.low_water <= 1.0:
            raise ValueError(f"low_water must be in (0, 1], got {self.low_water}")

    def keeps_images(self, result: InspectionResult) -> bool:
        if result.verdict is not Verdict.PASS:
            return True
        return pass_sample_point(result.result_id) < self.pass_sample_rate


def pass_sample_point(result_id: str) -> float:
    """A number in [0, 1) fixed by the result id: the same id is always sampled the same way."""
    digest = hashlib.sha256(result_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def deletion_tier() -> ColumnElement[int]:
    """SQL expression ranking images for deletion: 0 PASS, 1 reviewed, 2 unreviewed reject."""
    return case(
        (ResultRow.verdict == Verdict.PASS.value, 0),
        (ResultRow.reviewed.is_(True), 1),
        else_=2,
    )


def total_image_bytes(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(ImageRow.size_bytes), 0))) or 0)


def enforce_budget(
    session_factory: Callable[[], Session],
    images: ImageStore,
    policy: RetentionPolicy,
    current_bytes: int,
    chunk: int = 200,
) -> int:
    """Delete images oldest-first by tier until under the low-water mark; returns bytes left."""
    budget = policy.disk_budget_bytes
    if budget is None or current_bytes <= budget:
        return current_bytes
    target = int(budget * policy.low_water)
    remaining = current_bytes
    tier = deletion_tier()
    while remaining > target:
        with session_factory() as session, session.begin():
            rows = session.execute(
                select(ImageRow.id, ImageRow.relpath, ImageRow.size_bytes, tier)
                .join(ResultRow, ImageRow.result_pk == ResultRow.id)
                .order_by(tier, ResultRow.captured_wall, ResultRow.id, ImageRow.id)
                .limit(chunk)
            ).all()
            if not rows:
                return 0
            doomed: list[int] = []
            for image_id, relpath, size, rank in rows:
                if remaining <= target:
                    break
                if rank == 2:
                    log.warning("disk budget: deleting images of unreviewed rejects (%s)", relpath)
                images.delete(relpath)
                doomed.append(image_id)
                remaining -= size
            session.execute(delete(ImageRow).where(ImageRow.id.in_(doomed)))
    return remaining
