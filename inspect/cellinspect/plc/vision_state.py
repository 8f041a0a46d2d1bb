"""The vision system state machine shaped after OPC 40100 (OPC UA for Machine Vision).

Top level: Preoperational, Halted, Error, Operational; inside Operational the automatic mode
machine: Initialized, Ready, SingleExecution, ContinuousExecution. Pure logic, so the rules
are tested without a server; :mod:`cellinspect.plc.opcua_server` maps methods onto it.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable, Iterable

from cellinspect.plc.errors import PlcError


class VisionState(enum.StrEnum):
    PREOPERATIONAL = "Preoperational"
    HALTED = "Halted"
    ERROR = "Error"
    OPERATIONAL = "Operational"


class AutoState(enum.StrEnum):
    INITIALIZED = "Initialized"
    READY = "Ready"
    SINGLE_EXECUTION = "SingleExecution"
    CONTINUOUS_EXECUTION = "ContinuousExecution"


class InvalidTransitionError(PlcError):
    """A method was called in a state that does not allow it (OPC UA: BadInvalidState)."""


class VisionStateMachine:
    """States, allowed transitions, the prepared recipe and job ids; thread-safe."""

    def __init__(self, recipes: Iterable[str] = ()) -> None:
        self.recipes = set(recipes)
        self.state = VisionState.PREOPERATIONAL
        self.auto: AutoState | None = None
        self.recipe: str | None = None
        self.error: str = ""
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()
        self.listeners: list[Callable[[VisionState, AutoState | None], None]] = []

    def _set(self, state: VisionState, auto: AutoState | None) -> None:
        self.state, self.auto = state, auto
        for listener in self.listeners:
            listener(state, auto)

    def _require(self, what: str, state: VisionState, autos: Iterable[AutoState] = ()) -> None:
        allowed = set(autos)
        if self.state is not state or (allowed and self.auto not in allowed):
            where = f"{self.state.value}" + (f"/{self.auto.value}" if self.auto else "")
            wanted = state.value + (
                f"/{'|'.join(sorted(a.value for a in allowed))}" if allowed else ""
            )
            raise InvalidTransitionError(f"{what}: not allowed in {where}, needs {wanted}")

    @property
    def label(self) -> str:
        return self.state.value + (f"/{self.auto.value}" if self.auto else "")

    # ------------------------------------------------------------------ top level

    def select_mode_automatic(self) -> None:
        with self._lock:
            self._require("SelectModeAutomatic", VisionState.PREOPERATIONAL)
            self._set(VisionState.OPERATIONAL, AutoState.INITIALIZED)

    def halt(self) -> None:
        with self._lock:
            if self.state is VisionState.HALTED:
                raise InvalidTransitionError("Halt: already Halted")
            self.recipe = None
            self._set(VisionState.HALTED, None)

    def reset(self) -> None:
        with self._lock:
            if self.state not in (VisionState.HALTED, VisionState.ERROR):
                raise InvalidTransitionError(
                    f"Reset: not allowed in {self.label}, needs Halted|Error"
                )
            self.error = ""
            self._set(VisionState.PREOPERATIONAL, None)

    def fail(self, reason: str) -> None:
        """Any state to Error (camera lost, PLC heartbeat lost, inspector failure)."""
        with self._lock:
            self.error = reason
            self._set(VisionState.ERROR, None)

    # ------------------------------------------------------------------ recipes

    def prepare_recipe(self, recipe: str) -> None:
        with self._lock:
            self._require(
                "PrepareRecipe", VisionState.OPERATIONAL, (AutoState.INITIALIZED, AutoState.READY)
            )
            if recipe not in self.recipes:
                raise InvalidTransitionError(
                    f"PrepareRecipe: unknown recipe {recipe!r}; known: {sorted(self.recipes)}"
                )
            self.recipe = recipe
            self._set(VisionState.OPERATIONAL, AutoState.READY)

    def unprepare_recipe(self) -> None:
        with self._lock:
            self._require("UnprepareRecipe", VisionState.OPERATIONAL, (AutoState.READY,))
            self.recipe = None
            self._set(VisionState.OPERATIONAL, AutoState.INITIALIZED)

    # ------------------------------------------------------------------ jobs

    def start_single_job(self) -> str:
        with self._lock:
            self._require("StartSingleJob", VisionState.OPERATIONAL, (AutoState.READY,))
            self._set(VisionState.OPERATIONAL, AutoState.SINGLE_EXECUTION)
            return f"job-{next(self._jobs)}"

    def job_done(self) -> None:
        with self._lock:
            if self.state is VisionState.OPERATIONAL and self.auto is AutoState.SINGLE_EXECUTION:
                self._set(VisionState.OPERATIONAL, AutoState.READY)

    def start_continuous(self) -> str:
        with self._lock:
            self._require("StartContinuous", VisionState.OPERATIONAL, (AutoState.READY,))
            self._set(VisionState.OPERATIONAL, AutoState.CONTINUOUS_EXECUTION)
            return f"job-{next(self._jobs)}"

    def stop(self) -> None:
        with self._lock:
            self._require("Stop", VisionState.OPERATIONAL, (AutoState.CONTINUOUS_EXECUTION,))
            self._set(VisionState.OPERATIONAL, AutoState.READY)

    def abort(self) -> None:
        with self._lock:
            self._require(
                "Abort",
                VisionState.OPERATIONAL,
                (AutoState.SINGLE_EXECUTION, AutoState.CONTINUOUS_EXECUTION),
            )
            self._set(VisionState.OPERATIONAL, AutoState.READY)
