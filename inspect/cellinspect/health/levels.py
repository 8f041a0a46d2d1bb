"""ok / warn / alarm with hysteresis: a level is entered at its threshold and left only
once the change has fallen back below a fraction of it, so a statistic sitting on a level
does not make the alarm flap."""

from __future__ import annotations

import enum

from cellinspect.health.config import Levels


class Level(enum.IntEnum):
    """Ordered, so the worst of several is `max`; the value is the Modbus health register."""

    OK = 0
    WARN = 1
    ALARM = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def next_level(current: Level, severity: float, levels: Levels, clear_fraction: float) -> Level:
    """The level after one more observation of |change| = `severity`."""
    if severity >= levels.alarm:
        return Level.ALARM
    if current is Level.ALARM and severity >= levels.alarm * clear_fraction:
        return Level.ALARM
    if severity >= levels.warn:
        return Level.WARN
    if current is not Level.OK and severity >= levels.warn * clear_fraction:
        return Level.WARN
    return Level.OK
