"""The README is the front door: short, its links lead somewhere, its commands are CI's."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")


def test_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; guides belong in docs/"


def test_every_relative_link_in_the_readme_exists() -> None:
    text = README.read_text(encoding="utf-8")
    targets = [m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)]
    assert targets, "the README links into docs/"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert missing == []


def test_every_anchor_the_readme_links_to_is_a_heading_of_that_page() -> None:
    text = README.read_text(encoding="utf-8")
    for match in LINK.finditer(text):
        path, anchor = match.group(1), match.group(2)
        if anchor is None or "://" in path:
            continue
        headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(encoding="utf-8"), re.M)
        slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
        assert anchor[1:] in slugs, f"{path}{anchor}: no such heading"


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/bootstrap.sh --dev && .venv/bin/python -m pytest" in readme
    assert "bash scripts/bootstrap.sh --dev" in ci
    assert re.search(r"^\.venv/bin/python -m pytest$", ci, re.M)
