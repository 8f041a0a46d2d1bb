"""Benchmarks and research on public data sets: they use cellinspect, and are not part of it.

Run from the repository root (``python -m benchmarks.elpv ...``); the wheel ships only the
`inspect/` source root, so nothing here is installed with the station.
"""
