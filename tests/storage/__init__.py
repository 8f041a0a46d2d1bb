"""Tests of cellinspect.storage (see the package docstrings for what is checked)."""
