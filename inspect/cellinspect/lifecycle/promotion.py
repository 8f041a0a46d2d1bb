"""Shadow, promote and rollback: the gate, the registry change and the station's hot swap.

The station swaps first (the new inspector is loaded and warmed before it replaces the old
one at a part boundary); only then is the registry changed, and a registry failure swaps the
old model back. A station that is not running (offline) only has its registry changed and
loads the live versions at its next start.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sqlalchemy import Engine

from cellinspect.lifecycle.registry import LifecycleError, ModelRegistry, ModelVersion, State

DEFAULT_MIN_REVIEWED = 20
_SWITCHING = threading.RLock()  # one promote or rollback at a time: swap, registry in step


class GateRefusedError(LifecycleError):
    """The candidate has not earned promotion (and no admin override was given)."""

    def __init__(self, slot: str, version: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"model {slot}@{version} may not be promoted: {'; '.join(problems)} "
            "(an admin may override with a reason)"
        )


@runtime_checkable
class SwappableStation(Protocol):
    """What promotion needs of a running station (station/runtime.py StationRuntime)."""

    def swap_model(self, slot: str, model_file: Path) -> None: ...

    def model_slots(self) -> list[str]: ...


def check_gate(
    reviewed: int,
    escapes_live: int,
    escapes_candidate: int,
    min_reviewed: int,
    *,
    good_reviewed: int = 0,
    held_good_live: int = 0,
    held_good_candidate: int = 0,
) -> list[str]:
    """Why a candidate fails the gate (empty: it passes).

    Besides escapes, the candidate may not hold back (FAIL or REVIEW) more QA-good parts than
    the live model by more than 10 % of the good parts compared (at least one part): a model
    that sends every good part to REVIEW lets nothing escape and stops the line all the same.
    """
    problems = []
    allowed = held_good_live + max(1, math.ceil(0.1 * good_reviewed))
    if held_good_candidate > allowed:
        problems.append(
            f"{held_good_candidate} of {good_reviewed} QA-good part(s) held back (FAIL or "
            f"REVIEW) against the live model's {held_good_live} (at most {allowed})"
        )
    if reviewed < min_reviewed:
        problems.append(f"{reviewed} QA-reviewed part(s) compared, the gate needs {min_reviewed}")
    if escapes_candidate > escapes_live:
        problems.append(
            f"{escapes_candidate} escape(s) on reviewed parts against the live model's "
            f"{escapes_live}"
        )
    return problems


def gate_problems(engine: Engine, slot: str, version: str, min_reviewed: int) -> list[str]:
    """The gate on the candidate's shadow report (lifecycle/shadow_report.py)."""
    from cellinspect.lifecycle import shadow_report as reports

    report = reports.shadow_report(engine, slot, version)
    if report.compared == 0:
        return [f"no shadow report for {slot}@{version} (run `cellinspect models shadow` first)"]
    return check_gate(
        report.reviewed,
        report.escapes_live,
        report.escapes_candidate,
        min_reviewed,
        good_reviewed=report.good_reviewed,
        held_good_live=report.held_good_live,
        held_good_candidate=report.held_good_candidate,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """What a promote or rollback did: the version retired and the one now live."""

    slot: str
    retired: ModelVersion
    live: ModelVersion
    swapped: bool  # a running station swapped its inspector


def _clear_shadow(station: object | None, slot: str) -> None:
    shadow = getattr(station, "shadow", None)
    clear = getattr(station, "clear_shadow", None)
    if shadow is not None and getattr(shadow, "slot", None) == slot and clear is not None:
        clear()


def _check_slot(station: object | None, slot: str) -> None:
    if isinstance(station, SwappableStation) and slot not in station.model_slots():
        raise LifecycleError(
            f"model slot {slot!r} is not in the live recipe (slots: {station.model_slots()})"
        )


def shadow(
    registry: ModelRegistry, slot: str, version: str, actor: str, station: object | None = None
) -> ModelVersion:
    """Mark `version` shadow; a running station starts judging beside the live model with it."""
    _check_slot(station, slot)
    target = registry.get(slot, version)
    if target.state is not State.SHADOW:
        registry.set_state(slot, version, State.SHADOW, actor, action="shadow")
    set_shadow = getattr(station, "set_shadow", None)
    if set_shadow is not None:
        try:
            set_shadow(slot, target.package_dir, version)
        except Exception:
            registry.set_state(
                slot, version, State.CANDIDATE, actor, action="unshadow", reason="failed to load"
            )
            raise
    return registry.get(slot, version)


def retire(
    registry: ModelRegistry,
    slot: str,
    version: str,
    actor: str,
    reason: str = "",
    station: object | None = None,
) -> ModelVersion:
    """Retire a candidate or shadow version (a shadow run of it stops)."""
    before = registry.get(slot, version)
    retired = registry.set_state(
        slot, version, State.RETIRED, actor, action="retire", reason=reason
    )
    if before.state is State.SHADOW:
        _clear_shadow(station, slot)
    return retired


def promote(
    registry: ModelRegistry,
    slot: str,
    version: str,
    actor: str,
    *,
    station: object | None = None,
    min_reviewed: int = DEFAULT_MIN_REVIEWED,
    override_reason: str | None = None,
) -> Change:
    """Gate, hot swap on a running station, then the registry; the gate may be overridden.

    `override_reason` is the admin's reason to skip a failing gate; it is recorded with
    what the gate said. Callers check that the actor may override.
    """
    _check_slot(station, slot)
    target = registry.get(slot, version)
    if target.state not in (State.CANDIDATE, State.SHADOW):
        raise LifecycleError(
            f"model {slot}@{version} is {target.state.value}: only a candidate or shadow "
            "version can be promoted (rollback returns a retired one)"
        )
    problems = gate_problems(registry.engine, slot, version, min_reviewed)
    reason = ""
    if problems:
        if override_reason is None or not override_reason.strip():
            raise GateRefusedError(slot, version, problems)
        reason = f"gate overridden: {override_reason.strip()} (gate: {'; '.join(problems)})"
    elif override_reason:
        reason = override_reason.strip()
    with _SWITCHING:
        return _switch_locked(registry, slot, target, actor, reason, station, rollback=False)


def rollback(
    registry: ModelRegistry,
    slot: str,
    actor: str,
    reason: str = "",
    *,
    station: object | None = None,
) -> Change:
    """Return `slot` to the version live before the current one, with the same hot swap."""
    _check_slot(station, slot)
    with _SWITCHING:
        target = registry.previous_live(slot)
        return _switch_locked(registry, slot, target, actor, reason, station, rollback=True)


def _switch_locked(
    registry: ModelRegistry,
    slot: str,
    target: ModelVersion,
    actor: str,
    reason: str,
    station: object | None,
    *,
    rollback: bool,
) -> Change:
    current = registry.live(slot)
    if current is None:
        raise LifecycleError(f"model slot {slot!r}: no live version registered")
    swapped = isinstance(station, SwappableStation)
    if isinstance(station, SwappableStation):
        station.swap_model(slot, target.model_file)  # loads and warms; raises with no change
    try:
        if rollback:
            retired, live = registry.rollback(slot, actor, reason)
        else:
            retired = registry.promote(slot, target.version, actor, reason)
            live = registry.get(slot, target.version)
    except Exception:
        if isinstance(station, SwappableStation):
            station.swap_model(slot, current.model_file)
        raise
    _clear_shadow(station, slot)  # promoted, or compared against the model just replaced
    return Change(slot=slot, retired=retired, live=live, swapped=swapped)


def registry_for(engine: Engine, data_dir: Path) -> ModelRegistry:
    """The station's registry: packages under `<data_dir>/models`."""
    return ModelRegistry(engine, data_dir / "models")
