"""The health monitor inside the station runtime: which recipe it follows, where its
baseline lives, and where its level changes go (Modbus HR121-122, OPC UA, the API).

Kept here so that `station/runtime.py` needs one line per hook.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cellinspect.entities import Task
from cellinspect.errors import ConfigError
from cellinspect.health.frame_stats import Stat
from cellinspect.health.levels import Level
from cellinspect.health.monitor import HealthAlarm, HealthMonitor
from cellinspect.health.score_drift import manifest_reference
from cellinspect.plc.registers import Reg

if TYPE_CHECKING:
    from cellinspect.config import Recipe
    from cellinspect.runtime.protocols import ImageInspector
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

STAT_BITS: dict[Stat, int] = {stat: 1 << i for i, stat in enumerate(Stat)}
"""HR122: bit i set while statistic i (in `Stat` order) is at warn or alarm."""


class HasHealth(Protocol):
    health: HealthMonitor


def reference_scores(recipe: Recipe) -> list[float] | None:
    """Held-out good scores of the recipe's judging anomaly model, from its manifest."""
    from cellinspect.inference.manifest import load_manifest

    for model in recipe.models:
        if not model.judge:
            continue
        try:
            manifest = load_manifest(model.path)
        except Exception as err:  # the inspector loaded it; a reference is a nice-to-have
            log.warning("health: no reference scores from %s (%s)", model.path, err)
            continue
        if manifest.task is Task.ANOMALY:
            return manifest_reference(manifest.provenance)
    return None


def baseline_folder(runtime: StationRuntime) -> Path | None:
    """data_dir/health when the station keeps a store; None: the baseline lives in memory."""
    if runtime.settings is None:
        return None
    return Path(runtime.settings.data_dir) / "health"


def recipe_live(
    runtime: StationRuntime, number: int, inspector: ImageInspector | None = None
) -> None:
    """Follow the recipe that just went live (start, recipe select: its new inspector)."""
    entry = runtime.catalog[number]
    sha = (inspector or runtime.interface.inspector).recipe_sha256
    key = f"{entry.recipe.name}-{sha[:12]}"
    reference, folder = reference_scores(entry.recipe), baseline_folder(runtime)
    try:
        runtime.health.use_recipe(key, reference, folder)
    except ConfigError as err:
        if inspector is None:
            raise  # at start: the station does not start on a damaged baseline
        # a recipe select has already swapped the models: follow it on a fresh baseline
        log.error("health: %s; a new baseline is taken in memory", err)
        runtime.health.use_recipe(key, reference, None)
    publish(runtime, runtime.health.alarms())


def attach(runtime: StationRuntime) -> None:
    """At start: follow the active recipe and publish every level change."""
    runtime.health.add_listener(lambda alarms: publish(runtime, alarms))
    recipe_live(runtime, runtime.active_recipe)


def flags(alarms: list[HealthAlarm]) -> int:
    return sum(STAT_BITS[Stat(a.name)] for a in alarms if a.level != Level.OK.label)


def worst(alarms: list[HealthAlarm]) -> Level:
    return max((Level[a.level.upper()] for a in alarms), default=Level.OK)


def publish(runtime: StationRuntime, alarms: list[HealthAlarm]) -> None:
    """The health register pair for the PLC and the OPC UA variables."""
    level = worst(alarms)
    runtime.image.write(Reg.HEALTH, [int(level), flags(alarms)])
    if runtime.opcua is not None:
        runtime.opcua.publish_health(level.label, runtime.health.alarm_lines())
