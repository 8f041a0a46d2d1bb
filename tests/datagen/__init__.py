"""Tests of the sample part generator."""
