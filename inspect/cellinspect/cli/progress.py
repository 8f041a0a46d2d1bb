"""Progress for a log: when stderr is not a terminal a live bar shows nothing until it ends, so
long jobs (a fine-tune, fit-anomaly, evaluate, inspect over many files) write plain lines:

    fine-tune: 3/15 (20%), elapsed 0:03:12, eta 0:12:48

one when a task starts, then one at least every `interval` seconds while it runs (also when no
update came, so a long step still shows it is alive), and one when it completes. The methods
are the ones the commands call on a rich Progress (add_task, update, advance), so
`cli.support.progress_bar` hands out either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from rich.progress import TaskID


def _clock_text(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


@dataclass
class _Task:
    description: str
    total: float | None
    started: float
    completed: float = 0.0
    last_line: float = 0.0
    last_completed: float | None = None
    done_written: bool = False

    @property
    def done(self) -> bool:
        return self.total is not None and self.completed >= self.total


class LogProgress:
    """Progress written as lines through `write` (see the module doc)."""

    def __init__(
        self,
        write: Callable[[str], None],
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
    ) -> None:
        self._write = write
        self.interval = interval
        self._clock = clock
        self._heartbeat = heartbeat
        self._tasks: dict[TaskID, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, task: _Task, now: float) -> str:
        """'name: done/total (pct%), elapsed h:mm:ss, eta h:mm:ss' (no total: 'name: done')."""
        elapsed = now - task.started
        text = f"{task.description}: {_number(task.completed)}"
        if task.total:
            share = min(task.completed / task.total, 1.0)
            text += f"/{_number(task.total)} ({share * 100:.0f}%)"
        text += f", elapsed {_clock_text(elapsed)}"
        if task.total and 0 < task.completed < task.total:
            text += f", eta {_clock_text(elapsed / task.completed * (task.total - task.completed))}"
        return text

    def _emit(self, task: _Task, now: float) -> None:
        task.last_line = now
        task.last_completed = task.completed
        task.done_written = task.done
        self._write(self.line(task, now))

    def add_task(self, description: str, total: float | None = None, **_: Any) -> TaskID:
        with self._lock:
            now = self._clock()
            task_id = TaskID(len(self._tasks))
            self._tasks[task_id] = _Task(description, total, started=now)
            self._emit(self._tasks[task_id], now)
            return task_id

    def update(
        self,
        task_id: TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None:
                task.description = description
            now = self._clock()
            if (task.done and not task.done_written) or now - task.last_line >= self.interval:
                self._emit(task, now)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def emit_due(self) -> None:
        """A line for every running task not reported for `interval` seconds."""
        with self._lock:
            now = self._clock()
            for task in self._tasks.values():
                if not task.done and now - task.last_line >= self.interval:
                    self._emit(task, now)

    def _beat(self) -> None:
        while not self._stop.wait(max(self.interval / 4, 0.05)):
            self.emit_due()

    def __enter__(self) -> Self:
        if self._heartbeat:
            self._thread = threading.Thread(target=self._beat, name="log-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:  # where each unfinished task stopped, if not written already
            now = self._clock()
            for task in self._tasks.values():
                if not task.done_written and task.completed != task.last_completed:
                    self._emit(task, now)
