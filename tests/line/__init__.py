"""Tests of the simulated production line (the `line` job)."""
