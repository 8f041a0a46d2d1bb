"""One station process: the station file, its recipe catalog, trigger modes, links, shutdown.

`cellinspect run STATION.yaml` and the simulated `cellinspect line` both go through
:class:`cellinspect.station.runtime.StationRuntime`; the simulator only swaps devices.
"""
