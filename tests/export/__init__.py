"""Tests of cellinspect.export (see the package docstrings for what is checked)."""
