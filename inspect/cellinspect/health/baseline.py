"""What the camera and the scores looked like when the recipe went live: the yardstick.

Taken automatically from the first `health.baseline_parts` parts a station judges with a
recipe for which none is stored, and kept as JSON in `data_dir/health/`, one file per recipe
name and hash: a retaught recipe (another hash) gets a fresh baseline, a restart keeps the
old one. Delete the file to take a new baseline (after moving the camera on purpose).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cellinspect.errors import ConfigError
from cellinspect.health.frame_stats import FrameStats

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Baseline:
    """Medians of the frame statistics, and the passed parts' anomaly scores, at teach time."""

    recipe: str
    parts: int
    stats: dict[str, float]
    passed_scores: list[float] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def from_frames(
        cls, recipe: str, frames: list[FrameStats], passed_scores: list[float]
    ) -> Baseline:
        stats: dict[str, float] = {}
        for name in ("focus", "brightness", "contrast", "noise", "clipping", "x", "y"):
            values = np.array([getattr(f, name) for f in frames], dtype=np.float64)
            values = values[np.isfinite(values)]
            stats[name] = float(np.median(values)) if values.size else math.nan
        return cls(recipe, len(frames), stats, list(passed_scores))


def baseline_path(folder: Path, recipe_key: str) -> Path:
    """`folder/baseline-<recipe>.json`, the key made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", recipe_key)
    return folder / f"baseline-{safe}.json"


def save_baseline(path: Path, baseline: Baseline) -> None:
    """Write atomically (temp file, rename), so a crash never leaves half a baseline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps({"schema_version": SCHEMA_VERSION, **asdict(baseline)}, indent=1),
        encoding="utf-8",
    )
    tmp.replace(path)


def load_baseline(path: Path) -> Baseline | None:
    """The stored baseline, None when there is none; a damaged file is a clear error."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("schema_version", None) != SCHEMA_VERSION:
            raise ValueError(f"expected schema_version {SCHEMA_VERSION}")
        return Baseline(
            recipe=str(data["recipe"]),
            parts=int(data["parts"]),
            stats={str(k): float(v) for k, v in data["stats"].items()},
            passed_scores=[float(s) for s in data.get("passed_scores", [])],
            created=str(data.get("created", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"{path}: not a health baseline ({err}); delete it to take a new one"
        ) from err
