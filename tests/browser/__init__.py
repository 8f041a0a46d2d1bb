"""Tests of the review page in a real headless Chromium."""
