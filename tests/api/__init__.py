"""Tests of cellinspect.api (see the package docstrings for what is checked)."""
